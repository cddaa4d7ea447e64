import Foundation
import Logging
import Synchronization
import Testing

@testable import DangTools
@testable import OrchestratorCore

/// A plant in a test: the real ingest pipeline and detectors feeding the real coordinator, on a
/// clock the scenario moves. Publications (invocations, decision mirrors) and records are kept.
final class DecisionHarness: Sendable {
    /// What the outputs write to, shared with their closures.
    final class Capture: Sendable {
        let now = Atomic<Int64>(1_700_000_000_000)
        let published = Mutex<[(topic: String, payload: [UInt8])]>([])
        let records = Mutex<[Record]>([])
        let acceptPublications = Atomic<Bool>(true)
        /// Every alert event the pipeline made, in order.
        let alerts = Mutex<[AlertEvent]>([])
    }

    /// Keeps the pipeline's alert events.
    struct AlertCapture: AlertSink {
        let capture: Capture
        func deliver(_ event: AlertEvent) { self.capture.alerts.withLock { $0.append(event) } }
    }

    let pipeline: IngestPipeline
    let coordinator: ModuleCoordinator
    let capture: Capture

    convenience init(map: TopicMap, configure: (inout OrchestratorConfig) -> Void = { _ in }) {
        var config = OrchestratorConfig.defaults(topicMap: map)
        config.detection.multivariateEnabled = false
        for name in ModuleName.allCases {
            config.modules[name]?.minHistory = 5
            config.modules[name]?.timeout = .seconds(10)
        }
        config.decisionEngine.retryBackoff = .seconds(1)
        configure(&config)
        self.init(config: config)
    }

    /// A plant with exactly this configuration (the shipped one, for instance).
    init(config: OrchestratorConfig) {
        let capture = Capture()
        self.capture = capture
        let pipeline = IngestPipeline(config: config, sinks: [AlertCapture(capture: capture)], logger: Logger(label: "test"))
        self.pipeline = pipeline
        self.coordinator = ModuleCoordinator(
            config: config, data: pipeline,
            outputs: CoordinatorOutputs(
                publish: { topic, payload, _ in
                    guard capture.acceptPublications.load(ordering: .relaxed) else { return false }
                    capture.published.withLock { $0.append((topic, payload)) }
                    return true
                },
                record: { record in capture.records.withLock { $0.append(record) } }),
            logger: Logger(label: "test"), clock: { capture.now.load(ordering: .relaxed) })
        pipeline.attachDecisions(self.coordinator)
    }

    var time: Int64 { self.capture.now.load(ordering: .relaxed) }

    func advance(seconds: Double) {
        self.capture.now.add(Int64(seconds * 1000), ordering: .relaxed)
        self.coordinator.tick()
    }

    /// One sample per call, one second apart.
    func sample(_ tag: String, _ value: Double) {
        let ms = self.capture.now.add(1000, ordering: .relaxed).newValue
        let topic = tag.hasPrefix("market/") ? tag : "plant/\(tag)"
        var t = topic
        var p = "{\"ts\":\(ms),\"v\":\(value)}"
        t.withUTF8 { topicBytes in
            p.withUTF8 { payloadBytes in
                self.pipeline.handle(topic: UnsafeRawBufferPointer(topicBytes), payload: UnsafeRawBufferPointer(payloadBytes), receivedAt: ms)
            }
        }
        // As the MQTT client does after each message: the decision side gets the message's alerts.
        self.pipeline.deliverAfterMessage()
        self.coordinator.tick()
    }

    /// Invocation messages published for a module, as JSON objects.
    func invocations(_ module: String) -> [[String: Any]] {
        self.capture.published.withLock { $0 }.filter { $0.topic == "apos/cmd/\(module)" }.compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0.payload))) as? [String: Any]
        }
    }

    /// Alert events the pipeline made (raised and cleared), in order.
    var alerts: [AlertEvent] { self.capture.alerts.withLock { $0 } }

    /// Raised alerts, in order.
    var alertsRaised: [AlertEvent] { self.alerts.filter { $0.state == .raised } }

    /// The pipeline's timer (staleness, unit monitors, data gaps), as `dang run` calls it each second.
    func tickPipeline() {
        self.pipeline.tick(now: self.time)
    }

    var decisions: [DecisionRecord] {
        self.capture.records.withLock { $0 }.compactMap { if case .decision(let d) = $0 { d } else { nil } }
    }

    func decisions(_ module: String, action: String? = nil) -> [DecisionRecord] {
        self.decisions.filter { $0.module == module && (action == nil || $0.action == action) }
    }

    /// The last recorded state of each invocation.
    var invocationRecords: [UUID: InvocationRecord] {
        var latest: [UUID: InvocationRecord] = [:]
        for record in self.capture.records.withLock({ $0 }) { if case .invocation(let i) = record { latest[i.invocationID] = i } }
        return latest
    }

    func answer(_ invocation: [String: Any], module: String, status: String = "ok", benefit: Double? = 1) {
        let id = invocation["invocation_id"] as? String ?? ""
        let metrics = benefit.map { ",\"metrics\":{\"benefit\":\($0)}" } ?? ""
        self.coordinator.handle(topic: "apos/result/\(module)", payload: Array("{\"invocation_id\":\"\(id)\",\"status\":\"\(status)\",\"output\":{}\(metrics)}".utf8))
    }

    static func reasons(_ decision: DecisionRecord) -> [String: String] {
        guard let steps = (try? JSONSerialization.jsonObject(with: Data(decision.reasons.utf8))) as? [[String: String]] else { return [:] }
        var verdicts: [String: String] = [:]
        for step in steps { verdicts[step["step"] ?? ""] = step["verdict"] }
        return verdicts
    }
}
