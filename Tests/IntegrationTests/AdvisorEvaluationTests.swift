import Foundation
import LibPQ
import Testing

@testable import OrchestratorCore

/// `dang eval-advisor`'s test set and scoring, against a real database and the fake provider.
@Suite(.timeLimit(.minutes(1)))
struct AdvisorEvaluationTests {
    static let fake = try! FakeProvider()

    /// 30 forecasting decisions the rules invoked: severities critical, warning, info in turn; the
    /// critical ones ended ok, the warning ones in error, the info ones ok.
    func record(on connection: PostgresConnection) throws -> (invoked: [UUID], skipped: UUID) {
        var records: [Record] = []
        var ids: [UUID] = []
        for index in 0..<30 {
            let severity = ["critical", "warning", "info"][index % 3]
            let decision = DecisionRecord(
                decisionID: UUID(), ts: 1_790_000_000_000 + Int64(index) * 1000, module: "forecasting", action: "invoke", source: "rules",
                trigger: #"{"name":"equipment-issue","kind":"equipment","alert_kind":"limit","severity":"\#(severity)","tag":"r1/x/T","value":80,"score":1}"#,
                reasons: #"[{"step":"priority","verdict":"pass","detail":"priority 3"}]"#, confidence: 0.6, latencyMicroseconds: 10)
            ids.append(decision.decisionID)
            records.append(.decision(decision))
            let status = severity == "warning" ? "error" : "ok"
            records.append(
                .invocation(
                    InvocationRecord(
                        invocationID: UUID(), decisionID: decision.decisionID, module: "forecasting",
                        params: #"{"scope":"r1/x/T","data":"tag","horizon":12,"tags":{"r1/x/T":{"limits":{"hi":75},"t":[1,2,3],"v":[70,74,80]}}}"#,
                        publishedAt: decision.ts, completedAt: decision.ts + 1000, status: status, attempts: 1,
                        result: #"{"status":"\#(status)","metrics":{"benefit":1}}"#, triggerKind: "equipment", scopeKey: "r1/x/T")))
        }
        // A skipped decision and a pending invocation are not questions with an outcome.
        let skipped = DecisionRecord(
            decisionID: UUID(), ts: 1_790_000_100_000, module: "forecasting", action: "skip", source: "rules", trigger: "{}", reasons: "[]",
            confidence: 1, latencyMicroseconds: 1)
        records.append(.decision(skipped))
        try Record.write(records, on: connection)
        return (ids, skipped.decisionID)
    }

    @Test func `recorded decisions are rebuilt as the advisor's questions and its answers scored`() async throws {
        let connection = try await PostgresConnection(conninfo: TestServices.freshDatabase())
        try Migrations.apply(on: connection)
        _ = try self.record(on: connection)
        let cases = try AdvisorTestSet.load(split: .all, heldOutShare: 0.1, limit: 1000, on: connection)
        #expect(cases.count == 30)
        let first = try #require(cases.first)
        #expect(first.question.decision.module == .forecasting)
        #expect(first.question.decision.trigger.alert?.severity == .critical)
        #expect(first.question.decision.priority == 3)
        #expect(first.question.tags.count == 1 && first.question.tags[0].last == 80 && first.question.tags[0].hi == 75)
        #expect(first.question.bounds["horizon"] == 1...48)
        // The prompt carries no tag name.
        #expect(!Advisor.prompt(first.question)[0].content.contains("r1/x/T"))

        // As the command sets it up: as many calls in flight as questions asked at once.
        let advisor = Advisor(client: Self.fake.client("judge") { $0.maxConcurrent = 3 })
        let asked = Counter()
        let report = await AdvisorEvaluation.run(cases, advisor: advisor, concurrency: 3) { _ in asked.increment() }
        #expect(asked.value == 30)
        #expect(report.asked == 30)
        #expect(report.valid == 20 && report.invalid == 10)  // the info ones answer outside the contract
        #expect(report.agreed == 10 && report.disagreed == 10)
        #expect(report.validity == 2.0 / 3.0)
        #expect(report.agreement == 0.5)
        #expect(report.matchedOutcome == 20)  // invoke → ok, skip → error
        #expect(report.latency(0.5) >= 0 && report.latency(0.99) >= report.latency(0.5))
        let json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(report)) as? [String: Any]
        #expect(json?["outcome_match"] as? Double == 1)
        #expect(json?["latency_p99_ms"] != nil)
    }

    @Test func `the held-out decisions are never exported for training or validation, and are the default test set`() async throws {
        let connection = try await PostgresConnection(conninfo: TestServices.freshDatabase())
        try Migrations.apply(on: connection)
        let (ids, skipped) = try self.record(on: connection)
        let heldOut = Set(ids.filter { FinetuneExport.isHeldOut($0, share: 0.3) })
        #expect(!heldOut.isEmpty && heldOut.count < ids.count)
        let skippedHeldOut = FinetuneExport.isHeldOut(skipped, share: 0.3)
        var options = FinetuneExport.Options()
        options.heldOutShare = 0.3
        options.includeFailed = true
        var train: [UInt8] = []
        var validation: [UInt8] = []
        let summary = try FinetuneExport.export(options, on: connection, train: &train, validation: &validation)
        #expect(summary.heldOut == heldOut.count + (skippedHeldOut ? 1 : 0))
        #expect(summary.decisions == ids.count + 1 - summary.heldOut)
        let cases = try AdvisorTestSet.load(split: .heldOut, heldOutShare: 0.3, limit: 1000, on: connection)
        #expect(Set(cases.map(\.question.decision.id)) == heldOut)
    }
}

/// A thread-safe count for callbacks.
final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    var value: Int { self.lock.withLock { self.count } }
    func increment() { self.lock.withLock { self.count += 1 } }
}
