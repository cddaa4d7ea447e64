import Foundation
import LibPQ
import OrchestratorCore
import Testing

/// Active and standby (`ha.enabled`; docs/availability.md): two instances on one broker and one
/// database, in one process (``Orchestrator/haltAsIfKilled()`` stands for SIGKILL).
@Suite(.serialized) struct AvailabilityTests {
    // (4 s: on a loaded test run, the active must not miss its own deadline, lease − lease/6.)
    static let lease: Duration = .seconds(4)

    static func config(_ instance: String, prefix: String, database: String) -> OrchestratorConfig {
        var config = DecisionLoopTests.config(prefix: prefix, database: database)
        config.availability.enabled = true
        config.availability.instanceID = instance
        config.availability.lease = Self.lease
        config.mqtt.clientID = "dang-it-\(prefix)-\(instance)"
        // Long enough that the active does not retry before it is killed, even on a loaded machine.
        config.modules[.forecasting]?.timeout = .seconds(6)
        return config
    }

    static func messages(_ subscriber: TestSubscriber, _ filter: (String, [String: any Sendable]) -> Bool) -> [[String: any Sendable]] {
        subscriber.messages.compactMap { message in message.json.flatMap { filter(message.topic, $0) ? $0 : nil } }
    }

    @Test func `the standby stays silent, then takes over a killed active within 2 × the lease: same alert ids, the pending invocation re-armed once`() async throws {
        let database = try await TestServices.freshDatabase()
        let a = try Orchestrator(config: Self.config("a", prefix: "it-ha", database: database), logger: testLogger)
        let b = try Orchestrator(config: Self.config("b", prefix: "it-ha", database: database), logger: testLogger)
        let watch = try TestSubscriber(filters: ["it-ha/alert/#", "it-ha/cmd/#", "it-ha/status/#", "it-ha/status"])
        let publisher = try TestPublisher()
        try await watch.waitUntilConnected()
        try await publisher.waitUntilConnected()
        try await withRunningOrchestrator(a) {
            try await eventually("a connected and active") { a.connectionStatus.connected && a.role == "active" }
            try await withRunningOrchestrator(b) {
                try await eventually("b connected") { b.connectionStatus.connected }
                try await Task.sleep(for: .milliseconds(800))
                #expect(b.role == "standby" && b.statusSnapshot().notReadyReasons.contains { $0.contains("standby") })
                #expect(a.statusSnapshot().notReadyReasons.isEmpty || a.statusSnapshot().notReadyReasons.allSatisfy { !$0.contains("standby") })

                // A breach: the active alerts and invokes once; the standby detects it too but says nothing.
                try DecisionLoopTests.breach(publisher, prefix: "it-ha")
                try await eventually("the alert and the invocation out") {
                    !Self.messages(watch) { topic, json in topic.hasPrefix("it-ha/cmd/") }.isEmpty
                        && !Self.messages(watch) { topic, json in topic.hasPrefix("it-ha/alert/") && json["state"] as? String == "raised" }.isEmpty
                }
                try await eventually("the standby detected it") { b.pipeline.counters.alertsRaised >= 1 }
                try await Task.sleep(for: .milliseconds(300))
                let raises = Self.messages(watch) { topic, json in topic.hasPrefix("it-ha/alert/") && json["state"] as? String == "raised" && json["kind"] as? String == "limit" }
                #expect(raises.count == 1, "\(raises)")
                let alertID = try #require(raises.first?["alert_id"] as? String)
                let invocationID = try #require(Self.messages(watch) { topic, _ in topic.hasPrefix("it-ha/cmd/") }.first?["invocation_id"] as? String)
                try await eventually("recorded by the active") {
                    (try? DecisionLoopTests.rows(database, "SELECT count(*) FROM alerts WHERE alert_id = '\(alertID)'").first?.first) == "1"
                }
                #expect(try DecisionLoopTests.rows(database, "SELECT instance FROM decisions") == [["a"]])

                // The active dies, its invocation unanswered.
                a.haltAsIfKilled()

                @Sendable func attempts() -> [Int] {
                    Self.messages(watch) { topic, json in topic.hasPrefix("it-ha/cmd/") && json["invocation_id"] as? String == invocationID }
                        .compactMap { $0["attempt"] as? Int }
                }
                let before = attempts()
                #expect(Self.messages(watch) { topic, _ in topic.hasPrefix("it-ha/cmd/") }.count == before.count, "one invocation only")
                // (The bound, 2 × the lease, is measured with real processes by scripts/failover-test.sh:
                // here the instances share the test run's threads with every other suite.)
                try await eventually("the standby takes over", timeout: Self.lease * 5) { b.role == "active" }
                try await eventually("it announces itself") {
                    !Self.messages(watch) { topic, json in topic == "it-ha/status" && json["instance"] as? String == "b" && json["role"] as? String == "active" }.isEmpty
                }
                // The pending invocation: re-armed by the new active, delivered again under the same id
                // with the next attempt — no attempt published twice.
                try await eventually("the invocation re-armed", timeout: .seconds(20)) { attempts().count > before.count }
                let all = attempts()
                #expect(Set(all).count == all.count && all.max()! > before.max()!, "attempts \(all)")
                // The episode is the same: back to normal, the new active clears the active's alert id,
                // and nothing was raised twice.
                let start: Int64 = 1_790_000_000_000
                for i in 0..<5 {
                    try publisher.publish("it-ha-in/\(DecisionLoopTests.furnace)", #"{"ts":\#(start + 40_000 + Int64(i) * 1000),"v":358}"#)
                }
                try await eventually("cleared by the new active") {
                    !Self.messages(watch) { topic, json in topic.hasPrefix("it-ha/alert/") && json["state"] as? String == "cleared" && json["alert_id"] as? String == alertID }.isEmpty
                }
                #expect(Self.messages(watch) { topic, json in topic.hasPrefix("it-ha/alert/") && json["state"] as? String == "raised" && json["kind"] as? String == "limit" }.count == 1)
                try await eventually("the record has one episode, closed") {
                    (try? DecisionLoopTests.rows(database, "SELECT count(*), min(state) FROM alerts WHERE kind = 'limit'").first) == ["1", "cleared"]
                }
                #expect(try DecisionLoopTests.rows(database, "SELECT count(*) FROM decisions") == [["1"]])
                #expect(b.statusSnapshot().notReadyReasons.isEmpty)
            }
        }
    }

    @Test func `a former active that lost its lease stops acting, and its stale epoch cannot write`() async throws {
        let database = try await TestServices.freshDatabase()
        let a = try Orchestrator(config: Self.config("a", prefix: "it-ha-fence", database: database), logger: testLogger)
        let watch = try TestSubscriber(filters: ["it-ha-fence/alert/#"])
        let publisher = try TestPublisher()
        try await watch.waitUntilConnected()
        try await publisher.waitUntilConnected()
        try await withRunningOrchestrator(a) {
            try await eventually("active") { a.connectionStatus.connected && a.role == "active" }
            let epoch = try #require(a.statusSnapshot().leaseEpoch)
            // Another instance took the lease (as after a partition: the active could not see it).
            _ = try PostgresConnection(conninfo: database).query(
                "UPDATE leases SET holder = 'intruder', epoch = epoch + 1, expires_at = now() + interval '1 hour' WHERE name = 'active'")
            // (At its next renewal; by its own deadline within the lease at the latest — the test
            // allows twice that for a loaded machine's scheduling.)
            try await eventually("it steps down", timeout: Self.lease * 2) { a.role == "standby" }
            try DecisionLoopTests.breach(publisher, prefix: "it-ha-fence")
            try await eventually("the breach processed") { a.pipeline.counters.alertsRaised >= 1 }
            try await Task.sleep(for: .milliseconds(500))
            #expect(watch.messages.isEmpty, "\(watch.messages.count) alerts published by a standby")
            #expect(try DecisionLoopTests.rows(database, "SELECT count(*) FROM alerts") == [["0"]])
            // The fence itself: a batch written under the old epoch is refused by the database.
            let connection = try PostgresConnection(conninfo: database)
            let writer = Record.Writer(instance: "a", lease: .init(holder: "a", epoch: epoch))
            #expect(throws: Record.Fenced.self) { try Record.write([], on: connection, as: writer) }
        }
    }
}
