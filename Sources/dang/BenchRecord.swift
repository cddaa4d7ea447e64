import ArgumentParser
import Foundation
import Logging
import DangTools
import OrchestratorCore

/// `dang bench-record`: records per minute into PostgreSQL, batched and spooled, against one row per INSERT.
struct BenchRecord: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-record",
        abstract: "Measure records per minute written by the record writer and the spool, against one INSERT per row.")

    @Option(name: .long, help: "PostgreSQL server URL (or DATABASE_URL); a scratch database is created there and dropped.")
    var databaseURL: String?
    @Option(name: .long, help: "Records per case.")
    var records = 100_000
    @Option(name: .long, help: "Also drain a spool backlog of this many MiB (e.g. 1024) while live records arrive, timing each enqueue.")
    var drainMib = 0

    func validate() throws {
        guard (0...65_536).contains(self.drainMib) else { throw ValidationError("--drain-mib must be 0…65536") }
    }

    func run() async throws {
        guard let url = self.databaseURL ?? ProcessInfo.processInfo.environment["DATABASE_URL"] else {
            printError("give --database-url or DATABASE_URL")
            throw ExitCode(2)
        }
        let logger = makeLogger(level: .warning)
        let rows = try await RecordBenchmark.run(serverURL: url, records: self.records, logger: logger)
        let baseline = rows.first?.perMinute ?? 1
        print("case".padding(toLength: 52, withPad: " ", startingAt: 0) + "   records   seconds   records/min   × baseline")
        for row in rows {
            print(
                row.name.padding(toLength: 52, withPad: " ", startingAt: 0)
                    + String(format: "  %8d  %8.2f  %12.0f  %11.1f", row.records, row.seconds, row.perMinute, row.perMinute / baseline))
        }
        guard self.drainMib > 0 else { return }
        let drain = try await DrainBenchmark.run(serverURL: url, mebibytes: self.drainMib, logger: logger)
        print(
            String(
                format: "spool backlog drain: %.0f MiB, %d records in %.1f s = %.0f records/min (%.1f × baseline); "
                    + "%d live records meanwhile, longest enqueue %.1f ms, p99.9 %.2f ms",
                Double(drain.backlogBytes) / 1_048_576, drain.records, drain.seconds, drain.perMinute, drain.perMinute / baseline,
                drain.liveRecords, drain.longestStallMilliseconds, drain.p999StallMilliseconds))
    }
}
