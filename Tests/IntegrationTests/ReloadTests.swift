import Curl
import Foundation
import OrchestratorCore
import Testing

/// Reloading the configuration while running (SIGHUP, `POST /reload`), on the shipped
/// configuration and topic map, copied where the test may edit them, with a broker of its own
/// (the shipped prefix and topics are the product's, not a test's).
@Suite(.serialized) struct ReloadTests {
    static let flashZone = "r1/cdu/cdu1/TI-105"  // shipped: LO 340, HI 368
    static let overhead = "r1/cdu/cdu1/TI-102"
    static let operate = "reload-operate"
    static let read = "reload-read"

    /// The shipped files in a directory of the test's own (`topics: map: ../topics/refinery.yaml`
    /// stays right), and a source that reads them as `dang run` would, with the test's servers.
    struct Shipped {
        let directory: URL
        var configFile: URL { self.directory.appendingPathComponent("config/orchestrator.yaml") }
        var mapFile: URL { self.directory.appendingPathComponent("topics/refinery.yaml") }
        let source: ConfigurationSource

        init(brokerPort: Int) async throws {
            self.directory = FileManager.default.temporaryDirectory.appendingPathComponent("dang-reload-\(UUID().uuidString)")
            for (folder, file) in [("config", "orchestrator.yaml"), ("topics", "refinery.yaml")] {
                let target = self.directory.appendingPathComponent(folder)
                try FileManager.default.createDirectory(at: target, withIntermediateDirectories: true)
                try FileManager.default.copyItem(
                    at: TestServices.repositoryRoot.appendingPathComponent("\(folder)/\(file)"), to: target.appendingPathComponent(file))
            }
            let database = try await TestServices.freshDatabase()
            let spool = self.directory.appendingPathComponent("spool").path
            let path = self.directory.appendingPathComponent("config/orchestrator.yaml").path
            self.source = {
                var config = try OrchestratorConfig.load(file: path, environment: [:])
                config.mqtt.endpoint = MQTTEndpoint(host: "127.0.0.1", port: brokerPort, tls: false)
                config.database.url = database
                config.database.spoolDirectory = spool
                config.api.port = 0
                config.api.token = ReloadTests.operate
                config.api.readToken = ReloadTests.read
                return config
            }
        }

        /// Replaces `old` by `new` in a file (exactly once).
        func edit(_ file: URL, _ old: String, _ new: String) throws {
            let text = try String(contentsOf: file, encoding: .utf8)
            #expect(text.components(separatedBy: old).count == 2, "\(old) in \(file.lastPathComponent)")
            try text.replacingOccurrences(of: old, with: new).write(to: file, atomically: true, encoding: .utf8)
        }
    }

    static func sample(_ tag: String, _ ts: Int64, _ value: Double) -> (String, String) {
        ("plant/\(tag)", #"{"ts":\#(ts),"v":\#(value)}"#)
    }

    @Test func `a HI limit changed under load applies from the next sample; no sample lost; detectors and the unit model keep their state`() async throws {
        let broker = try PrivateBroker()
        try broker.start()
        try await broker.waitUntilListening()
        let shipped = try await Shipped(brokerPort: broker.port)
        let orchestrator = try Orchestrator(config: try shipped.source(), logger: testLogger, configurationSource: shipped.source)
        let alerts = try TestSubscriber(filters: ["apos/alert/+/\(Self.flashZone)"], port: broker.port)
        let publisher = try MQTTTestPublisher(port: broker.port)
        try await alerts.waitUntilConnected()
        try await publisher.waitUntilConnected()
        try await withRunningOrchestrator(orchestrator) {
            try await eventually("connected") { orchestrator.connectionStatus.connected }
            // The unit's model, trained first: the shipped baseline is 500 evaluations, one a second
            // live; here every tag of CDU 1 gets a value and the test evaluates the unit itself.
            let unit = "r1/cdu/cdu1"
            let tags = try #require(orchestrator.pipeline.unitState(named: unit)?.tags)
            let base = Int64(Date().timeIntervalSince1970 * 1000) - 3_600_000
            var random = SystemRandomNumberGenerator()
            let center: [String: Double] = orchestrator.config.topicMap.tags.mapValues { info in
                let l = info.limits
                return ((l.lo ?? l.lolo ?? 0) + (l.hi ?? l.hihi ?? 100)) / 2
            }
            for row in 0..<520 {
                let ts = base + Int64(row) * 1000
                for tag in tags {
                    let value = (center[tag] ?? 50) + Double.random(in: -0.5...0.5, using: &random)
                    let (topic, payload) = Self.sample(tag, ts, tag == Self.flashZone ? 355 + Double(row % 3) * 0.2 : value)
                    topic.utf8CString.withUnsafeBufferPointer { t in
                        payload.utf8CString.withUnsafeBufferPointer { p in
                            orchestrator.pipeline.handle(
                                topic: UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(t).dropLast()),
                                payload: UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(p).dropLast()))
                        }
                    }
                }
                orchestrator.pipeline.tick(now: ts)
            }
            let trained = try #require(orchestrator.pipeline.unitState(named: unit))
            #expect(trained.trained, "\(trained)")

            // 364 °C is inside the shipped HI (368): no limit alarm.
            let processed = orchestrator.pipeline.processedCount(tag: Self.flashZone) ?? 0
            var (topic, payload) = Self.sample(Self.flashZone, base + 600_000, 364)
            try publisher.publish(topic, payload)
            try await eventually("the first 364 °C processed") { orchestrator.pipeline.processedCount(tag: Self.flashZone) == processed + 1 }

            // Load on another tag of the unit while the limit changes: 3,000 QoS 1 samples.
            let load = Task.detached {
                for i in 0..<3_000 {
                    let (topic, payload) = Self.sample(Self.overhead, base + 700_000 + Int64(i) * 100, 118 + Double(i % 5) * 0.1)
                    try publisher.publish(topic, payload)
                    if i % 100 == 0 { try await Task.sleep(for: .milliseconds(5)) }
                }
            }
            let overheadBefore = orchestrator.pipeline.processedCount(tag: Self.overhead) ?? 0
            try await Task.sleep(for: .milliseconds(40))
            try shipped.edit(shipped.mapFile, "limits: {lo: 340, hi: 368, deadband: 1.0}", "limits: {lo: 340, hi: 360, deadband: 1.0}")
            let report = await offThePool { orchestrator.reload() }
            #expect(report.accepted && report.errors.isEmpty, "\(report)")
            #expect(report.applied == ["tag \(Self.flashZone)"], "\(report)")
            #expect(report.restartNeeded.isEmpty, "\(report)")
            #expect(orchestrator.config.topicMap.tags[Self.flashZone]?.limits.hi == 360)
            try await load.value

            // The next sample at 364 °C breaches the new HI.
            (topic, payload) = Self.sample(Self.flashZone, base + 601_000, 364)
            try publisher.publish(topic, payload)
            try await eventually("the limit alarm by the new HI") {
                alerts.messages.contains { $0.json?["kind"] as? String == "limit" && $0.json?["state"] as? String == "raised" }
            }
            let raised = try #require(alerts.messages.compactMap(\.json).first { $0["kind"] as? String == "limit" })
            #expect((raised["message"] as? String)?.contains("360") == true, "\(raised)")
            // Nothing lost under the reload; the detectors went on counting (not rebuilt); the unit
            // model is the one trained before.
            try await eventually("every load sample processed") {
                orchestrator.pipeline.processedCount(tag: Self.overhead) == overheadBefore + 3_000
            }
            #expect(orchestrator.pipeline.processedCount(tag: Self.flashZone) == processed + 2)
            #expect(orchestrator.pipeline.counters.totalRejected == 0)
            let after = try #require(orchestrator.pipeline.unitState(named: unit))
            #expect(after.trained && after.baselineSamples == trained.baselineSamples && after.tags == trained.tags)
        }
        broker.stop()
    }

    @Test func `a file with errors is refused with file, line and key, and the running configuration stays; POST /reload needs the operate role`() async throws {
        let broker = try PrivateBroker()
        try broker.start()
        try await broker.waitUntilListening()
        let shipped = try await Shipped(brokerPort: broker.port)
        let orchestrator = try Orchestrator(config: try shipped.source(), logger: testLogger, configurationSource: shipped.source)
        try await withRunningOrchestrator(orchestrator) {
            try await eventually("API listening", timeout: .seconds(30)) { orchestrator.apiListeningPort > 0 }
            func post(_ token: String) async -> (status: Int, json: [String: Any]) {
                var request = HTTPRequest(url: "http://127.0.0.1:\(orchestrator.apiListeningPort)/reload")
                request.headers = ["Authorization: Bearer \(token)"]
                guard case .success(let response) = await performOffThePool(request) else { return (0, [:]) }
                return (response.status, (try? JSONSerialization.jsonObject(with: Data(response.body))) as? [String: Any] ?? [:])
            }
            #expect(await post(Self.read).status == 403)
            let unchanged = await post(Self.operate)
            #expect(unchanged.status == 200 && unchanged.json["reloaded"] as? Bool == true, "\(unchanged.json)")
            #expect((unchanged.json["applied"] as? [String])?.isEmpty == true && (unchanged.json["restart_needed"] as? [String])?.isEmpty == true)

            // A limit that is not a number: refused, with the map's file, line and key.
            try shipped.edit(shipped.mapFile, "limits: {lo: 340, hi: 368, deadband: 1.0}", "limits: {lo: 340, hi: hot, deadband: 1.0}")
            let refused = await post(Self.operate)
            #expect(refused.status == 422 && refused.json["reloaded"] as? Bool == false, "\(refused.json)")
            let errors = refused.json["errors"] as? [String] ?? []
            #expect(errors.contains { $0.contains("refinery.yaml:26:") && $0.contains("hi") }, "\(errors)")
            #expect(orchestrator.config.topicMap.tags[Self.flashZone]?.limits.hi == 368)

            // Fixed, with a change that only a restart applies: reported, and the running value stays.
            try shipped.edit(shipped.mapFile, "hi: hot,", "hi: 368,")
            let keepalive = orchestrator.config.mqtt.keepAlive
            try shipped.edit(shipped.configFile, "keepalive: 30s", "keepalive: 45s")
            let restart = await post(Self.operate)
            #expect(restart.status == 200 && restart.json["restart_needed"] as? [String] == ["mqtt"], "\(restart.json)")
            #expect(orchestrator.config.mqtt.keepAlive == keepalive)
        }
        broker.stop()
    }
}
