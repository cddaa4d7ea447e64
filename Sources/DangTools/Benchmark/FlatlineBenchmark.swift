import Foundation
package import OrchestratorCore

/// `dang bench-flatline`: the learned flatline (every tag without a topic-map `flatline`) on real
/// series: how often it flags data that is not stuck, and how soon it flags a freeze injected into
/// them (docs/detection.md, "Frozen sensors"). Detectors and alert stage as `dang replay` runs them.
package enum FlatlineBenchmark {
    package struct Outcome: Sendable, Encodable {
        /// Series (columns) watched.
        package var series = 0
        package var samples = 0
        /// Flatline alerts raised on the data as it is.
        package var falseFlatlines = 0
        /// Series with at least one.
        package var seriesWithFalseFlatlines = 0
        /// Freezes injected (the value held from a point on), and those flagged before they ended.
        package var freezes = 0
        package var flagged = 0
        /// Samples from the freeze's start to the flag, for each flagged one.
        package var samplesToFlag: [Int] = []
        /// Freezes on a series that never changed before the freeze (a constant: not to be flagged).
        package var constantSeries = 0

        package var medianSamplesToFlag: Int { self.samplesToFlag.quantile(0.5) ?? 0 }

        enum CodingKeys: String, CodingKey {
            case series, samples, freezes, flagged
            case falseFlatlines = "false_flatlines", seriesWithFalseFlatlines = "series_with_false_flatlines"
            case medianSamplesToFlag = "median_samples_to_flag", constantSeries = "constant_series"
        }

        package func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(self.series, forKey: .series)
            try c.encode(self.samples, forKey: .samples)
            try c.encode(self.falseFlatlines, forKey: .falseFlatlines)
            try c.encode(self.seriesWithFalseFlatlines, forKey: .seriesWithFalseFlatlines)
            try c.encode(self.freezes, forKey: .freezes)
            try c.encode(self.flagged, forKey: .flagged)
            try c.encode(self.medianSamplesToFlag, forKey: .medianSamplesToFlag)
            try c.encode(self.constantSeries, forKey: .constantSeries)
        }
    }

    /// One series: its times and values (nil: no sample).
    struct Series {
        let name: String
        let times: [Int64]
        let values: [Double?]
    }

    /// Scores the series as they are, then with a freeze of `freeze` samples injected at 40, 60
    /// and 80 % of each.
    static func measure(_ series: [Series], config: OrchestratorConfig, freeze: Int, into outcome: inout Outcome) {
        for s in series {
            outcome.series += 1
            outcome.samples += s.values.count
            let raised = PredictionBenchmark.replay(config: config, tags: [s.name], rows: zip(s.times, s.values).map { ($0, [$1]) })
            let flatlines = raised.filter { $0.condition == .flatline }.count
            outcome.falseFlatlines += flatlines
            if flatlines > 0 { outcome.seriesWithFalseFlatlines += 1 }
            for share in [0.4, 0.6, 0.8] {
                let start = Int(Double(s.values.count) * share)
                guard start > 0, start + freeze <= s.values.count, let held = s.values[..<start].last(where: { $0 != nil }) ?? nil else { continue }
                let before = s.values[..<start].compactMap { $0 }
                if Set(before).count == 1 {
                    outcome.constantSeries += 1
                    continue
                }
                var values = Array(s.values[..<(start + freeze)])
                for index in start..<(start + freeze) { values[index] = held }
                let frozen = PredictionBenchmark.replay(
                    config: config, tags: [s.name], rows: zip(s.times.prefix(start + freeze), values).map { ($0, [$1]) })
                outcome.freezes += 1
                let startTime = s.times[start]
                // The first flatline raised after the freeze began (one already open then is not this one's).
                if let flag = frozen.first(where: { $0.condition == .flatline && $0.time >= startTime }),
                    let index = s.times.firstIndex(of: flag.time)
                {
                    outcome.flagged += 1
                    outcome.samplesToFlag.append(index - start + 1)
                }
            }
        }
    }

    /// Every replay CSV under `directory` (one series per column), e.g. the NAB series converted by
    /// `../shared/tools/to_replay_csv.py nab`.
    package static func csvDirectory(_ directory: String, config: OrchestratorConfig, freeze: Int = 300) throws -> Outcome {
        var outcome = Outcome()
        guard let files = FileManager.default.enumerator(atPath: directory)?.compactMap({ $0 as? String }).filter({ $0.hasSuffix(".csv") }).sorted()
        else { return outcome }
        for file in files {
            let table = try ReplayTable.load(file: directory + "/" + file)
            let series = table.tags.indices.map { column in
                Series(name: "\(file)/\(table.tags[column])", times: table.times, values: table.values.map { $0[column] })
            }
            Self.measure(series, config: config, freeze: freeze, into: &outcome)
        }
        return outcome
    }

    /// The Tennessee Eastman runs of a Braatz directory, each variable its own series (3-minute samples).
    package static func tennesseeEastman(_ directory: String, config: OrchestratorConfig, freeze: Int = 100) throws -> Outcome {
        var outcome = Outcome()
        let runs = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix("_te.dat") }.sorted()
        for run in runs {
            let rows = try PredictionBenchmark.dat(directory + "/" + run, transposed: false)
            let width = rows.first?.count ?? 0
            let times = rows.indices.map { 1_700_000_000_000 + Int64($0) * 180_000 }
            let series = (0..<width).map { column in
                Series(name: "\(run)/\(column + 1)", times: times, values: rows.map { $0[column] })
            }
            Self.measure(series, config: config, freeze: freeze, into: &outcome)
        }
        return outcome
    }
}
