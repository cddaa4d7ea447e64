import Foundation
import LibPQ
import Testing

@testable import DangTools
@testable import OrchestratorCore

/// The whole live path against a real mosquitto and a real PostgreSQL: MQTT in, detection, alert
/// out, record written. Serialized: every orchestrator here subscribes to the same plant topics.
@Suite(.serialized, .timeLimit(.minutes(1)))
struct LivePathTests {
    static let shippedMap = try! TopicMap.load(
        file: TestServices.repositoryRoot.appendingPathComponent("topics/refinery.yaml").path)

    /// Samples of TI-101 around 358 °C, then a step to 366 °C (inside its limits: only the anomaly fires).
    static func stepSeries(start: Int64) -> [(ts: Int64, value: Double)] {
        var random = SplitMix64(seed: 42)
        return (0..<400).map { i in
            let level = i < 150 ? 358.0 : 366.0
            return (start + Int64(i) * 100, ((level + 0.2 * random.gaussian()) * 1000).rounded() / 1000)
        }
    }

    @Test func `a step on TI-101 raises exactly one alert, published with the documented fields and recorded once`() async throws {
        let database = try await TestServices.freshDatabase()
        let config = TestServices.config(prefix: "apos", databaseURL: database, topicMap: Self.shippedMap)
        let orchestrator = try Orchestrator(config: config, logger: testLogger)
        let subscriber = try TestSubscriber(filters: ["apos/alert/#"])
        let publisher = try TestPublisher()
        try await subscriber.waitUntilConnected()
        try await publisher.waitUntilConnected()
        let series = Self.stepSeries(start: 1_790_000_000_000)

        try await withRunningOrchestrator(orchestrator) {
            try await eventually("orchestrator connected") { orchestrator.connectionStatus.connected }
            try await Task.sleep(for: .milliseconds(200))
            for sample in series {
                try publisher.publish("plant/r1/cdu/cdu1/TI-101", #"{"ts":\#(sample.ts),"v":\#(sample.value),"q":"good"}"#)
            }
            try await eventually("all samples ingested") { orchestrator.pipeline.counters.samples == series.count }
            try await eventually("alert raised and cleared on MQTT") {
                subscriber.messages.filter { $0.topic.hasPrefix("apos/alert/") }.count == 2
            }
        }

        let messages = subscriber.messages.filter { $0.topic.hasPrefix("apos/alert/") }
        let raised = messages.filter { $0.json?["state"] as? String == "raised" }
        #expect(raised.count == 1)
        let alert = try #require(raised.first?.json)
        #expect(raised.first?.topic == "apos/alert/critical/r1/cdu/cdu1/TI-101")
        #expect(alert["kind"] as? String == "anomaly")
        #expect(alert["severity"] as? String == "critical")  // TI-101 is a high-criticality tag
        #expect(alert["tag"] as? String == "r1/cdu/cdu1/TI-101")
        #expect(alert["topic"] as? String == "plant/r1/cdu/cdu1/TI-101")
        #expect(alert["ts"] as? Int64 == series[150].ts)
        #expect(alert["value"] as? Double == series[150].value)
        #expect((alert["score"] as? Double ?? 0) >= 0.65)  // detection.anomaly.raise
        #expect((alert["score"] as? Double ?? 2) <= 1)
        #expect(alert["raised_at"] is Int64)
        #expect((alert["message"] as? String)?.contains("TI-101") == true)
        let alertID = try #require(alert["alert_id"] as? String)
        #expect(UUID(uuidString: alertID) != nil)
        let cleared = messages.filter { $0.json?["state"] as? String == "cleared" }
        #expect(cleared.count == 1)
        #expect(cleared.first?.json?["alert_id"] as? String == alertID)

        let connection = try PostgresConnection(conninfo: database)
        let rows = try connection.query(
            "SELECT alert_id::text, tag, topic, kind, severity, state, (extract(epoch FROM ts) * 1000)::bigint, value FROM alerts")
        #expect(rows.rows.count == 1)
        #expect(rows.rows.first == [
            alertID, "r1/cdu/cdu1/TI-101", "plant/r1/cdu/cdu1/TI-101", "anomaly", "critical", "cleared",
            String(series[150].ts), "\(series[150].value)",
        ])
        #expect(orchestrator.recordWriter.counters.written == 2)
        #expect(orchestrator.pipeline.counters.totalRejected == 0)
    }

    @Test func `malformed payloads are counted and logged, and good data after them still alerts`() async throws {
        let database = try await TestServices.freshDatabase()
        var config = TestServices.config(prefix: "it-malformed", databaseURL: database, topicMap: Self.shippedMap)
        config.topics.maxPayloadBytes = 1024
        let orchestrator = try Orchestrator(config: config, logger: testLogger)
        let subscriber = try TestSubscriber(filters: ["it-malformed/alert/#"])
        let publisher = try TestPublisher()
        try await subscriber.waitUntilConnected()
        try await publisher.waitUntilConnected()

        try await withRunningOrchestrator(orchestrator) {
            try await eventually("orchestrator connected") { orchestrator.connectionStatus.connected }
            try await Task.sleep(for: .milliseconds(200))
            let topic = "plant/r1/cdu/cdu1/TI-101"
            try publisher.publish(topic, "not a number")
            try publisher.publish(topic, bytes: [0xFF, 0x00, 0xFE, 0x7B])
            try publisher.publish(topic, #"{"v": NaN}"#)
            try publisher.publish(topic, #"{"v": 1, "q": "excellent"}"#)
            try publisher.publish(topic, String(repeating: "9", count: 5000))
            try publisher.publish(topic, "{\"x\":" + String(repeating: "[", count: 500) + "}")
            try publisher.publish("plant/r1/cdu/cdu1", #"{"values": {"A/B": 1}}"#)
            for sample in Self.stepSeries(start: 1_790_000_000_000) {
                try publisher.publish(topic, "\(sample.value)")
            }
            try await eventually("good samples ingested") { orchestrator.pipeline.counters.samples == 400 }
            try await eventually("anomaly raised") { subscriber.messages.contains { $0.json?["kind"] as? String == "anomaly" } }
        }

        let counters = orchestrator.pipeline.counters
        #expect(counters.rejected[.malformedNumber] == 2)
        #expect(counters.rejected[.nonFinite] == 1)
        #expect(counters.rejected[.badQuality] == 1)
        #expect(counters.rejected[.tooLarge] == 1)
        #expect(counters.rejected[.tooDeep] == 1)
        #expect(counters.rejected[.malformedJSON] == 1)
        #expect(counters.totalRejected == 7)
        #expect(counters.messages == 407)
        let raised = subscriber.messages.filter { $0.json?["state"] as? String == "raised" }
        // The NaN is also TI-101's data-quality problem; the step is one anomaly.
        #expect(raised.compactMap { $0.json?["kind"] as? String }.sorted() == ["anomaly", "data_quality"])
    }

    @Test func `the status topic says online while running and offline after shutdown`() async throws {
        let database = try await TestServices.freshDatabase()
        let config = TestServices.config(prefix: "it-status", databaseURL: database)
        let orchestrator = try Orchestrator(config: config, logger: testLogger)
        let subscriber = try TestSubscriber(filters: ["it-status/status"])
        try await subscriber.waitUntilConnected()

        try await withRunningOrchestrator(orchestrator) {
            try await eventually("online status") {
                subscriber.messages.last?.json?["state"] as? String == "online"
            }
        }
        try await eventually("offline status") { subscriber.messages.last?.json?["state"] as? String == "offline" }
        let online = try #require(subscriber.messages.first { $0.json?["state"] as? String == "online" }?.json)
        #expect(online["version"] as? String == DangVersion.current)
        #expect((online["started_at"] as? String).flatMap { RFC3339.epochMilliseconds($0) } != nil)

        // Retained: a late subscriber still learns the state.
        let late = try TestSubscriber(filters: ["it-status/status"])
        try await eventually("retained status") { late.messages.first?.retained == true }
        #expect(late.messages.first?.json?["state"] as? String == "offline")
    }

    @Test func `alerts raised while the database is unreachable are written when it returns`() async throws {
        // A database that does not exist yet: every connection attempt fails until it is created.
        let name = "late_\(UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: ""))"
        var components = try #require(URLComponents(string: TestServices.shared.databaseURL))
        components.path = "/\(name)"
        let config = TestServices.config(prefix: "it-late-db", databaseURL: components.string!, topicMap: Self.shippedMap)
        let orchestrator = try Orchestrator(config: config, logger: testLogger)
        let publisher = try TestPublisher()
        try await publisher.waitUntilConnected()

        try await withRunningOrchestrator(orchestrator) {
            try await eventually("orchestrator connected") { orchestrator.connectionStatus.connected }
            try await Task.sleep(for: .milliseconds(200))
            try publisher.publish("plant/r1/fcc/fcc1/TI-201", #"{"v": 528}"#)
            try publisher.publish("plant/r1/fcc/fcc1/TI-201", #"{"v": 556}"#)  // above HI and HIHI
            try await eventually("alerts raised") { orchestrator.pipeline.counters.alertsRaised == 2 }
            try await Task.sleep(for: .milliseconds(500))
            #expect(orchestrator.recordWriter.counters.written == 0)
            try PostgresConnection(conninfo: TestServices.shared.databaseURL).execute(script: "CREATE DATABASE \(name)")
            try await eventually("alerts written", timeout: .seconds(20)) { orchestrator.recordWriter.counters.written == 2 }
        }
        let rows = try PostgresConnection(conninfo: components.string!).query(
            "SELECT severity, state FROM alerts ORDER BY severity")
        #expect(rows.rows == [["critical", "raised"], ["warning", "raised"]])
    }
}
