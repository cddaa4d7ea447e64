import Foundation
import Logging
import Synchronization
package import OrchestratorCore

/// Event-to-invocation latency and decisions per second (`dang bench-decisions`), in-process: the
/// real pipeline and coordinator, with the MQTT publication and the record replaced by a clock
/// read and a counter so that only the orchestrator's own work is timed.
package enum DecisionBenchmark {
    package struct Report: Sendable {
        /// Sample arrival (start of `handle`) → invocation handed to the MQTT client, per breach, in µs.
        package var latencies: [Double]
        /// The decision alone (`decisions.latency_us`), in µs.
        package var decisionLatencies: [Double]
        package var invokePerSecond: Double
        package var skipPerSecond: Double
        package var baselineSamplePerSecond: Double

        package func percentile(_ p: Double, of values: [Double]) -> Double {
            values.quantile(p) ?? .nan
        }
    }

    final class Probe: Sendable {
        let published = Atomic<UInt64>(0)
        let lastPublish = Atomic<UInt64>(0)
        let decisionMicros = Mutex<[Double]>([])
    }

    package static func run(tags: Int = 1000) -> Report {
        var map = TopicMap()
        let names = (0..<tags).map { "r1/u\($0 / 10)/unit/T\($0)" }
        for name in names { map.tags[name] = TagInfo(unit: "degC", limits: .init(lo: 340, hi: 372, deadband: 1)) }
        var config = OrchestratorConfig.defaults(topicMap: map)
        config.detection.multivariateEnabled = false
        var rule = TriggerRule(name: "equipment", kind: .equipment, module: .forecasting)
        rule.alertKinds = [.limit]
        config.triggers = [rule]
        config.modules[.forecasting]?.maxInFlight = tags * 2
        config.modules[.forecasting]?.minHistory = 10
        config.modules[.forecasting]?.window = 60
        let probe = Probe()
        var logger = Logger(label: "bench")
        logger.logLevel = .warning
        let pipeline = IngestPipeline(config: config, sinks: [], logger: logger, clock: { 0 })
        var time: Int64 = 1_700_000_000_000
        let now = Atomic<Int64>(time)
        let coordinator = ModuleCoordinator(
            config: config, data: pipeline,
            outputs: CoordinatorOutputs(
                publish: { topic, _, request in
                    if request != nil {
                        probe.lastPublish.store(DispatchTime.now().uptimeNanoseconds, ordering: .relaxed)
                        probe.published.add(1, ordering: .relaxed)
                    }
                    return true
                },
                record: { record in
                    if case .decision(let d) = record, let us = d.latencyMicroseconds { probe.decisionMicros.withLock { $0.append(Double(us)) } }
                }),
            logger: logger, clock: { now.load(ordering: .relaxed) })
        pipeline.attachDecisions(coordinator)
        let topics = names.map { Array("plant/\($0)".utf8) }

        func feed(_ index: Int, _ value: Double) {
            time += 1
            now.store(time, ordering: .relaxed)
            let payload = Array("{\"ts\":\(time),\"v\":\(value)}".utf8)
            topics[index].withUnsafeBytes { topic in
                payload.withUnsafeBytes { pipeline.handle(topic: topic, payload: $0, receivedAt: time) }
            }
            pipeline.deliverAfterMessage()
        }

        // Warm-up: 30 normal samples per tag (history and detectors), timed as the baseline.
        let warmStart = DispatchTime.now().uptimeNanoseconds
        for round in 0..<30 {
            for index in 0..<tags { feed(index, 355 + Double((round + index) % 5)) }
        }
        let baseline = Double(30 * tags) / (Double(DispatchTime.now().uptimeNanoseconds - warmStart) / 1e9)

        // Each tag breaches its HI limit once: one alert, one decision, one invocation.
        var latencies: [Double] = []
        latencies.reserveCapacity(tags)
        let invokeStart = DispatchTime.now().uptimeNanoseconds
        for index in 0..<tags {
            let before = probe.published.load(ordering: .relaxed)
            let start = DispatchTime.now().uptimeNanoseconds
            feed(index, 380)
            if probe.published.load(ordering: .relaxed) == before + 1 {
                latencies.append(Double(probe.lastPublish.load(ordering: .relaxed) - start) / 1000)
            }
        }
        let invokeSeconds = Double(DispatchTime.now().uptimeNanoseconds - invokeStart) / 1e9
        let decisionLatencies = probe.decisionMicros.withLock { $0 }

        // Every tag breaches again after clearing: the invocation is still pending, so each
        // decision is a deduplicated skip (the cheap, common case of a noisy plant).
        for index in 0..<tags { feed(index, 355) }
        let skipStart = DispatchTime.now().uptimeNanoseconds
        let decisionsBefore = coordinator.counters.decisions
        for index in 0..<tags { feed(index, 381) }
        let skips = coordinator.counters.decisions - decisionsBefore
        let skipSeconds = Double(DispatchTime.now().uptimeNanoseconds - skipStart) / 1e9
        return Report(
            latencies: latencies, decisionLatencies: decisionLatencies, invokePerSecond: Double(latencies.count) / invokeSeconds,
            skipPerSecond: Double(skips) / skipSeconds, baselineSamplePerSecond: baseline)
    }
}
