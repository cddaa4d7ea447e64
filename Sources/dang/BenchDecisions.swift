import ArgumentParser
import Foundation
import DangTools
import OrchestratorCore

/// `dang bench-decisions`: event-to-invocation latency and decisions per second.
struct BenchDecisions: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-decisions",
        abstract: "Measure sample-to-invocation latency and decisions per second (in-process, no LLM).")

    @Option(name: .long, help: "Tags, each breaching its limit once (one decision and invocation each).")
    var tags = 2000

    func run() throws {
        #if DEBUG
        printError("note: a debug build; measure with `swift build -c release` and .build/release/dang")
        #endif
        let report = DecisionBenchmark.run(tags: self.tags)
        func line(_ name: String, _ values: [Double]) {
            print(
                name.padding(toLength: 58, withPad: " ", startingAt: 0)
                    + String(
                        format: "%8.1f %8.1f %8.1f %8.1f", report.percentile(0.5, of: values), report.percentile(0.99, of: values),
                        report.percentile(0.999, of: values), values.max() ?? .nan))
        }
        print("latency, µs".padding(toLength: 58, withPad: " ", startingAt: 0) + "     p50      p99    p99.9      max")
        line("sample in → invocation published (detect + decide + act)", report.latencies)
        line("decision alone (decisions.latency_us)", report.decisionLatencies)
        print("")
        print(String(format: "baseline: samples ingested without decisions   %10.0f /s", report.baselineSamplePerSecond))
        print(String(format: "breaches decided and invoked                    %10.0f /s", report.invokePerSecond))
        print(String(format: "breaches decided and skipped (deduplicated)     %10.0f /s", report.skipPerSecond))
        print("invocations measured: \(report.latencies.count) of \(self.tags)")
    }
}
