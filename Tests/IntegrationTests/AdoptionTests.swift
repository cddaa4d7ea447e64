import Foundation
import LibPQ
import Testing

@testable import OrchestratorCore

/// A run stopped with an alarm standing, and the next run on the same database: it takes the
/// episode over while the breach goes on (same alert id, nothing raised twice) and closes one that
/// is no longer true — never leaves it `raised` (docs/detection.md, "After a restart").
@Suite(.serialized, .timeLimit(.minutes(2)))
struct AdoptionTests {
    static let prefix = "it-adopt"
    static let start: Int64 = 1_790_000_000_000

    func sample(_ publisher: TestPublisher, second: Int64, _ value: Double) throws {
        try publisher.publish("\(Self.prefix)-in/\(DecisionLoopTests.furnace)", #"{"ts":\#(Self.start + second * 1000),"v":\#(value)}"#)
    }

    func raisedLimitEpisodes(_ database: String) throws -> [String] {
        try PostgresConnection(conninfo: database).query(
            "SELECT alert_id::text FROM alerts WHERE tag = $1 AND kind = 'limit' AND state = 'raised' ORDER BY raised_at",
            [DecisionLoopTests.furnace]
        ).rows.compactMap { $0.first ?? nil }
    }

    /// One run: connected, `body`, stopped (its open episodes stay `raised` in the record).
    func run(_ database: String, _ body: @Sendable (Orchestrator) async throws -> Void) async throws {
        let orchestrator = try Orchestrator(config: DecisionLoopTests.config(prefix: Self.prefix, database: database), logger: testLogger)
        try await withRunningOrchestrator(orchestrator) {
            try await eventually("connected") { orchestrator.connectionStatus.connected }
            try await body(orchestrator)
        }
    }

    @Test func `an alarm left standing is adopted while the breach goes on, and one that has ended is closed`() async throws {
        let database = try await TestServices.freshDatabase()
        let publisher = try TestPublisher()
        let alerts = try TestSubscriber(filters: ["\(Self.prefix)/alert/#"])
        try await publisher.waitUntilConnected()
        try await alerts.waitUntilConnected()
        @Sendable func messages(_ id: String, _ state: String) -> Int {
            alerts.messages.filter { ($0.json?["alert_id"] as? String) == id && ($0.json?["state"] as? String) == state }.count
        }

        // Run 1: TI-101 above HI (372), and stopped with the alarm standing.
        try await self.run(database) { _ in
            for second in 0..<20 { try self.sample(publisher, second: Int64(second), 358) }
            try self.sample(publisher, second: 20, 375)
            try await eventually("raised in the record") { (try? self.raisedLimitEpisodes(database))?.count == 1 }
        }
        let left = try #require(try self.raisedLimitEpisodes(database).first)
        #expect(messages(left, "raised") == 1)

        // Run 2: the breach goes on. The episode is taken over — no second raise, the same id — and
        // it clears under that id when the temperature comes back.
        try await self.run(database) { orchestrator in
            try await eventually("the previous run's episodes read") { orchestrator.pipeline.adoption.waiting + orchestrator.pipeline.adoption.adopted > 0 }
            try self.sample(publisher, second: 21, 376)
            try await eventually("adopted") { orchestrator.pipeline.adoption.adopted == 1 }
            try await Task.sleep(for: .milliseconds(300))
            #expect(try self.raisedLimitEpisodes(database) == [left])
            #expect(messages(left, "raised") == 1)
            #expect(!alerts.messages.contains { ($0.json?["state"] as? String) == "raised" && ($0.json?["alert_id"] as? String) != left && ($0.json?["kind"] as? String) == "limit" })
            try self.sample(publisher, second: 22, 360)
            try await eventually("cleared under the adopted id") { messages(left, "cleared") == 1 }
            try await eventually("cleared in the record") { (try? self.raisedLimitEpisodes(database))?.isEmpty == true }
            // A new breach, left standing at the stop.
            try self.sample(publisher, second: 23, 375)
            try await eventually("raised again") { (try? self.raisedLimitEpisodes(database))?.count == 1 }
        }
        let second = try #require(try self.raisedLimitEpisodes(database).first)
        #expect(second != left)

        // Run 3: TI-101 is back within its limits: the episode is closed on its first sample,
        // recorded and published, with a message that says why.
        try await self.run(database) { orchestrator in
            try await eventually("the previous run's episodes read") { orchestrator.pipeline.adoption.waiting > 0 }
            try self.sample(publisher, second: 24, 359)
            try await eventually("closed and published") { messages(second, "cleared") == 1 }
            try await eventually("closed in the record") { (try? self.raisedLimitEpisodes(database))?.isEmpty == true }
            let clear = try #require(alerts.messages.first { ($0.json?["alert_id"] as? String) == second && ($0.json?["state"] as? String) == "cleared" })
            #expect((clear.json?["message"] as? String)?.contains("left open by the previous run is no longer true") == true)
            #expect(orchestrator.pipeline.adoption.closed >= 1)
        }
        // Nothing was left raised by the test's runs but what run 3 itself could have raised.
        #expect(try self.raisedLimitEpisodes(database).isEmpty)
    }
}
