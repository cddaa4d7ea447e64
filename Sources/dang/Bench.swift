import ArgumentParser
import Dispatch
import Foundation
import DangTools
import OrchestratorCore

/// `dang bench`: the orchestrator end to end against a private broker, against a bare subscriber.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure `dang run` end to end (ingest rate, alert latency, CPU, RSS, QoS 1 loss) against a bare subscriber, in one run.",
        discussion: """
            Starts a private mosquitto (and PostgreSQL unless --database-url or DATABASE_URL is given), \
            runs the built-in load generator against a bare libmosquitto subscriber (the baseline), then \
            against `dang run` as a child process. Prints a table and writes JSON. See docs/performance.md.
            """)

    @Option(name: .long, help: "Tags of the load (ingest, latency and QoS 1 phases).")
    var tags = 1000
    @Option(name: .long, help: "Seconds of load per phase.")
    var seconds = 5.0
    @Option(name: .long, parsing: .upToNextOption, help: "Paced rates (samples/s) of the latency phase.")
    var rates: [Double] = [10_000, 50_000]
    @Option(name: .customLong("qos1-rate"), help: "Samples/s of the QoS 1 phase.")
    var qos1Rate = 20_000.0
    @Option(name: .customLong("memory-tags"), help: "Tags of the memory phase.")
    var memoryTags = 10_000
    @Option(name: .customLong("memory-samples"), help: "Samples per tag in the memory phase (20: just started; 1100: every window full).")
    var memorySamples = 20
    @Option(
        name: .customLong("memory-history"),
        help: "Samples per tag kept for module invocations in the memory phase (detection.history; default: what the bench's module window needs, 16; the shipped configuration keeps 120).")
    var memoryHistory: Int?
    @Option(name: .long, parsing: .upToNextOption, help: "Phases to run: baseline ingest latency qos1 memory (default: all).")
    var phases: [String] = []
    @Option(name: .long, help: "PostgreSQL for the orchestrator (default: DATABASE_URL, else a private server).")
    var databaseURL: String?
    @Option(name: .long, help: "Where the JSON report goes.")
    var json = "bench-wire.json"

    @Flag(name: .customLong("without-decisions"), help: "Run dang without trigger rules: the alert path alone, no decision after it.")
    var withoutDecisions = false

    @Option(name: .long, help: "Console clients beside the ingest and latency phases (GET /events, re-reading the alarm view on each alert): what the console costs.")
    var consoleClients = 0

    func validate() throws {
        for phase in self.phases where WireBenchmark.Phase(rawValue: phase) == nil {
            throw ValidationError("unknown phase '\(phase)': one of \(WireBenchmark.Phase.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        if self.tags < 1 || self.memoryTags < 1 || self.memorySamples < 1 {
            throw ValidationError("--tags, --memory-tags and --memory-samples must be at least 1")
        }
        if let history = self.memoryHistory, !(0...100_000).contains(history) {
            throw ValidationError("--memory-history must be 0...100000")
        }
        if self.seconds <= 0 { throw ValidationError("--seconds must be positive") }
        if !(0...64).contains(self.consoleClients) { throw ValidationError("--console-clients must be 0...64") }
    }

    func run() throws {
        #if DEBUG
        printError("note: a debug build; measure with `swift build -c release` and .build/release/dang")
        #endif
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var options = WireBenchmark.Options(executable: executable)
        options.tags = self.tags
        options.seconds = self.seconds
        options.latencyRates = self.rates
        options.qos1Rate = self.qos1Rate
        options.memoryTags = self.memoryTags
        options.memorySamples = self.memorySamples
        options.memoryHistory = self.memoryHistory
        options.decisions = !self.withoutDecisions
        options.consoleClients = self.consoleClients
        options.databaseURL = self.databaseURL ?? ProcessInfo.processInfo.environment["DATABASE_URL"].flatMap { $0.isEmpty ? nil : $0 }
        if !self.phases.isEmpty { options.phases = Set(self.phases.compactMap(WireBenchmark.Phase.init(rawValue:))) }
        // Interrupted: stop the private broker and database before going (children of ours in the
        // same process group get the terminal's SIGINT too; PostgreSQL, started by pg_ctl, does not).
        var sources: [any DispatchSourceSignal] = []
        for number in [SIGINT, SIGTERM] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                printError("interrupted: stopping the benchmark's broker and database")
                BenchServers.stopRunning()
                Foundation.exit(130)
            }
            source.resume()
            sources.append(source)
        }
        defer { sources.forEach { $0.cancel() } }
        let started = Date()
        let rows = try WireBenchmark(options: options) { line in printError(line) }.run()
        print("")
        for row in rows {
            print(row.name.padding(toLength: 16, withPad: " ", startingAt: 0) + row.text)
        }
        var report: [String: Any] = [
            "started_at": started.formatted(.iso8601), "version": DangVersion.current,
            "options": ["tags": self.tags, "seconds": self.seconds, "rates": self.rates, "qos1_rate": self.qos1Rate, "memory_tags": self.memoryTags, "memory_samples": self.memorySamples, "memory_history": self.memoryHistory.map { $0 as Any } ?? NSNull(), "console_clients": self.consoleClients],
        ]
        for row in rows {
            report[row.name] = Dictionary(row.values.map { ($0.0, $0.1.isFinite ? $0.1 as Any : NSNull()) }, uniquingKeysWith: { a, _ in a })
        }
        let data = try JSONSerialization.data(withJSONObject: report, options: [.prettyPrinted, .sortedKeys])
        try data.write(to: URL(fileURLWithPath: self.json))
        print("\nJSON: \(self.json)")
    }
}

/// `dang bench-subscriber`: the bare subscriber `dang bench` measures its baseline with.
struct BenchSubscriber: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-subscriber", abstract: "The baseline subscriber of `dang bench` (started by it).", shouldDisplay: false)

    @Option(name: .long, help: "Broker port on 127.0.0.1.")
    var port: Int
    @Option(name: .long, help: "File the counts are written to.")
    var report: String

    func run() throws {
        try BareSubscriber.run(port: self.port, report: self.report)
    }
}
