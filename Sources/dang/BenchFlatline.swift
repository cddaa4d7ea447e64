import ArgumentParser
import Foundation
import Logging
import DangTools
import OrchestratorCore

/// `dang bench-flatline`: false flatlines and time to flag an injected freeze, for the learned flatline.
struct BenchFlatline: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-flatline",
        abstract: "Measure the learned flatline: false flags on real series, and how soon injected freezes are flagged.")

    @OptionGroup var configOptions: ConfigOptions
    @Option(name: .long, help: "A directory of replay CSVs (e.g. the NAB series converted by ../shared/tools/to_replay_csv.py nab).")
    var csv: String?
    @Option(name: .long, help: "A directory of the Tennessee Eastman .dat files (d00.dat, dNN_te.dat).")
    var tep: String?
    @Flag(name: .long, help: "Print one JSON object instead of a table.")
    var json = false

    func run() throws {
        let config = try self.configOptions.load(logger: makeLogger(level: .warning))
        var results: [(String, FlatlineBenchmark.Outcome)] = []
        do {
            if let csv = self.csv { results.append(("replay CSVs (\(csv))", try FlatlineBenchmark.csvDirectory(csv, config: config))) }
            if let tep = self.tep { results.append(("Tennessee Eastman test runs", try FlatlineBenchmark.tennesseeEastman(tep, config: config))) }
        } catch {
            printError("bench-flatline: \(error)")
            throw ExitCode(1)
        }
        guard !results.isEmpty else { throw ValidationError("give --csv DIR, --tep DIR or both") }
        if self.json {
            try printJSON(Dictionary(uniqueKeysWithValues: results))
            return
        }
        print("data                                          series  samples  false flatlines (series)  freezes  flagged  median samples to flag")
        for (name, o) in results {
            print(
                name.padding(toLength: 44, withPad: " ", startingAt: 0)
                    + String(format: " %7d %8d  %8d (%4d)  %15d  %7d  %10d", o.series, o.samples, o.falseFlatlines, o.seriesWithFalseFlatlines, o.freezes, o.flagged, o.medianSamplesToFlag))
            if o.constantSeries > 0 { print("  (\(o.constantSeries) freezes not injected: the series was constant before the freeze point)") }
        }
    }
}
