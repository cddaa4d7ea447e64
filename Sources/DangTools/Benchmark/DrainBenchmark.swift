import Foundation
import LibPQ
package import Logging
import Synchronization
package import OrchestratorCore

/// A big spool backlog drained into PostgreSQL while ingest goes on (`dang bench-record
/// --drain-mib N`): records per minute of the drain, and the longest time one live record's
/// enqueue waited — the ingest thread's stall, since it takes the spool's lock to append.
package enum DrainBenchmark {
    package struct Result: Sendable {
        package let backlogBytes: Int
        package let records: Int
        package let seconds: Double
        package let liveRecords: Int
        package let longestStall: Duration
        package let p999Stall: Duration
        package var perMinute: Double { Double(self.records) / self.seconds * 60 }
        package var longestStallMilliseconds: Double { Self.milliseconds(self.longestStall) }
        package var p999StallMilliseconds: Double { Self.milliseconds(self.p999Stall) }

        static func milliseconds(_ duration: Duration) -> Double { duration.timeInterval * 1000 }
    }

    package static func run(serverURL: String, mebibytes: Int, logger: Logger) async throws -> Result {
        let (name, url, admin) = try RecordBenchmark.scratchDatabase(serverURL: serverURL, prefix: "dang_drain")
        defer { try? admin.execute(script: "DROP DATABASE IF EXISTS \(name) WITH (FORCE)") }

        // The backlog: alert records, as an outage would leave them.
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-spool")
        defer { try? FileManager.default.removeItem(at: directory) }
        let target = mebibytes << 20
        var backlog = 0
        var records = 0
        do {
            let spool = try Spool(directory: directory, capacity: target + (64 << 20), fsync: .never)
            while spool.pendingBytes < target {
                let chunk = (0..<1000).map { _ in Record.alert(Self.alert()).payload() }
                try spool.append(chunk, sync: false)
                records += chunk.count
            }
            try spool.sync()
            backlog = spool.pendingBytes
        }

        var settings = DatabaseSettings()
        settings.url = url
        settings.spoolDirectory = directory.path
        settings.spoolCapacity = backlog + (256 << 20)
        let writer = RecordWriter(settings: settings, migrate: false, logger: logger)
        // Live records at about 2,000 a second from a thread of their own, each enqueue timed.
        let stalls = Mutex<[Duration]>([])
        let stop = Atomic<Bool>(false)
        let finished = Atomic<Bool>(false)
        let live = Thread {
            let clock = ContinuousClock()
            var times: [Duration] = []
            while !stop.load(ordering: .relaxed) {
                let event = Self.alert()
                let start = clock.now
                writer.deliver(event)
                times.append(clock.now - start)
                Thread.sleep(forTimeInterval: 0.0005)
            }
            stalls.withLock { $0 = times }
            finished.store(true, ordering: .releasing)
        }
        let start = ContinuousClock.now
        let running = Task { await writer.run() }
        live.start()
        while writer.counters.written < records { try await Task.sleep(for: .milliseconds(20)) }
        let seconds = RecordBenchmark.seconds(since: start)
        stop.store(true, ordering: .relaxed)
        while !finished.load(ordering: .acquiring) { try await Task.sleep(for: .milliseconds(5)) }
        writer.stop()
        await running.value
        let sorted = stalls.withLock { $0 }.sorted()
        return Result(
            backlogBytes: backlog, records: records, seconds: seconds, liveRecords: sorted.count, longestStall: sorted.last ?? .zero,
            p999Stall: sorted.isEmpty ? .zero : sorted[min(sorted.count - 1, sorted.count * 999 / 1000)])
    }

    private static func alert() -> AlertEvent {
        AlertEvent(
            alertID: UUID(), state: .raised, severity: .warning, kind: .limit, tag: "r1/cdu/cdu1/TI-101", topic: "plant/r1/cdu/cdu1/TI-101",
            timestamp: 1_790_000_000_000, raisedAt: 1_790_000_000_000, clearedAt: nil, value: 372.5, score: 1,
            message: "r1/cdu/cdu1/TI-101 above HI 372 (372.5 degC)")
    }
}
