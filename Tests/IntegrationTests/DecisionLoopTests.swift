import Foundation
import LibPQ
import Testing

@testable import DangTools
@testable import OrchestratorCore

/// The decide-and-act loop against a real mosquitto and PostgreSQL: an alert fires a trigger, the
/// invocation goes out on MQTT (or to a local command), the reference worker answers, and the
/// record holds the decision, the invocation and what was learned.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct DecisionLoopTests {
    static let furnace = "r1/cdu/cdu1/TI-101"

    /// The shipped tags on input topics private to each test (`{prefix}-in/…`): the other suites
    /// publish on `plant/…` and on their own roots at the same time, on the same broker.
    static func map(prefix: String) -> TopicMap {
        var map = LivePathTests.shippedMap
        map.sensorPattern = TopicPattern("\(prefix)-in/{site}/{area}/{unit}/{tag}")!
        map.marketPattern = TopicPattern("\(prefix)-market/{instrument...}")!
        return map
    }

    static func config(prefix: String, database: String, map: TopicMap? = nil) -> OrchestratorConfig {
        var config = TestServices.config(prefix: prefix, databaseURL: database, topicMap: map ?? Self.map(prefix: prefix))
        var rule = TriggerRule(name: "equipment-issue", kind: .equipment, module: .forecasting)
        rule.alertKinds = [.limit]
        rule.minSeverity = .warning
        config.triggers = [rule]
        config.modules[.forecasting]?.minHistory = 10
        config.modules[.forecasting]?.timeout = .seconds(2)
        config.decisionEngine.retryBackoff = .milliseconds(200)
        config.decisionEngine.tick = .milliseconds(50)
        return config
    }

    /// 30 normal samples of TI-101, then one above its HI limit (372 °C).
    static func breach(_ publisher: TestPublisher, prefix: String) throws {
        let start: Int64 = 1_790_000_000_000
        for i in 0..<30 {
            try publisher.publish("\(prefix)-in/\(furnace)", #"{"ts":\#(start + Int64(i) * 1000),"v":\#(358 + Double(i % 3) * 0.5)}"#)
        }
        try publisher.publish("\(prefix)-in/\(furnace)", #"{"ts":\#(start + 30_000),"v":375}"#)
    }

    static func rows(_ database: String, _ sql: String) throws -> [[String?]] {
        try PostgresConnection(conninfo: database).query(sql).rows
    }

    @Test func `a limit breach reaches the forecasting worker over MQTT and its answer is recorded and learned`() async throws {
        let database = try await TestServices.freshDatabase()
        let config = Self.config(prefix: "it-loop", database: database)
        let orchestrator = try Orchestrator(config: config, logger: testLogger)
        let publisher = try TestPublisher()
        let commands = try TestSubscriber(filters: ["it-loop/cmd/#", "it-loop/decision"])
        try await publisher.waitUntilConnected()
        try await commands.waitUntilConnected()
        let runner = WorkerRunner(config: config, worker: .forecasting, logger: testLogger)
        let worker = Task { try await runner.run() }
        defer { worker.cancel() }

        try await withRunningOrchestrator(orchestrator) {
            try await eventually("orchestrator connected") { orchestrator.connectionStatus.connected }
            try await Task.sleep(for: .milliseconds(300))
            try Self.breach(publisher, prefix: "it-loop")
            try await eventually("result received") { orchestrator.coordinator.counters.results == 1 }
            try await eventually("records written") {
                (try? Self.rows(database, "SELECT status FROM invocations").first?.first) == "ok"
            }
        }
        let message = try #require(commands.messages.first { $0.topic == "it-loop/cmd/forecasting" })
        let invocation = try #require(message.json)
        #expect(invocation["reply_to"] as? String == "it-loop/result/forecasting")
        // The same as an MQTT v5 request: response topic and correlation data (the invocation id).
        #expect(message.responseTopic == "it-loop/result/forecasting")
        #expect(message.correlationData.map { String(decoding: $0, as: UTF8.self) } == invocation["invocation_id"] as? String)
        #expect(invocation["deadline_ms"] as? Int == 2000)
        let decision = try Self.rows(database, "SELECT action, source, module, confidence IS NOT NULL, latency_us >= 0 FROM decisions")
        #expect(decision == [["invoke", "rules", "forecasting", "t", "t"]])
        let stored = try Self.rows(
            database, "SELECT status, attempts, trigger_kind, scope, result->'output'->'forecasts' ? '\(Self.furnace)' FROM invocations")
        #expect(stored == [["ok", "1", "equipment", Self.furnace, "t"]])
        #expect(try Self.rows(database, "SELECT trigger_kind, module, invocations, successes FROM outcomes") == [["equipment", "forecasting", "1", "1"]])
        #expect(commands.messages.filter { $0.topic == "it-loop/decision" }.count == 1)
    }

    @Test func `a command module gets the invocation on stdin; one that hangs is killed, retried and recorded as failed`() async throws {
        let database = try await TestServices.freshDatabase()
        var config = Self.config(prefix: "it-command", database: database)
        let answer = """
            import json, sys
            invocation = json.load(sys.stdin)
            values = invocation["params"]["tags"]["\(Self.furnace)"]["v"]
            print(json.dumps({"status": "ok", "output": {"last": values[-1], "n": len(values)}, "metrics": {"benefit": 0.5}}))
            """
        config.modules[.forecasting]?.transport = .command
        config.modules[.forecasting]?.command = ["python3", "-c", answer]
        // A first python3 on a fresh, loaded CI machine took over 2 s to start: this part is about
        // the invocation on stdin and the answer, not the timeout (the hanging command below is).
        config.modules[.forecasting]?.timeout = .seconds(20)
        let orchestrator = try Orchestrator(config: config, logger: testLogger)
        let publisher = try TestPublisher()
        try await publisher.waitUntilConnected()
        try await withRunningOrchestrator(orchestrator) {
            try await eventually("orchestrator connected") { orchestrator.connectionStatus.connected }
            try await Task.sleep(for: .milliseconds(300))
            try Self.breach(publisher, prefix: "it-command")
            try await eventually("recorded") { (try? Self.rows(database, "SELECT status FROM invocations").first?.first) == "ok" }
        }
        let result = try Self.rows(database, "SELECT result->'output'->>'last', result->'output'->>'n', attempts FROM invocations")
        #expect(result == [["375", "31", "1"]])

        // A command that never answers: stopped at the timeout, tried 1 + max_retries times.
        let hanging = try await TestServices.freshDatabase()
        var slow = Self.config(prefix: "it-command-slow", database: hanging)
        slow.modules[.forecasting]?.transport = .command
        slow.modules[.forecasting]?.command = ["python3", "-c", "import time; time.sleep(60)"]
        slow.modules[.forecasting]?.timeout = .milliseconds(500)
        slow.decisionEngine.maxRetries = 1
        let second = try Orchestrator(config: slow, logger: testLogger)
        try await withRunningOrchestrator(second) {
            try await eventually("orchestrator connected") { second.connectionStatus.connected }
            try await Task.sleep(for: .milliseconds(300))
            try Self.breach(publisher, prefix: "it-command-slow")
            try await eventually("given up", timeout: .seconds(20)) {
                (try? Self.rows(hanging, "SELECT status FROM invocations").first?.first) == "error"
            }
        }
        let failed = try Self.rows(hanging, "SELECT attempts, result->>'reason' LIKE '%stopped%' FROM invocations")
        #expect(failed == [["2", "t"]])
        #expect(try Self.rows(hanging, "SELECT invocations, successes FROM outcomes") == [["1", "0"]])
    }

    @Test func `an invocation pending at shutdown is re-armed from the record by the next run and completed`() async throws {
        let database = try await TestServices.freshDatabase()
        var config = Self.config(prefix: "it-rearm", database: database)
        config.modules[.forecasting]?.timeout = .seconds(1)
        config.decisionEngine.maxRetries = 5
        let publisher = try TestPublisher()
        try await publisher.waitUntilConnected()

        let first = try Orchestrator(config: config, logger: testLogger)
        try await withRunningOrchestrator(first) {
            try await eventually("orchestrator connected") { first.connectionStatus.connected }
            try await Task.sleep(for: .milliseconds(300))
            try Self.breach(publisher, prefix: "it-rearm")
            try await eventually("invocation recorded") { (try? Self.rows(database, "SELECT status FROM invocations").first?.first) == "pending" }
        }
        #expect(first.coordinator.activeInvocations.count == 1)

        let runner = WorkerRunner(config: config, worker: .forecasting, logger: testLogger)
        let worker = Task { try await runner.run() }
        defer { worker.cancel() }
        try await Task.sleep(for: .milliseconds(300))
        let second = try Orchestrator(config: config, logger: testLogger)
        try await withRunningOrchestrator(second) {
            try await eventually("re-armed and answered", timeout: .seconds(20)) {
                (try? Self.rows(database, "SELECT status FROM invocations").first?.first) == "ok"
            }
        }
        let rows = try Self.rows(database, "SELECT count(*), min(attempts::int) >= 2 FROM invocations")
        #expect(rows == [["1", "t"]])
        #expect(second.coordinator.counters.invoked == 0)  // nothing new decided: the old one was finished
    }
}
