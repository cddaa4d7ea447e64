import Foundation
import LibPQ
import Mosquitto
import Synchronization
import Testing

@testable import OrchestratorCore

/// The plant's broker misbehaving, with real mosquitto processes of the tests' own.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct FaultTests {
    /// A QoS 1 publisher with a persistent session that waits out broker restarts.
    final class StreamPublisher: Sendable {
        let client: MosquittoClient
        let state = ClientState()
        var isConnected: Bool { self.state.connected.load(ordering: .relaxed) }

        init(port: Int) throws {
            var options = MQTTConnectionOptions(host: "127.0.0.1", port: port, clientID: "fault-pub-\(UUID().uuidString.prefix(8))")
            options.cleanStart = false
            options.sessionExpiry = 3600
            options.reconnectDelayMin = 1
            options.reconnectDelayMax = 1
            options.maxInflight = 20
            let state = self.state
            self.client = try MosquittoClient(
                options: options, onMessage: { _ in },
                onEvent: { event in
                    switch event {
                    case .connected: state.connected.store(true, ordering: .relaxed)
                    case .disconnected, .connectionFailed: state.connected.store(false, ordering: .relaxed)
                    default: break
                    }
                })
            try self.client.start()
        }

        /// Publishes, waiting while the broker is away (libmosquitto keeps QoS 1 messages it has
        /// not had acknowledged and sends them again on reconnect).
        func publish(_ topic: String, _ payload: String) async throws {
            while true {
                if self.isConnected,
                    (try? self.client.publish(topic: topic, payload: Array(payload.utf8), qos: 1, retain: false)) != nil
                {
                    return
                }
                try await Task.sleep(for: .milliseconds(50))
            }
        }

        deinit { self.client.disconnect() }
    }

    /// The broker dies without warning in the middle of a paced QoS 1 stream, at a moment when
    /// it has acknowledged and saved what it forwarded (mosquitto persists by snapshot once per
    /// loop: what it acknowledged in the very iteration it is killed in is gone whatever the
    /// client does — docs/integration.md). The publisher keeps publishing through the outage.
    @Test func `a broker killed with SIGKILL mid-stream and restarted: every QoS 1 sample processed exactly once, the alert delivered`() async throws {
        let broker = try PrivateBroker(persistent: true)
        try broker.start()
        let database = try await TestServices.freshDatabase()
        var config = TestServices.config(prefix: "it-crash", databaseURL: database, topicMap: LivePathTests.shippedMap)
        config.mqtt.endpoint = MQTTEndpoint(host: "127.0.0.1", port: broker.port, tls: false)
        config.mqtt.clientID = "dang-it-crash"  // stable: the session is found again
        config.mqtt.cleanStart = false
        config.mqtt.sessionExpiry = .seconds(3600)
        config.mqtt.reconnectDelayMax = .seconds(1)
        config.detection.historyDepth = 1000
        let orchestrator = try Orchestrator(config: config, logger: testLogger)
        try await eventually("broker up") { (try? MQTTTestPublisher(port: broker.port)) != nil }

        let count = 600
        let tag = "r1/fcc/fcc1/TI-201"
        let start: Int64 = 1_790_000_000_000
        try await withRunningOrchestrator(orchestrator) {
            try await eventually("orchestrator connected", timeout: .seconds(15)) { orchestrator.connectionStatus.connected }
            try await Task.sleep(for: .milliseconds(200))
            let publisher = try StreamPublisher(port: broker.port)
            try await eventually("publisher connected") { publisher.isConnected }
            var alerts: TestSubscriber?
            for seq in 0..<count {
                // TI-201 (HI 540) steps above its limit from sample 450: one limit alert, after the crash.
                let value = seq < 450 ? 528.0 + Double(seq % 3) * 0.5 : 545.0
                try await publisher.publish("plant/r1/fcc/fcc1/TI-201", #"{"ts":\#(start + Int64(seq) * 1000),"v":\#(value)}"#)
                try await Task.sleep(for: .milliseconds(1))
                if seq == 300 {
                    try await eventually("caught up before the crash") { orchestrator.pipeline.processedCount(tag: tag) == 301 }
                    broker.crash()
                    try await eventually("loss noticed") { !orchestrator.connectionStatus.connected }
                    try broker.start()
                    alerts = try TestSubscriber(filters: ["it-crash/alert/#"], port: broker.port)
                    try await alerts?.waitUntilConnected()
                }
            }
            try await eventually("every sample processed", timeout: .seconds(30)) {
                (orchestrator.pipeline.processedCount(tag: tag) ?? 0) >= count
            }
            let subscriber = try #require(alerts)
            try await eventually("the alert delivered") {
                subscriber.messages.contains { $0.topic.hasSuffix("/r1/fcc/fcc1/TI-201") && $0.json?["state"] as? String == "raised" }
            }
            try await eventually("the alert recorded", timeout: .seconds(10)) {
                (try? PostgresConnection(conninfo: database).query("SELECT count(*) FROM alerts WHERE kind = 'limit'").rows.first?.first) == "1"
            }
        }
        // Every sequence number processed once, in order: redeliveries (QoS 1 is at least once)
        // are counted, never fed twice, and no data-quality alarm says otherwise.
        #expect(orchestrator.pipeline.processedCount(tag: tag) == count)
        #expect(orchestrator.pipeline.windows(of: [tag], limit: 1000).first?.times == (0..<count).map { start + Int64($0) * 1000 })
        #expect(orchestrator.pipeline.counters.samples == count + orchestrator.pipeline.counters.redeliveries)
        #expect(orchestrator.connectionStatus.connects >= 2)
        let dataQuality = try PostgresConnection(conninfo: database).query("SELECT count(*) FROM alerts WHERE kind = 'data_quality'")
        #expect(dataQuality.rows.first?.first == "0")
        broker.stop()
    }

    @Test func `with the shipped configuration, QoS 1 samples published while the orchestrator is away are delivered when it returns`() async throws {
        let broker = try PrivateBroker(persistent: true)
        try broker.start()
        // The shipped file as it is, but for where the broker, database, API and spool are.
        var config = try OrchestratorConfig.load(
            file: TestServices.repositoryRoot.appendingPathComponent("config/orchestrator.yaml").path, environment: [:])
        #expect(!config.mqtt.cleanStart)
        #expect(config.mqtt.clientID.hasPrefix("dang-"))
        config.mqtt.endpoint = MQTTEndpoint(host: "127.0.0.1", port: broker.port, tls: false)
        config.database.url = try await TestServices.freshDatabase()
        config.database.spoolDirectory = FileManager.default.temporaryDirectory.appendingPathComponent("dang-spool-\(UUID().uuidString)").path
        config.api.port = 0
        try await eventually("broker up") { (try? MQTTTestPublisher(port: broker.port)) != nil }
        let first = try Orchestrator(config: config, logger: testLogger)
        try await withRunningOrchestrator(first) {
            try await eventually("connected", timeout: .seconds(15)) { first.connectionStatus.connected }
        }
        // Away: 100 samples queued by the broker for the persistent session.
        let publisher = try StreamPublisher(port: broker.port)
        try await eventually("publisher connected") { publisher.isConnected }
        let now = Int64(Date().timeIntervalSince1970 * 1000) - 200_000
        for seq in 0..<100 {
            try await publisher.publish("plant/r1/cdu/cdu1/TI-102", #"{"ts":\#(now + Int64(seq) * 1000),"v":\#(118 + Double(seq % 2))}"#)
        }
        try await Task.sleep(for: .milliseconds(300))
        let second = try Orchestrator(config: config, logger: testLogger)
        try await withRunningOrchestrator(second) {
            try await eventually("the queued samples delivered", timeout: .seconds(15)) {
                second.pipeline.processedCount(tag: "r1/cdu/cdu1/TI-102") == 100
            }
        }
        broker.stop()
    }

    @Test func `repeated broker restarts: it reconnects, resubscribes, and the status topic tells the truth each time`() async throws {
        let broker = try PrivateBroker(persistent: true)
        try broker.start()
        var config = TestServices.config(prefix: "it-flap", databaseURL: try await TestServices.freshDatabase(), topicMap: LivePathTests.shippedMap)
        config.mqtt.endpoint = MQTTEndpoint(host: "127.0.0.1", port: broker.port, tls: false)
        config.mqtt.reconnectDelayMax = .seconds(1)
        let orchestrator = try Orchestrator(config: config, logger: testLogger)
        try await eventually("broker up") { (try? MQTTTestPublisher(port: broker.port)) != nil }
        try await withRunningOrchestrator(orchestrator) {
            try await eventually("connected", timeout: .seconds(15)) { orchestrator.connectionStatus.connected }
            for round in 1...3 {
                broker.crash()
                try await eventually("loss noticed") { !orchestrator.connectionStatus.connected }
                try broker.start()
                try await eventually("reconnected", timeout: .seconds(15)) { orchestrator.connectionStatus.connects == round + 1 }
                try await Task.sleep(for: .milliseconds(300))
                let status = try TestSubscriber(filters: ["it-flap/status"], port: broker.port)
                try await status.waitUntilConnected()
                try await eventually("retained online") { status.messages.last?.json?["state"] as? String == "online" }
                let publisher = try MQTTTestPublisher(port: broker.port)
                try await publisher.waitUntilConnected()
                try publisher.publish("plant/r1/cdu/cdu1/TI-101", "\(350 + round)")
                try await eventually("sample after restart \(round)") { orchestrator.pipeline.counters.samples == round }
            }
        }
        // After a clean stop the retained status says offline.
        let status = try TestSubscriber(filters: ["it-flap/status"], port: broker.port)
        try await status.waitUntilConnected()
        try await eventually("retained offline") { status.messages.last?.json?["state"] as? String == "offline" }
        broker.stop()
    }

    @Test func `hostile payloads and topics are refused with counters while good data keeps flowing`() async throws {
        var config = TestServices.config(prefix: "it-hostile", databaseURL: try await TestServices.freshDatabase(), topicMap: LivePathTests.shippedMap)
        let broker = try PrivateBroker()
        try broker.start()
        config.mqtt.endpoint = MQTTEndpoint(host: "127.0.0.1", port: broker.port, tls: false)
        config.topics.maxPayloadBytes = 2048
        let orchestrator = try Orchestrator(config: config, logger: testLogger)
        try await eventually("broker up") { (try? MQTTTestPublisher(port: broker.port)) != nil }
        try await withRunningOrchestrator(orchestrator) {
            try await eventually("connected", timeout: .seconds(15)) { orchestrator.connectionStatus.connected }
            try await Task.sleep(for: .milliseconds(200))
            let publisher = try MQTTTestPublisher(port: broker.port)
            try await publisher.waitUntilConnected()
            let topic = "plant/r1/cdu/cdu1/TI-101"
            try publisher.publish(topic, bytes: [UInt8](repeating: 0x31, count: 1_000_000))  // oversized
            try publisher.publish(topic, bytes: (0..<256).map { UInt8($0) })  // binary
            try publisher.publish(topic, #"{"ts": 1790000000000, "v": 35"#)  // truncated
            try publisher.publish(topic, String(repeating: "{\"a\":", count: 300))  // deeply nested
            try publisher.publish(topic, bytes: Array(#"{"v": 1, "q": ""#.utf8) + [0xC3, 0x28] + Array(#""}"#.utf8))  // invalid UTF-8
            // Topics with unexpected levels match none of the subscriptions: the broker never delivers them.
            try publisher.publish("plant/r1/cdu/cdu1/TI-101/extra/levels", "350")
            try publisher.publish("plant/r1", "350")
            for i in 0..<200 {
                try publisher.publish(topic, #"{"ts":\#(1_790_000_000_000 + Int64(i) * 1000),"v":\#(i < 150 ? 358.0 : 381.0)}"#)
            }
            try await eventually("good samples ingested") { orchestrator.pipeline.counters.samples >= 200 }
            try await eventually("the limit alert raised") { orchestrator.pipeline.counters.alertsRaised >= 1 }
        }
        let counters = orchestrator.pipeline.counters
        #expect(counters.rejected[.tooLarge] == 1)
        #expect(counters.rejected[.tooDeep] == 1)
        #expect(counters.rejected.values.reduce(0, +) == 5)  // one refusal per hostile payload
        #expect(counters.messages == 205)
        broker.stop()
    }
}
