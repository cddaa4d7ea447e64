import Foundation
import Synchronization
import Testing

@testable import OrchestratorCore

/// What a standby hears of the active on MQTT (docs/availability.md, "The takeover").
@Suite struct StandbyLedgerTests {
    final class Acting: Sendable {
        let value = Atomic<Bool>(false)
    }

    static func alert(_ id: UUID, _ state: AlertEvent.State, tag: String = "r1/cdu/cdu1/TI-105") -> [UInt8] {
        AlertEvent(
            alertID: id, state: state, severity: .warning, kind: .limit, tag: tag, topic: "plant/\(tag)", timestamp: 1_790_000_001_000,
            raisedAt: 1_790_000_000_000, clearedAt: state == .cleared ? 1_790_000_001_000 : nil, value: 371, score: 1,
            message: "a \"quoted\" <b>message</b>"
        ).jsonPayload()
    }

    @Test func `the active's raises are kept until cleared; its clears are kept; nothing while this instance acts`() {
        let acting = Acting()
        let ledger = StandbyLedger(acting: { acting.value.load(ordering: .relaxed) })
        let (a, b, c) = (UUID(), UUID(), UUID())
        ledger.hear(Self.alert(a, .raised))
        ledger.hear(Self.alert(b, .raised, tag: "r1/fcc/fcc1/TI-201"))
        ledger.hear(Self.alert(b, .cleared, tag: "r1/fcc/fcc1/TI-201"))
        ledger.hear(Array("not json".utf8))
        ledger.hear(Array(#"{"alert_id": "nope", "state": "raised"}"#.utf8))
        acting.value.store(true, ordering: .relaxed)
        ledger.hear(Self.alert(c, .raised))
        let heard = ledger.takeHeard()
        #expect(heard.open.map(\.alertID) == [a])
        #expect(heard.open.first?.message == "a \"quoted\" <b>message</b>")
        #expect(Set(heard.clears.keys) == [b])
        #expect(ledger.takeHeard().open.isEmpty)  // taken once
    }

    @Test func `sharded: what is heard is kept while this instance acts, and taken shard by shard`() {
        let ledger = StandbyLedger(acting: { true }, hearsWhileActing: true)
        let map = ShardMap(count: 5, topicMap: ShardTests.shipped)
        let (cdu, fcc, cleared) = (UUID(), UUID(), UUID())
        ledger.hear(Self.alert(cdu, .raised, tag: "r1/cdu/cdu1/TI-105"))  // shard 1
        ledger.hear(Self.alert(fcc, .raised, tag: "r1/fcc/fcc1/TI-201"))  // shard 0
        ledger.hear(Self.alert(cleared, .cleared, tag: "r1/cdu/cdu1/TI-102"))
        let first = ledger.takeHeard(ofShard: 1, in: map)
        #expect(first.open.map(\.alertID) == [cdu])
        #expect(Set(first.clears.keys) == [cleared])
        #expect(ledger.takeHeard(ofShard: 1, in: map).open.isEmpty)
        // The other shard's are still there, for whoever takes it.
        let other = ledger.takeHeard(ofShard: 0, in: map)
        #expect(other.open.map(\.alertID) == [fcc] && other.clears.isEmpty)
    }

    @Test func `an invocation heard becomes the pending row it stands for; junk and hostile values are refused`() throws {
        let ledger = StandbyLedger(acting: { false })
        let (id, decision) = (UUID(), UUID())
        let message = """
            {"invocation_id": "\(id.uuidString.lowercased())", "decision_id": "\(decision.uuidString.lowercased())", "module": "forecasting",
             "ts": 1790000000123, "deadline_ms": 300000, "attempt": 2, "params": {"scope": "r1/cdu/cdu1/TI-105", "horizon": 12},
             "trigger": {"name": "equipment-issue", "kind": "equipment\\"x"}, "reply_to": "apos/result/forecasting"}
            """
        ledger.hearInvocation(Array(message.utf8))
        ledger.hearInvocation(Array(#"{"invocation_id": "x", "decision_id": "y"}"#.utf8))
        // A time that is no Int64: refused, not taken as 0 (the invocation would be re-sent at once).
        ledger.hearInvocation(Array(message.replacingOccurrences(of: "1790000000123", with: "1e300").replacingOccurrences(of: id.uuidString.lowercased(), with: UUID().uuidString).utf8))
        let decisionRecord = DecisionRecord(
            decisionID: decision, ts: 1_790_000_000_100, module: "forecasting", action: "invoke", source: "rules", trigger: "{}", reasons: "[]",
            confidence: 0.8, latencyMicroseconds: 12)
        ledger.hearDecision(Record.decision(decisionRecord).payload())
        let heard = ledger.takeHeard()
        let invocation = try #require(heard.invocations.first)
        #expect(heard.invocations.count == 1)
        #expect(invocation.invocationID == id && invocation.decisionID == decision && invocation.module == "forecasting")
        #expect(invocation.publishedAt == 1_790_000_000_123 && invocation.attempts == 2 && invocation.status == "pending")
        #expect(invocation.scopeKey == "r1/cdu/cdu1/TI-105" && invocation.triggerKind == "equipment\"x")
        #expect(JSONValue(parsing: Array(invocation.params.utf8))?["horizon"]?.number == 12)
        #expect(heard.decisions[decision] == decisionRecord)
    }

    @Test func `a module's result is kept as it came, by invocation id; junk is not kept`() {
        let ledger = StandbyLedger(acting: { false })
        let id = UUID()
        let body = Array(#"{"invocation_id": "\#(id.uuidString.lowercased())", "status": "ok", "output": {}}"#.utf8)
        ledger.hearResult(topic: "apos/result/forecasting", payload: body)
        ledger.hearResult(topic: "apos/result/forecasting", payload: Array(#"{"status": "ok"}"#.utf8))
        ledger.hearResult(topic: "apos/result/forecasting", payload: Array("<html>".utf8))
        let results = ledger.takeHeard().results
        #expect(results.count == 1)
        #expect(results.first?.invocation == id && results.first?.topic == "apos/result/forecasting" && results.first?.payload == body)
    }

    @Test func `what is heard is bounded`() {
        let ledger = StandbyLedger(acting: { false })
        for _ in 0..<(StandbyLedger.maxClears + 10) { ledger.hear(Self.alert(UUID(), .cleared)) }
        #expect(ledger.takeHeard().clears.count == StandbyLedger.maxClears)
    }
}
