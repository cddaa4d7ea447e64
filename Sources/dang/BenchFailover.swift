import ArgumentParser
import Foundation
import DangTools
import OrchestratorCore

/// `dang bench-failover`: takeover times and duplicates over repeated faults (docs/availability.md).
struct BenchFailover: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-failover",
        abstract: "Kill the active instance (or cut it from the database) mid-stream, over and over: takeover times, and what was raised, invoked or recorded twice, or lost.",
        discussion: """
            Starts a private mosquitto (and PostgreSQL unless --database-url or DATABASE_URL is given) and, \
            for each run and scenario, --instances `dang run` on the shipped configuration with ha.enabled. \
            Scenarios: kill (SIGKILL of the active), partition (its database connection blocked), database \
            (every instance's: the active must go on acting, isolated, and keep the lease), shard \
            (sharding.shards: 5; SIGKILL of the holder of a unit with an open alarm: its shards move). \
            Exits 1 if any run breaks a bound (takeover within 2 × the lease, every breach raised and \
            cleared once, every invocation attempt published once and recorded with its result, the \
            partitioned active's records fenced). See docs/availability.md.
            """)

    @Option(name: .long, help: "Runs of each scenario.")
    var runs = 3
    @Option(name: .long, help: "Instances sharing the broker and the database.")
    var instances = 3
    @Option(name: .long, help: "The lease (ha.lease), in seconds.")
    var lease = 3
    @Option(name: .long, parsing: .upToNextOption, help: "Scenarios: kill partition database shard (default: all).")
    var scenarios: [String] = []
    @Option(name: .long, help: "PostgreSQL server (default: DATABASE_URL, else a private server).")
    var databaseURL: String?
    @Option(name: .long, help: "The shipped configuration.")
    var config = "config/orchestrator.yaml"
    @Option(name: .long, help: "Where the JSON report goes.")
    var json = "bench-failover.json"

    func validate() throws {
        for scenario in self.scenarios where FailoverBenchmark.Scenario(rawValue: scenario) == nil {
            throw ValidationError("unknown scenario '\(scenario)': kill, partition, database or shard")
        }
        guard (1...1000).contains(self.runs) else { throw ValidationError("--runs must be 1…1000") }
        guard (2...8).contains(self.instances) else { throw ValidationError("--instances must be 2…8") }
        guard (1...60).contains(self.lease) else { throw ValidationError("--lease must be 1…60 seconds") }
    }

    func run() throws {
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var options = FailoverBenchmark.Options(executable: executable)
        options.runs = self.runs
        options.instances = self.instances
        options.lease = self.lease
        options.config = self.config
        if !self.scenarios.isEmpty { options.scenarios = self.scenarios.compactMap(FailoverBenchmark.Scenario.init(rawValue:)) }
        options.databaseURL = self.databaseURL ?? ProcessInfo.processInfo.environment["DATABASE_URL"].flatMap { $0.isEmpty ? nil : $0 }
        let report = try FailoverBenchmark.run(options) { printError($0) }

        print("scenario    runs   takeover ms (min / median / max)   raised twice   published twice   lost   fenced   violations")
        for scenario in options.scenarios {
            let runs = report.runs.filter { $0.scenario == scenario }
            let times = runs.map(\.takeoverMs).sorted()
            guard !times.isEmpty else { continue }
            let fenced = runs.compactMap(\.fenced)
            let takeover = times.first! < 0
                ? "none (the lease stays)".padding(toLength: 32, withPad: " ", startingAt: 0)
                : String(format: "%6d / %6d / %6d      ", times.first!, times[times.count / 2], times.last!)
            print(
                scenario.rawValue.padding(toLength: 10, withPad: " ", startingAt: 0)
                    + String(format: "  %4d   ", runs.count) + takeover
                    + String(format: "    %12d   %15d   %4d   ", runs.map(\.raisedTwice).reduce(0, +),
                        runs.map(\.publishedTwice).reduce(0, +), runs.map(\.lostFromRecord).reduce(0, +))
                    + (fenced.isEmpty ? "-" : "\(fenced.reduce(0, +))").padding(toLength: 6, withPad: " ", startingAt: 0)
                    + String(format: "   %10d", runs.filter { !$0.violations.isEmpty }.count))
        }
        print("bound: takeover within 2 × lease = \(self.lease * 2000) ms; \(self.instances) instances")
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(report).write(to: URL(fileURLWithPath: self.json))
        if report.runs.contains(where: { !$0.violations.isEmpty }) { throw ExitCode(1) }
    }
}
