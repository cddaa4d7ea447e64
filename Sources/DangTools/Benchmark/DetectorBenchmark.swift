import Foundation
import Logging
package import OrchestratorCore

/// Nanoseconds per sample of each detector and of the whole per-tag path, measured in-process on
/// synthetic sensor data (`dang bench-detectors`). Build with `-c release` to measure.
package enum DetectorBenchmark {
    package struct Row: Sendable {
        package let name: String
        /// The fastest of the repetitions: the machine's noise only ever adds time.
        package let nanosecondsPerSample: Double
        /// The median of the repetitions.
        package let medianNanoseconds: Double
        /// Samples the case's pipeline refused (the live path; 0 when it measured what it says).
        package var refused = 0
    }

    /// Runs every case `repetitions` times over `samples` samples spread across `tags` tags (so
    /// per-tag state does not all sit in L1, as in a plant) and returns the rows, baseline first.
    package static func run(samples: Int = 2_000_000, tags: Int = 1000, repetitions: Int = 5) -> [Row] {
        var random = SplitMix64(seed: 1)
        let values = (0..<4096).map { i in 350 + random.gaussian() + (i % 1000 == 999 ? 12 : 0) }
        // A constant, as the engine's settings are: a `var` captured by the closures below would
        // be boxed and copied (with a retain and release of its arrays) at every sample.
        let settings = {
            var settings = DetectionSettings()
            settings.multivariateEnabled = false
            return settings
        }()
        var rows: [Row] = []
        var sink = 0.0

        func measure(_ name: String, _ body: (Int) -> Double) {
            _ = body(min(samples / 10, 100_000))  // warm up
            var times: [Double] = []
            for _ in 0..<max(1, repetitions) {
                let start = ContinuousClock.now
                sink += body(samples)
                let elapsed = ContinuousClock.now - start
                let ns = Double(elapsed.components.seconds) * 1e9 + Double(elapsed.components.attoseconds) / 1e9
                times.append(ns / Double(samples))
            }
            times.sort()
            rows.append(Row(name: name, nanosecondsPerSample: times[0], medianNanoseconds: times[times.count / 2]))
        }

        measure("baseline: read the sample") { n in
            var sum = 0.0
            for i in 0..<n { sum += values[i & 4095] }
            return sum
        }
        var ewma = [EWMAStatistics](repeating: EWMAStatistics(alpha: 0.05), count: tags)
        measure("EWMA mean/variance z-score") { n in
            var sum = 0.0
            for i in 0..<n {
                let t = i % tags
                sum += ewma[t].zScore(values[i & 4095], floorFraction: 0.001)
                ewma[t].update(values[i & 4095])
            }
            return sum
        }
        var windows = [RobustWindow](repeating: RobustWindow(capacity: settings.robustWindow), count: tags)
        measure("robust window (median, IQR) every sample") { n in
            var sum = 0.0
            for i in 0..<n {
                let t = i % tags
                sum += windows[t].quantile(0.75) - windows[t].quantile(0.25) + windows[t].median
                windows[t].append(values[i & 4095])
            }
            return sum
        }
        var cusums = [CUSUM](repeating: CUSUM(), count: tags)
        measure("two-sided CUSUM") { n in
            var sum = 0.0
            for i in 0..<n { sum += cusums[i % tags].update(values[i & 4095] - 350) }
            return sum
        }
        var trends = [TrendDetector](repeating: TrendDetector(blockSize: settings.trendBlock, windowBlocks: settings.trendWindow), count: tags)
        var scratch: [Double] = []
        // Sample clocks continue across repetitions: time never goes backwards for a detector.
        var clock = 0
        measure("trend (Mann–Kendall on block means, Holt)") { n in
            var sum = 0.0
            defer { clock += n }
            for i in 0..<n {
                if let r = trends[i % tags].update(values[i & 4095], time: Int64(clock + i) * 1000, alpha: settings.trendAlpha, scratch: &scratch) {
                    sum += r.pValue
                }
            }
            return sum
        }
        var anomalies = [AnomalyDetector](repeating: AnomalyDetector(settings: settings), count: tags)
        measure("anomaly score (spike + novelty + likelihood + CUSUM)") { n in
            var sum = 0.0
            for i in 0..<n { sum += anomalies[i % tags].update(values[i & 4095], settings: settings).score }
            return sum
        }
        var info = TagInfo(unit: "degC", limits: .init(lolo: 330, lo: 340, hi: 365, hihi: 370, deadband: 1))
        info.maxRatePerMinute = 1000
        var detectors = [TagDetector](repeating: TagDetector(settings: settings, info: info, isMarket: false), count: tags)
        var changes: [ConditionChange] = []
        clock = 0
        measure("all univariate detectors of a tag (TagDetector)") { n in
            var sum = 0.0
            defer { clock += n }
            for i in 0..<n {
                changes.removeAll(keepingCapacity: true)
                sum += detectors[i % tags].ingest(
                    values[i & 4095], time: Int64((clock + i) / tags) * 1000, quality: .good, settings: settings, scratch: &scratch, into: &changes)
            }
            return sum
        }
        var map = TopicMap()
        for t in 0..<tags { map.tags["r1/cdu/cdu1/T\(t)"] = info }
        // The same, with every tag both suppressed by design by the next one and suppressing the
        // one before (a test that never holds): the most the alert stage's suppress_when costs.
        var suppressing = map
        for t in 0..<tags {
            suppressing.suppressions["r1/cdu/cdu1/T\(t)"] = SuppressWhen(tag: "r1/cdu/cdu1/T\((t + 1) % tags)", test: .below(-1e300))
        }
        // Topics and payloads each in one buffer, as a network buffer holds them: one array per
        // message would add a retain and release of each array per sample to the figure.
        let topics = Packed((0..<tags).map { Array("plant/r1/cdu/cdu1/T\($0)".utf8) })
        // One payload per step of every tag, timestamps rising across the warm-up and every
        // repetition (capped: beyond the cap the timestamps repeat and samples are refused as out of
        // order, which would flatter the figure — keep samples × repetitions / tags under it).
        let steps = min(1 << 18, (min(samples / 10, 100_000) + max(1, repetitions) * samples) / tags + 1)
        let payloads = Packed((0..<steps).map {
            Array("{\"ts\":\(1_700_000_000_000 + $0 * 1000),\"v\":\(values[$0 & 4095]),\"q\":\"good\"}".utf8)
        })
        // The orchestrator's clock just after the last payload's time: a clock behind the payloads
        // would refuse every sample as stamped in the future, and the case would time refusals.
        let now = Int64(1_700_000_000_000 + steps * 1000)
        for (name, topicMap) in [
            ("whole live path per sample (topic, JSON parse, all detectors, alerts)", map),
            ("whole live path, every tag in a suppress_when (both sides)", suppressing),
        ] {
            var config = OrchestratorConfig.defaults(topicMap: topicMap)
            config.detection = settings
            let pipeline = IngestPipeline(config: config, sinks: [], logger: .init(label: "bench"), clock: { now })
            clock = 0
            measure(name) { n in
                defer { clock += n }
                topics.bytes.withUnsafeBytes { topicBytes in
                    payloads.bytes.withUnsafeBytes { payloadBytes in
                        for i in 0..<n {
                            pipeline.handle(
                                topic: UnsafeRawBufferPointer(rebasing: topicBytes[topics.ranges[i % tags]]),
                                payload: UnsafeRawBufferPointer(rebasing: payloadBytes[payloads.ranges[((clock + i) / tags) % steps]]),
                                receivedAt: now)
                        }
                    }
                }
                return Double(pipeline.counters.samples)
            }
            rows[rows.count - 1].refused = pipeline.counters.totalRejected
        }
        if sink == .infinity { print(sink) }
        return rows
    }
}

/// Byte strings one after the other in one buffer.
private struct Packed {
    var bytes: [UInt8] = []
    var ranges: [Range<Int>] = []

    init(_ strings: [[UInt8]]) {
        for string in strings {
            self.ranges.append(self.bytes.count..<(self.bytes.count + string.count))
            self.bytes += string
        }
    }
}
