import ArgumentParser
import Foundation
import DangTools
import OrchestratorCore

/// `dang bench-detectors`: nanoseconds per sample of each detector and of the live path.
struct BenchDetectors: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-detectors",
        abstract: "Measure nanoseconds per sample of each detector and of the whole per-tag live path.")

    @Option(name: .long, help: "Samples per case.")
    var samples = 2_000_000
    @Option(name: .long, help: "Tags the samples are spread over.")
    var tags = 1000
    @Option(name: .long, help: "Repetitions of each case; the fastest and the median are reported.")
    var repetitions = 5

    func run() throws {
        #if DEBUG
        printError("note: a debug build; measure with `swift build -c release` and .build/release/dang")
        #endif
        let rows = DetectorBenchmark.run(samples: self.samples, tags: self.tags, repetitions: self.repetitions)
        let baseline = rows.first?.nanosecondsPerSample ?? 1
        print("detector".padding(toLength: 72, withPad: " ", startingAt: 0) + "  ns/sample (best, median)   × baseline")
        for row in rows {
            let name = row.name.padding(toLength: 72, withPad: " ", startingAt: 0)
            print(name + String(format: "  %9.1f %9.1f   %9.1f", row.nanosecondsPerSample, row.medianNanoseconds, row.nanosecondsPerSample / baseline))
            if row.refused > 0 { printError("warning: \(row.name): \(row.refused) samples refused; the figure times refusals") }
        }
    }
}
