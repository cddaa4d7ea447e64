import Foundation
package import OrchestratorCore

/// `dang bench-predictions`: how far ahead `predicted_limit` advisories come, and how often they are
/// wrong (docs/decisions.md, "Predictive orchestration"). The detectors and the alert stage are the
/// live ones (``DetectionEngine``, ``AlertBook``), fed as `dang replay` feeds them.
///
/// - **Simulator drifts**: every tag of the topic map with a HI limit drifts, in turn, from its normal
///   value across HI (reached 10, 20, 40 or 60 minutes after the drift starts), one sample a second,
///   after 15 minutes of normal operation, with the other tags steady.
/// - **Tennessee Eastman** (`--tep DIR`, the Braatz `.dat` files): limits at the normal training run's
///   mean ± `limitSigmas` σ per variable; `d00.dat` first, then each test run (fault from row 161).
///
/// A prediction is *early* when its tag's limit alarm (the predicted side) follows it, *false* when
/// the tag does not cross that limit within `clear_factor` × the horizon after it.
package enum PredictionBenchmark {
    package struct Outcome: Sendable, Encodable {
        /// Limit alarms (the first of each drift, or of each TEP variable after the fault).
        package var alarms = 0
        /// Of them, preceded by a prediction of that limit's side.
        package var predicted = 0
        /// Minutes between the prediction and the alarm, for each predicted alarm.
        package var leadMinutes: [Double] = []
        package var predictions = 0
        package var falsePredictions = 0
        /// Hours of tag data watched, for a rate of false predictions.
        package var tagHours = 0.0

        package var medianLead: Double { self.leadMinutes.quantile(0.5) ?? 0 }

        enum CodingKeys: String, CodingKey {
            case alarms, predicted, predictions, tagHours = "tag_hours"
            case falsePredictions = "false_predictions", medianLead = "median_lead_minutes"
        }

        package func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(self.alarms, forKey: .alarms)
            try c.encode(self.predicted, forKey: .predicted)
            try c.encode(self.predictions, forKey: .predictions)
            try c.encode(self.falsePredictions, forKey: .falsePredictions)
            try c.encode((self.tagHours * 10).rounded() / 10, forKey: .tagHours)
            try c.encode((self.medianLead * 10).rounded() / 10, forKey: .medianLead)
        }
    }

    /// One raised alert: when, on which tag, which condition.
    struct Raised {
        let time: Int64
        let tag: String
        let condition: AlertCondition
    }

    /// Feeds rows of values (one column per tag, `nil`: no sample) and returns the raised alerts.
    static func replay(
        config: OrchestratorConfig, tags: [String], rows: some Sequence<(time: Int64, values: [Double?])>
    ) -> [Raised] {
        var engine = DetectionEngine(settings: config.detection, topicMap: config.topicMap)
        let slots = tags.map { engine.slot(for: $0)! }
        var book = AlertBook()
        var conditions: [ConditionEvent] = []
        var events: [AlertEvent] = []
        var raised: [Raised] = []
        for row in rows {
            for (column, value) in row.values.enumerated() {
                guard let value else { continue }
                _ = engine.ingest(
                    slot: slots[column], value: value, quality: .good, sampleTime: row.time, topic: tags[column], now: row.time,
                    into: &conditions)
            }
            book.apply(&conditions, into: &events)
            for event in events where event.state == .raised {
                if let condition = event.condition { raised.append(Raised(time: event.timestamp, tag: event.tag, condition: condition)) }
            }
            events.removeAll(keepingCapacity: true)
        }
        return raised
    }

    /// Scores the raised alerts of one run. `from`: alarms before it are not counted (the fault's
    /// onset); predictions before it count as false unless a crossing follows.
    /// `alarmTags`: the tags whose alarms are scored (nil: every tag).
    /// `end`: the data's last time; a prediction whose `hold` reaches past it, not followed by its
    /// crossing, cannot be judged and is not counted.
    static func score(
        _ raised: [Raised], from: Int64, end: Int64, hold: Int64, alarmTags: Set<String>? = nil, into outcome: inout Outcome
    ) {
        let limits = raised.filter { [.limitHigh, .limitHighHigh, .limitLow, .limitLowLow].contains($0.condition) }
        for prediction in raised where prediction.condition == .predictedHigh || prediction.condition == .predictedLow {
            outcome.predictions += 1
            let side: [AlertCondition] = prediction.condition == .predictedHigh ? [.limitHigh, .limitHighHigh] : [.limitLow, .limitLowLow]
            let followed = limits.contains {
                $0.tag == prediction.tag && side.contains($0.condition) && $0.time >= prediction.time && $0.time - prediction.time <= hold
            }
            if followed { continue }
            if prediction.time + hold > end {
                outcome.predictions -= 1
                continue
            }
            outcome.falsePredictions += 1
        }
        var seen: Set<String> = []
        for alarm in limits where alarm.time >= from && (alarmTags?.contains(alarm.tag) ?? true) && seen.insert(alarm.tag).inserted {
            outcome.alarms += 1
            let high = alarm.condition == .limitHigh || alarm.condition == .limitHighHigh
            let prediction = raised.first {
                $0.tag == alarm.tag && $0.condition == (high ? .predictedHigh : .predictedLow) && $0.time <= alarm.time
                    && alarm.time - $0.time <= hold
            }
            if let prediction {
                outcome.predicted += 1
                outcome.leadMinutes.append(Double(alarm.time - prediction.time) / 60_000)
            }
        }
    }

    /// The simulator's drift scenarios with the configuration's topic map.
    package static func simulator(config: OrchestratorConfig, seeds: [UInt64], crossMinutes: [Double] = [10, 20, 40, 60]) -> Outcome {
        var outcome = Outcome()
        let hold = Int64(Double(config.detection.predictionHorizon.milliseconds) * config.detection.predictionClearFactor)
        let drifting = config.topicMap.tags.filter { !$0.key.hasPrefix("market/") && $0.value.limits.hi != nil }.keys.sorted()
        let warm = 900.0
        for tag in drifting {
            let limits = config.topicMap.tags[tag]!.limits
            guard let hi = limits.hi else { continue }
            let (nominal, _, upset) = PlantSimulator.levels(limits)
            for minutes in crossMinutes {
                for seed in seeds {
                    // The ramp that reaches HI `minutes` after it starts.
                    let duration = minutes * 60 * (upset - nominal) / (hi - nominal)
                    var scenario = PlantSimulator.Scenario()
                    scenario.rate = 1
                    scenario.upsetAfter = .infinity
                    scenario.seed = seed
                    scenario.drift = PlantSimulator.Drift(tag: tag, after: warm, duration: duration)
                    var simulator = PlantSimulator(map: config.topicMap, scenario: scenario)
                    let seconds = Int(warm + minutes * 60 + 300)
                    let start: Int64 = 1_700_000_000_000
                    var tags: [String] = []
                    var rows: [(time: Int64, values: [Double?])] = []
                    rows.reserveCapacity(seconds)
                    for second in 0..<seconds {
                        let time = start + Int64(second) * 1000
                        let messages = simulator.tick(elapsed: Double(second), epochMilliseconds: time)
                        if tags.isEmpty { tags = messages.map { Self.tag(of: $0.topic) } }
                        rows.append((time, messages.map { Self.value(of: $0.payload) }))
                    }
                    let raised = Self.replay(config: config, tags: tags, rows: rows)
                    // Only the drifting tag's alarm is scored as an alarm; every prediction is scored.
                    Self.score(
                        raised, from: start + Int64(warm * 1000), end: start + Int64(seconds - 1) * 1000, hold: hold, alarmTags: [tag],
                        into: &outcome)
                    outcome.tagHours += Double(tags.filter { !$0.hasPrefix("market/") }.count) * Double(seconds) / 3600
                }
            }
        }
        return outcome
    }

    /// The Tennessee Eastman runs of a Braatz data directory (`d00.dat`, `dNN_te.dat`).
    package static func tennesseeEastman(config base: OrchestratorConfig, directory: String, limitSigmas: Double = 4) throws -> (faults: Outcome, normal: Outcome) {
        let training = try Self.dat(directory + "/d00.dat", transposed: true)
        let columns = training.first?.count ?? 0
        let tags = (1...columns).map { $0 <= 41 ? "tep/xmeas_\($0)" : "tep/xmv_\($0 - 41)" }
        var config = base
        var map = TopicMap()
        for (column, tag) in tags.enumerated() {
            let values = training.map { $0[column] }
            let mean = values.reduce(0, +) / Double(values.count)
            let sd = (values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(max(1, values.count - 1))).squareRoot()
            guard sd > 0 else { continue }
            var info = TagInfo()
            info.limits = TagInfo.Limits(lo: mean - limitSigmas * sd, hi: mean + limitSigmas * sd, deadband: sd * 0.1)
            map.tags[tag] = info
        }
        config.topicMap = map
        let hold = Int64(Double(config.detection.predictionHorizon.milliseconds) * config.detection.predictionClearFactor)
        let step: Int64 = 180_000
        var faults = Outcome()
        var normal = Outcome()
        let runs = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix("_te.dat") }.sorted()
        for run in runs {
            let test = try Self.dat(directory + "/" + run, transposed: false)
            let start: Int64 = 1_700_000_000_000
            var rows: [(time: Int64, values: [Double?])] = []
            for (index, row) in (training + test).enumerated() { rows.append((start + Int64(index) * step, row.map { $0 })) }
            let raised = Self.replay(config: config, tags: tags, rows: rows)
            let testStart = start + Int64(training.count) * step
            let isNormal = run == "d00_te.dat"
            // Faults switch on after 160 test samples (8 h); the normal test run has none.
            let onset = isNormal ? Int64.max : testStart + 160 * step
            let counted = raised.filter { $0.time >= testStart }
            let end = start + Int64(rows.count - 1) * step
            if isNormal {
                Self.score(counted, from: onset, end: end, hold: hold, into: &normal)
                normal.tagHours += Double(tags.count) * Double(test.count) * 0.05
            } else {
                Self.score(counted, from: onset, end: end, hold: hold, into: &faults)
                faults.tagHours += Double(tags.count) * Double(test.count) * 0.05
            }
        }
        return (faults, normal)
    }

    static func dat(_ path: String, transposed: Bool) throws -> [[Double]] {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let rows = text.split(whereSeparator: \.isNewline).map { $0.split(separator: " ").compactMap { Double($0) } }.filter { !$0.isEmpty }
        guard transposed, let width = rows.first?.count else { return rows }
        return (0..<width).map { column in rows.map { $0[column] } }
    }

    static func tag(of topic: String) -> String {
        topic.hasPrefix("plant/") ? String(topic.dropFirst("plant/".count)) : topic
    }

    static func value(of payload: String) -> Double? {
        JSONValue(parsing: Array(payload.utf8))?["v"]?.number
    }
}
