import Foundation
import LibPQ
package import Logging
package import OrchestratorCore

/// Records per minute written to PostgreSQL: one row per INSERT (the baseline), the record writer's
/// batches, and the spool's replay — in one run, against a scratch database created on the given
/// server and dropped afterwards (`dang bench-record`).
package enum RecordBenchmark {
    package struct Row: Sendable {
        package let name: String
        package let records: Int
        package let seconds: Double
        package var perMinute: Double { Double(self.records) / self.seconds * 60 }
    }

    package struct Failure: Error, CustomStringConvertible {
        package let description: String
    }

    /// A migrated scratch database on the server of `serverURL`: its name and URL, and the admin
    /// connection that drops it (`DROP DATABASE … WITH (FORCE)` when the caller is done).
    static func scratchDatabase(serverURL: String, prefix: String) throws -> (name: String, url: String, admin: PostgresConnection) {
        guard var components = URLComponents(string: serverURL), components.scheme?.hasPrefix("postgres") == true else {
            throw Failure(description: "--database-url must be a postgres:// URL (the benchmark creates its own database there)")
        }
        let name = "\(prefix)_\(UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(12))"
        let admin = try PostgresConnection(conninfo: serverURL)
        // The name is generated here from hex digits only; identifiers cannot be bound.
        try admin.execute(script: "CREATE DATABASE \(name)")
        components.path = "/\(name)"
        let url = components.string!
        try Migrations.apply(on: PostgresConnection(conninfo: url))
        return (name, url, admin)
    }

    package static func run(serverURL: String, records: Int, logger: Logger) async throws -> [Row] {
        let (name, url, admin) = try Self.scratchDatabase(serverURL: serverURL, prefix: "dang_bench")
        defer { try? admin.execute(script: "DROP DATABASE IF EXISTS \(name) WITH (FORCE)") }
        let connection = try PostgresConnection(conninfo: url)

        func decisions(_ count: Int) -> [DecisionRecord] {
            (0..<count).map { i in
                DecisionRecord(
                    decisionID: UUID(), ts: 1_790_000_000_000 + Int64(i), module: "forecasting", action: "invoke", source: "rules",
                    trigger: #"{"kind":"equipment","tag":"r1/cdu/cdu1/TI-101"}"#,
                    reasons: #"[{"step":"data_quality","ok":true},{"step":"cooldown","ok":true}]"#, confidence: 0.93,
                    latencyMicroseconds: 180)
            }
        }
        var rows: [Row] = []

        // Baseline: one INSERT per record, autocommit, prepared by libpq each time.
        let single = decisions(max(1000, records / 10))
        var start = ContinuousClock.now
        for d in single {
            try connection.query(
                """
                INSERT INTO decisions (decision_id, ts, module, action, source, trigger, reasons, confidence, latency_us)
                VALUES ($1, to_timestamp($2::double precision / 1000), $3, $4, $5, $6::jsonb, $7::jsonb, $8, $9)
                """,
                [
                    d.decisionID.uuidString.lowercased(), d.ts, d.module, d.action, d.source, d.trigger, d.reasons, d.confidence,
                    d.latencyMicroseconds,
                ])
        }
        rows.append(Row(name: "baseline: one INSERT per record", records: single.count, seconds: Self.seconds(since: start)))

        // The record writer: batches of 500 in one multi-row statement each.
        var settings = DatabaseSettings()
        settings.url = url
        settings.spoolDirectory = FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-spool").path
        defer { try? FileManager.default.removeItem(atPath: settings.spoolDirectory) }
        settings.queueCapacity = records * 2
        let writer = RecordWriter(settings: settings, migrate: false, logger: logger)
        let running = Task { await writer.run() }
        let batch = decisions(records)
        start = ContinuousClock.now
        for d in batch { writer.deliver(decision: d) }
        while writer.counters.written < records { try await Task.sleep(for: .milliseconds(5)) }
        rows.append(Row(name: "record writer (batched, one statement per batch)", records: records, seconds: Self.seconds(since: start)))
        writer.stop()
        await running.value

        // The spool: append while the database is away, then replay.
        let spool = try Spool(directory: URL(fileURLWithPath: settings.spoolDirectory + "-direct"), capacity: 1 << 34, fsync: .batch)
        defer { try? FileManager.default.removeItem(atPath: settings.spoolDirectory + "-direct") }
        let spooled = decisions(records).map { Record.decision($0) }
        start = ContinuousClock.now
        var index = 0
        while index < spooled.count {
            let chunk = spooled[index..<min(index + settings.batchSize, spooled.count)]
            try spool.append(chunk.map { $0.payload() })
            index += chunk.count
        }
        rows.append(Row(name: "spool append (fsync per batch of 500)", records: records, seconds: Self.seconds(since: start)))
        start = ContinuousClock.now
        var replayed = 0
        while spool.hasPending {
            let (payloads, next) = try spool.read(limit: settings.batchSize)
            let records = payloads.compactMap { Record(payload: $0) }
            try Record.write(records, on: connection)
            try spool.markReplayed(upTo: next)
            replayed += records.count
        }
        rows.append(Row(name: "spool replay into PostgreSQL", records: replayed, seconds: Self.seconds(since: start)))
        return rows
    }

    static func seconds(since start: ContinuousClock.Instant) -> Double {
        let elapsed = ContinuousClock.now - start
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }
}
