import Curl
import Foundation
import LibPQ
import Logging
import Mosquitto
import Synchronization
import Testing

@testable import DangTools
@testable import OrchestratorCore

/// The real broker and database for the integration tests.
///
/// `make test` starts them with `scripts/services.sh` and passes `DANG_MQTT_URL`/`DATABASE_URL`;
/// a bare `swift test` starts its own private pair with the same script (into a temporary
/// directory) and stops it when the test process exits.
enum TestServices {
    struct Endpoints: Sendable {
        let mqtt: MQTTEndpoint
        let databaseURL: String
    }

    static let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    static let shared: Endpoints = {
        let environment = ProcessInfo.processInfo.environment
        if let mqtt = environment["DANG_MQTT_URL"], let database = environment["DATABASE_URL"],
            let endpoint = try? MQTTEndpoint.parse(mqtt).get()
        {
            return Endpoints(mqtt: endpoint, databaseURL: database)
        }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("dang-it-\(getpid())").path
        let env = run(["start", directory])
        ownedDirectory.withLock { $0 = directory }
        atexit {
            if let directory = TestServices.ownedDirectory.withLock({ $0 }) {
                let script = TestServices.repositoryRoot.appendingPathComponent("scripts/services.sh").path
                _ = try? ChildProcess.run(["/bin/bash", script, "stop", directory, "--purge"])
            }
        }
        var values: [String: String] = [:]
        for line in env.split(separator: "\n") {
            let parts = line.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { values[String(parts[0])] = String(parts[1]) }
        }
        guard let mqtt = values["DANG_MQTT_URL"], let database = values["DATABASE_URL"],
            let endpoint = try? MQTTEndpoint.parse(mqtt).get()
        else {
            fatalError("scripts/services.sh start did not print DANG_MQTT_URL and DATABASE_URL:\n\(env)")
        }
        return Endpoints(mqtt: endpoint, databaseURL: database)
    }()

    static let ownedDirectory = Mutex<String?>(nil)

    @discardableResult
    static func run(_ arguments: [String]) -> String {
        let script = repositoryRoot.appendingPathComponent("scripts/services.sh").path
        guard let (status, output) = try? ChildProcess.run(["/bin/bash", script] + arguments), status == 0 else {
            fatalError("scripts/services.sh \(arguments.joined(separator: " ")) failed")
        }
        return output
    }

    /// A fresh, empty database on the test server, so tests never see each other's rows.
    /// A new, empty database on the test server. CREATE DATABASE copies the template and syncs it to
    /// disk, which takes seconds when the whole suite starts at once: it runs on a thread of its own,
    /// not on one of the cooperative pool's (two, on a two-core machine), which the orchestrators
    /// under test need.
    static func freshDatabase() async throws -> String {
        try await offThePool { Result { try createDatabase() } }.get()
    }

    private static func createDatabase() throws -> String {
        let base = try PostgresConnection(conninfo: shared.databaseURL)
        let name = "t_\(UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: ""))"
        // Identifiers cannot be bound as parameters; `name` is generated here from hex digits only.
        try base.execute(script: "CREATE DATABASE \(name)")
        guard var components = URLComponents(string: shared.databaseURL) else {
            throw PostgresError(code: .connectionFailed, message: "DATABASE_URL is not a URL")
        }
        components.path = "/\(name)"
        return components.string!
    }

    /// A configuration pointing at the test servers, with a private topic prefix and database.
    static func config(prefix: String, databaseURL: String, topicMap: TopicMap = TopicMap()) -> OrchestratorConfig {
        var config = OrchestratorConfig.defaults(topicMap: topicMap)
        config.mqtt.endpoint = shared.mqtt
        config.mqtt.clientID = "dang-it-\(prefix)"
        // The shared test broker outlives a run: a persistent session (the shipped default, tested
        // on its own broker in FaultTests) would bring the last run's messages into the next one.
        config.mqtt.cleanStart = true
        config.topics.prefix = prefix
        config.api.port = 0  // a free port: orchestrators of several suites run at once
        config.topics.sparkplug = false  // only the Sparkplug suites take spBv1.0/# from the shared broker
        config.database.url = databaseURL
        config.database.flushInterval = .milliseconds(20)
        config.database.spoolDirectory = FileManager.default.temporaryDirectory
            .appendingPathComponent("dang-spool-\(UUID().uuidString)").path
        return config
    }
}

/// Shared between a test client and its libmosquitto callbacks.
final class ClientState: Sendable {
    let received = Mutex<[TestSubscriber.Received]>([])
    let connected = Atomic<Bool>(false)
}

/// A plain subscriber that records what arrives, for asserting on the orchestrator's output.
final class TestSubscriber: Sendable {
    struct Received: Sendable {
        let topic: String
        let payload: [UInt8]
        let retained: Bool
        /// MQTT v5 request properties, when the message carries them.
        var responseTopic: String? = nil
        var correlationData: [UInt8]? = nil

        var json: [String: any Sendable]? {
            (try? JSONSerialization.jsonObject(with: Data(self.payload))) as? [String: any Sendable]
        }
    }

    private let state = ClientState()
    let client: MosquittoClient

    init(filters: [String], port: Int? = nil) throws {
        var options = MQTTConnectionOptions(
            host: TestServices.shared.mqtt.host, port: port ?? TestServices.shared.mqtt.port, clientID: "sub-\(UUID().uuidString)")
        options.subscriptions = filters.map { ($0, 1) }
        let state = self.state
        self.client = try MosquittoClient(
            options: options,
            onMessage: { message in
                let copy = Received(
                    topic: String(decoding: message.topic, as: UTF8.self), payload: Array(message.payload),
                    retained: message.retained, responseTopic: message.responseTopic, correlationData: message.correlationData)
                state.received.withLock { $0.append(copy) }
            },
            onEvent: { event in
                if case .connected = event { state.connected.store(true, ordering: .releasing) }
            })
        try self.client.start()
    }

    var messages: [Received] { self.state.received.withLock { $0 } }

    /// Waits until the subscription is live (the SUBACK has had time to arrive).
    func waitUntilConnected() async throws {
        try await eventually("subscriber connected") { self.state.connected.load(ordering: .acquiring) }
        try await Task.sleep(for: .milliseconds(100))
    }

    deinit { self.client.disconnect() }
}

typealias TestPublisher = MQTTTestPublisher

/// A publisher for test input (on the shared test broker unless a port is given).
final class MQTTTestPublisher: Sendable {
    let client: MosquittoClient
    private let state = ClientState()

    init(port: Int? = nil) throws {
        let options = MQTTConnectionOptions(
            host: TestServices.shared.mqtt.host, port: port ?? TestServices.shared.mqtt.port,
            clientID: "pub-\(UUID().uuidString)")
        let state = self.state
        self.client = try MosquittoClient(
            options: options, onMessage: { _ in },
            onEvent: { event in
                if case .connected = event { state.connected.store(true, ordering: .releasing) }
            })
        try self.client.start()
    }

    func waitUntilConnected() async throws {
        try await eventually("publisher connected") { self.state.connected.load(ordering: .acquiring) }
    }

    func publish(_ topic: String, _ payload: String, qos: Int32 = 1) throws {
        try self.client.publish(topic: topic, payload: Array(payload.utf8), qos: qos, retain: false)
    }

    func publish(_ topic: String, bytes: [UInt8], qos: Int32 = 1) throws {
        try self.client.publish(topic: topic, payload: bytes, qos: qos, retain: false)
    }

    deinit { self.client.disconnect() }
}

struct TimedOut: Error, CustomStringConvertible {
    let what: String
    var description: String { "timed out waiting for \(self.what)" }
}

/// Polls `condition` until it holds or `timeout` passes. Each poll runs off the cooperative pool:
/// many conditions query PostgreSQL or a server, and dozens of suites polling at once on the pool's
/// few threads would hold up every test's awaits (and the servers under test) by seconds.
func eventually(
    _ what: String, timeout: Duration = .seconds(10), _ condition: @escaping @Sendable () throws -> Bool
) async throws {
    let deadline = ContinuousClock.now.advanced(by: timeout)
    let poll: @Sendable () async throws -> Bool = { try await offThePool { Result { try condition() } }.get() }
    while ContinuousClock.now < deadline {
        if try await poll() { return }
        try await Task.sleep(for: .milliseconds(20))
    }
    if try await poll() { return }
    throw TimedOut(what: what)
}

/// Runs an orchestrator's services for the duration of `body`, then shuts them down gracefully.
func withRunningOrchestrator<T: Sendable>(
    _ orchestrator: Orchestrator, _ body: @Sendable () async throws -> T
) async throws -> T {
    let group = ServiceGroupRunner(orchestrator: orchestrator)
    return try await group.run(body)
}

let testLogger: Logger = {
    var logger = Logger(label: "dang-test")
    logger.logLevel = .warning
    return logger
}()

/// Certificates made for a test by openssl, in a fresh temporary directory: `commands` run there
/// with bash (`set -e`).
struct TestPKI {
    let directory: URL
    func path(_ name: String) -> String { self.directory.appendingPathComponent(name).path }

    init(_ commands: String) throws {
        self.directory = FileManager.default.temporaryDirectory.appendingPathComponent("dang-pki-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: self.directory, withIntermediateDirectories: true)
        let (status, output) = try ChildProcess.run(["/bin/bash", "-c", "set -e\ncd '\(self.directory.path)'\n" + commands])
        guard status == 0 else { throw TimedOut(what: "openssl to make the test PKI: \(output)") }
    }
}

/// Blocking work (a libcurl call, a child process that calls a server) on a thread of its own: a
/// test that did it on the cooperative pool would hold one of its few threads while the server it
/// calls (whose handlers run on the same pool) answers — with two such tests at once, neither
/// server could.
func offThePool<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        Thread { continuation.resume(returning: work()) }.start()
    }
}

/// `CurlTransfer.perform` off the cooperative pool.
func performOffThePool(_ request: HTTPRequest) async -> Result<Curl.HTTPResponse, HTTPFailure> {
    await offThePool { CurlTransfer.perform(request) }
}
