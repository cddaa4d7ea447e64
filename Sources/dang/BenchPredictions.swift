import ArgumentParser
import Foundation
import Logging
import DangTools
import OrchestratorCore

/// `dang bench-predictions`: lead time and false predictions of `predicted_limit` advisories.
struct BenchPredictions: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-predictions",
        abstract: "Measure how far ahead predicted_limit advisories come and how often they are wrong, on the simulator's drifts and on Tennessee Eastman.")

    @OptionGroup var configOptions: ConfigOptions
    @Option(name: .long, help: "Seeds per drift scenario.")
    var seeds: Int = 2
    @Option(name: .long, help: "A directory of the Tennessee Eastman .dat files (d00.dat, dNN_te.dat), e.g. ../shared/data/tep-dev.")
    var tep: String?
    @Option(name: .long, help: "Tennessee Eastman limits: the normal run's mean ± this many σ.")
    var limitSigmas: Double = 4
    @Option(name: .long, help: "Override detection.prediction.horizon (a duration: 30m, 4h).")
    var horizon: String?
    @Flag(name: .long, help: "Print one JSON object instead of a table.")
    var json = false

    func run() throws {
        var config = try self.configOptions.load(logger: makeLogger(level: .warning))
        if let text = self.horizon {
            guard let horizon = Duration(configText: text), horizon > .zero else { throw ValidationError("--horizon: expected a duration such as 30m or 4h") }
            config.detection.predictionHorizon = horizon
        }
        var results: [(String, PredictionBenchmark.Outcome)] = [
            ("simulator drifts", PredictionBenchmark.simulator(config: config, seeds: (1...max(1, self.seeds)).map { UInt64($0) }))
        ]
        if let tep = self.tep {
            do {
                let (faults, normal) = try PredictionBenchmark.tennesseeEastman(config: config, directory: tep, limitSigmas: self.limitSigmas)
                results.append(("Tennessee Eastman, faults", faults))
                results.append(("Tennessee Eastman, normal (d00_te)", normal))
            } catch {
                printError("bench-predictions: \(tep): \(error)")
                throw ExitCode(1)
            }
        }
        if self.json {
            try printJSON(Dictionary(uniqueKeysWithValues: results.map { ($0.0, $0.1) }))
            return
        }
        print("data                                 alarms  predicted  median lead  predictions  false  false per 1000 tag-h")
        for (name, o) in results {
            let share = o.alarms == 0 ? 0 : Double(o.predicted) / Double(o.alarms) * 100
            let rate = o.tagHours == 0 ? 0 : Double(o.falsePredictions) / o.tagHours * 1000
            print(
                name.padding(toLength: 36, withPad: " ", startingAt: 0)
                    + String(format: " %6d  %4d (%3.0f%%)  %8.1f min  %11d  %5d  %20.2f", o.alarms, o.predicted, share, o.medianLead, o.predictions, o.falsePredictions, rate))
        }
    }
}
