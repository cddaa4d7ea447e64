import Foundation
import LibPQ
import Testing

@testable import DangTools
@testable import OrchestratorCore

/// A mosquitto of the test's own, so it can be stopped and started without disturbing the shared one.
final class PrivateBroker: @unchecked Sendable {
    let port: Int
    private var pid: pid_t?
    private let directory: URL

    /// - Parameter persistent: keep sessions and queued messages on disk, saved after every change
    ///   (so a SIGKILL loses nothing the broker has acknowledged).
    /// - Parameter extra: more configuration; listener options (TLS) apply to its one listener.
    init(persistent: Bool = false, extra: String = "") throws {
        self.directory = FileManager.default.temporaryDirectory.appendingPathComponent("dang-broker-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: self.directory, withIntermediateDirectories: true)
        self.port = try Self.freePort()
        var config = "listener \(self.port) 127.0.0.1\nallow_anonymous true\nuser root\nset_tcp_nodelay true\n"
        if persistent {
            config += "persistence true\npersistence_location \(self.directory.path)/\nautosave_interval 1\nautosave_on_changes true\n"
            config += "max_queued_messages 100000\n"
        }
        config += extra
        try config.write(to: self.directory.appendingPathComponent("mosquitto.conf"), atomically: true, encoding: .utf8)
    }

    func start() throws {
        self.pid = try ChildProcess.spawn(["/usr/sbin/mosquitto", "-c", self.directory.appendingPathComponent("mosquitto.conf").path])
    }

    /// Waits until the broker accepts TCP connections.
    func waitUntilListening() async throws {
        let port = self.port
        try await eventually("broker listening on \(port)", timeout: .seconds(20)) { BenchServers.isListening(port) }
    }

    func stop() {
        guard let pid = self.pid else { return }
        kill(pid, SIGTERM)
        ChildProcess.wait(pid)
        self.pid = nil
    }

    /// SIGKILL: no chance to save or say goodbye.
    func crash() {
        guard let pid = self.pid else { return }
        kill(pid, SIGKILL)
        ChildProcess.wait(pid)
        self.pid = nil
    }

    deinit {
        self.stop()
        try? FileManager.default.removeItem(at: self.directory)
    }

    static func freePort() throws -> Int { try BenchServers.freePort() }
}

@Suite(.timeLimit(.minutes(1)))
struct BrokerReconnectTests {
    @Test func `a broker that is down at start is connected to when it comes up, and a restart resubscribes`() async throws {
        let broker = try PrivateBroker()
        let database = try await TestServices.freshDatabase()
        var config = TestServices.config(prefix: "it-reconnect", databaseURL: database)
        config.mqtt.endpoint = MQTTEndpoint(host: "127.0.0.1", port: broker.port, tls: false)
        let orchestrator = try Orchestrator(config: config, logger: testLogger)
        /// The gateway's own broker alarm in the record: (raised, cleared) episodes.
        @Sendable func brokerAlarms() -> (raised: Int, cleared: Int)? {
            guard let rows = try? PostgresConnection(conninfo: database).query(
                "SELECT count(*) FILTER (WHERE state = 'raised'), count(*) FILTER (WHERE state = 'cleared') FROM alerts WHERE tag = 'orchestrator/broker' AND kind = 'system' AND severity = 'critical'"
            ).rows.first, let raised = rows[0].flatMap({ Int($0) }), let cleared = rows[1].flatMap({ Int($0) })
            else { return nil }
            return (raised, cleared)
        }

        try await withRunningOrchestrator(orchestrator) {
            try await eventually("a failed first attempt") { orchestrator.connectionStatus.lastError != nil }
            #expect(!orchestrator.connectionStatus.connected)
            // One alarm stands for the broker, however many attempts fail.
            try await eventually("the broker alarm raised", timeout: .seconds(15)) { brokerAlarms().map { $0 == (1, 0) } ?? false }
            try await Task.sleep(for: .seconds(2))
            #expect(brokerAlarms().map { $0 == (1, 0) } == true)
            try broker.start()
            try await eventually("connected", timeout: .seconds(15)) { orchestrator.connectionStatus.connected }
            try await eventually("the broker alarm cleared") { brokerAlarms().map { $0 == (0, 1) } ?? false }

            broker.stop()
            try await eventually("disconnect noticed") { !orchestrator.connectionStatus.connected }
            try await eventually("raised again for the new outage") { brokerAlarms().map { $0 == (1, 1) } ?? false }
            try broker.start()
            try await eventually("reconnected", timeout: .seconds(20)) { orchestrator.connectionStatus.connects == 2 }
            try await eventually("and cleared") { brokerAlarms().map { $0 == (0, 2) } ?? false }
            #expect(try PostgresConnection(conninfo: database).query("SELECT count(*) FROM alerts WHERE kind = 'stale'").rows == [["0"]])
            try await Task.sleep(for: .milliseconds(200))

            let publisher = try MQTTTestPublisher(port: broker.port)
            try await publisher.waitUntilConnected()
            try publisher.publish("plant/r1/cdu/cdu1/TI-101", "351.5")
            try await eventually("sample ingested after the restart") { orchestrator.pipeline.counters.samples == 1 }
        }
        broker.stop()
    }

    @Test func `a broker outage longer than min_gap is backfilled by etl once, with its interval and the tags that had reported`() async throws {
        let broker = try PrivateBroker()
        try broker.start()
        try await broker.waitUntilListening()
        var config = TestServices.config(prefix: "it-gap", databaseURL: try await TestServices.freshDatabase())
        config.mqtt.endpoint = MQTTEndpoint(host: "127.0.0.1", port: broker.port, tls: false)
        config.modules[.etl] = ModuleSettings(.etl)
        var backfill = TriggerRule(name: "backfill-gaps", kind: .dataGap, module: .etl)
        backfill.minGap = .seconds(1)
        config.triggers = [backfill]
        let orchestrator = try Orchestrator(config: config, logger: testLogger)

        try await withRunningOrchestrator(orchestrator) {
            try await eventually("connected", timeout: .seconds(15)) { orchestrator.connectionStatus.connected }
            let publisher = try MQTTTestPublisher(port: broker.port)
            try await publisher.waitUntilConnected()
            try publisher.publish("plant/r1/cdu/cdu1/TI-101", "351.5")
            try await eventually("sample ingested") { orchestrator.pipeline.counters.samples == 1 }
            let lostAfter = EpochMilliseconds.now()
            broker.stop()
            try await eventually("disconnect noticed") { !orchestrator.connectionStatus.connected }
            try await Task.sleep(for: .seconds(2))
            try broker.start()
            try await broker.waitUntilListening()
            let subscriber = try TestSubscriber(filters: ["it-gap/cmd/etl"], port: broker.port)
            try await subscriber.waitUntilConnected()
            try await eventually("reconnected", timeout: .seconds(20)) { orchestrator.connectionStatus.connects == 2 }
            // Settled 10 s after the reconnection, then decided and published.
            try await eventually("the etl invocation", timeout: .seconds(30)) { !subscriber.messages.isEmpty }
            try await Task.sleep(for: .seconds(2))
            #expect(subscriber.messages.count == 1)
            let invocation = try #require(subscriber.messages.first?.json)
            let gap = try #require((invocation["params"] as? [String: Any])?["gap"] as? [String: Any])
            #expect(gap["cause"] as? String == "broker_outage")
            #expect(gap["tags"] as? [String] == ["r1/cdu/cdu1/TI-101"])
            let from = try #require((gap["from"] as? NSNumber)?.int64Value)
            #expect(from >= lostAfter && ((gap["seconds"] as? Double) ?? 0) >= 2)
        }
        broker.stop()
    }

    @Test func `past mqtt.max_queued, messages made while the broker is away are dropped and counted; the queued ones go out on reconnect`() async throws {
        let broker = try PrivateBroker()
        try broker.start()
        try await broker.waitUntilListening()
        var config = TestServices.config(prefix: "it-maxq", databaseURL: try await TestServices.freshDatabase())
        config.mqtt.endpoint = MQTTEndpoint(host: "127.0.0.1", port: broker.port, tls: false)
        config.mqtt.maxQueued = 5
        // A slow first reconnect, so the subscriber below is listening before the queue goes out
        // (the backoff is jittered to 50–100 % of it: 3 s could be 1.5, which a loaded run's broker
        // restart and subscription did not beat).
        config.mqtt.reconnectDelayMin = .seconds(6)
        config.mqtt.reconnectDelayMax = .seconds(6)
        let orchestrator = try Orchestrator(config: config, logger: testLogger)

        try await withRunningOrchestrator(orchestrator) {
            try await eventually("connected", timeout: .seconds(15)) { orchestrator.connectionStatus.connected }
            broker.stop()
            try await eventually("disconnect noticed") { !orchestrator.connectionStatus.connected }

            let events = (0..<12).map { n in
                AlertEvent(
                    alertID: UUID(), state: .raised, severity: .warning, kind: .limit, tag: "r1/cdu/cdu1/TI-\(n)", topic: "plant/r1/cdu/cdu1/TI-\(n)",
                    timestamp: 1_700_000_000_000 + Int64(n), raisedAt: 1_700_000_000_000 + Int64(n), clearedAt: nil, value: 400, score: 1,
                    message: "limit \(n)")
            }
            // (The gateway's own broker alarm, raised as the connection was lost, waits outside
            // the queue: it goes out, raised then cleared, once the broker is back.)
            for event in events { orchestrator.publisher.deliver(event) }
            #expect(orchestrator.publisher.droppedWhileAway == 7)

            try broker.start()
            try await broker.waitUntilListening()
            let subscriber = try TestSubscriber(filters: ["it-maxq/alert/#"], port: broker.port)
            try await subscriber.waitUntilConnected()
            try await eventually("reconnected", timeout: .seconds(20)) { orchestrator.connectionStatus.connects == 2 }
            try await eventually("the queued alerts delivered") { subscriber.messages.count >= 7 }
            try await Task.sleep(for: .milliseconds(300))
            let isBrokerAlarm: @Sendable (TestSubscriber.Received) -> Bool = { ($0.json?["tag"] as? String) == "orchestrator/broker" }
            #expect(subscriber.messages.filter(isBrokerAlarm).compactMap { $0.json?["state"] as? String } == ["raised", "cleared"])
            let delivered = subscriber.messages.filter { !isBrokerAlarm($0) }.compactMap { $0.json?["alert_id"] as? String }
            #expect(delivered == events.prefix(5).map { $0.id })
            #expect(orchestrator.publisher.droppedWhileAway == 7)
        }
        broker.stop()
    }
}
