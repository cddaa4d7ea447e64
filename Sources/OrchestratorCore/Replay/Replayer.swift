import Foundation

/// `dang replay` (docs/detection.md, "Offline replay"): feeds a CSV through the same
/// ``DetectionEngine`` as the live path, one row at a time and never looking ahead, and writes
/// `timestamp,anomaly_score,alarm` per row; `alarm` is 1 while an alert of severity warning or
/// critical is open (advisories at `info` do not count).
package struct Replayer: Sendable {
    package let config: OrchestratorConfig
    /// Add one `score:<tag>` column per tag.
    package var tagScores = false

    package init(config: OrchestratorConfig) {
        self.config = config
    }

    /// What one replay produced, besides the output file.
    package struct Summary: Sendable, Equatable {
        package var rows = 0
        package var alarmedRows = 0
        package var alertsRaised = 0
        /// Alerts raised, by kind.
        package var raisedByKind: [AlertKind: Int] = [:]
    }

    /// Replays `input` (after warming up on `train`, when given) and returns the output CSV text.
    package func run(input: ReplayTable, train: ReplayTable?) throws(ReplayTable.Problem) -> (csv: String, summary: Summary) {
        var engine = DetectionEngine(settings: self.config.detection, topicMap: self.config.topicMap)
        var slots: [Int32] = []
        for tag in input.tags {
            guard let slot = engine.slot(for: tag) else {
                throw ReplayTable.Problem(
                    file: input.file, line: 1, field: tag, message: "more columns than detection.max_tags allows")
            }
            slots.append(slot)
        }
        var alerts = AlertBook()
        var events: [AlertEvent] = []
        var offset: Int64 = 0
        if let train {
            guard train.tags == input.tags else {
                throw ReplayTable.Problem(
                    file: train.file, line: 1, field: "header", message: "the training file's columns differ from \(input.file)'s")
            }
            _ = engine.addUnit(name: "replay", slots: slots)
            engine.beginTraining()
            var scratch = [Double](repeating: 0, count: train.tags.count)
            for row in train.values.indices {
                self.feed(row: row, of: train, slots: slots, engine: &engine, alerts: &alerts, events: &events, scores: &scratch, offset: 0)
            }
            engine.endTraining()
            // The input is a separate run: shift its clock to continue after the baseline's, so
            // the detectors do not see time going backwards.
            if let lastTrain = train.times.last, let firstInput = input.times.first, firstInput <= lastTrain {
                let step = train.times.count > 1 ? max(1, (lastTrain - train.times[0]) / Int64(train.times.count - 1)) : 1000
                offset = lastTrain + step - firstInput
            }
        }

        var summary = Summary()
        var csv = "timestamp,anomaly_score,alarm"
        if self.tagScores {
            for tag in input.tags { csv += ",score:\(tag)" }
        }
        csv += "\n"
        var scores = [Double](repeating: 0, count: input.tags.count)
        for row in input.values.indices {
            events.removeAll(keepingCapacity: true)
            self.feed(row: row, of: input, slots: slots, engine: &engine, alerts: &alerts, events: &events, scores: &scores, offset: offset)
            let rowScore = max(scores.max() ?? 0, engine.lastUnitScore)
            // An alarm asks an operator to act: warning or critical (SPEC §5). Advisories do not count.
            let alarm = alerts.openAlarmCount > 0
            summary.rows += 1
            if alarm { summary.alarmedRows += 1 }
            for event in events where event.state == .raised {
                summary.alertsRaised += 1
                summary.raisedByKind[event.kind, default: 0] += 1
            }
            csv += "\(input.timestamps[row]),\(Self.format(rowScore)),\(alarm ? 1 : 0)"
            if self.tagScores {
                for score in scores { csv += ",\(Self.format(score))" }
            }
            csv += "\n"
        }
        return (csv, summary)
    }

    private func feed(
        row: Int, of table: ReplayTable, slots: [Int32], engine: inout DetectionEngine, alerts: inout AlertBook,
        events: inout [AlertEvent], scores: inout [Double], offset: Int64
    ) {
        var conditions: [ConditionEvent] = []
        defer { alerts.apply(&conditions, into: &events) }
        let time = table.times[row] + offset
        for (column, value) in table.values[row].enumerated() {
            guard let value else {
                scores[column] = 0
                continue
            }
            let score = engine.ingest(
                slot: slots[column], value: value, quality: .good, sampleTime: time, topic: table.tags[column], now: time,
                into: &conditions)
            scores[column] = score
        }
        engine.evaluateUnits(at: time, into: &conditions)
    }

    static func format(_ score: Double) -> String {
        guard score.isFinite else { return "0" }
        let clamped = min(1, max(0, score))
        return String(format: "%.6f", clamped)
    }
}
