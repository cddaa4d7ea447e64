import Foundation
import Logging
import Testing

@testable import OrchestratorCore

/// The spool when its disk or its neighbours misbehave (issue 16): one bad record loses only
/// itself, two processes cannot share it, a big backlog drains in linear time.
@Suite struct SpoolHardeningTests {
    func directory() -> URL {
        FileManager.default.temporaryDirectory.appendingPathComponent("dang-spool-hard-\(UUID().uuidString)")
    }

    func records(_ range: Range<Int>) -> [[UInt8]] { range.map { Array("record number \($0)".utf8) } }

    /// Where record `index` starts in a log holding ``records(_:)`` from 0.
    func offset(of index: Int) -> Int { self.records(0..<index).reduce(0) { $0 + Spool.recordHeader + $1.count } }

    func corrupt(_ dir: URL, generation: Int = 0, at offset: Int) throws {
        let url = dir.appendingPathComponent("spool-\(generation).log")
        var bytes = try [UInt8](Data(contentsOf: url))
        bytes[offset] ^= 0xFF
        try Data(bytes).write(to: url)
    }

    @Test func `a corrupt record in the middle is moved aside at open; the records after it are kept`() throws {
        let dir = self.directory()
        do {
            let spool = try Spool(directory: dir, capacity: 1 << 20, fsync: .never)
            try spool.append(self.records(0..<10))
        }
        try self.corrupt(dir, at: self.offset(of: 3) + Spool.recordHeader + 2)
        do {
            let spool = try Spool(directory: dir, capacity: 1 << 20, fsync: .never)
            #expect(spool.skippedAtOpen == Spool.recordHeader + self.records(3..<4)[0].count)
            #expect(try spool.read(limit: 100).payloads == self.records(0..<3) + self.records(4..<10))
            let aside = try Data(contentsOf: dir.appendingPathComponent("spool-0.corrupt"))
            #expect(aside.count == spool.skippedAtOpen)
            // Appends go on after the kept records, and the whole survives another reopen.
            try spool.append(self.records(10..<12))
        }
        let reopened = try Spool(directory: dir, capacity: 1 << 20, fsync: .never).read(limit: 100).payloads
        #expect(reopened == self.records(0..<3) + self.records(4..<12))
    }

    @Test func `a record corrupted while running is skipped to the next valid header, not everything behind it`() throws {
        let dir = self.directory()
        let spool = try Spool(directory: dir, capacity: 1 << 20, fsync: .never)
        try spool.append(self.records(0..<10))
        // A bad length this time: the header of record 5 promises far too much.
        try self.corrupt(dir, at: self.offset(of: 5) + 3)
        var read: [[UInt8]] = []
        for _ in 0..<5 {
            let (payloads, next) = try spool.read(limit: 100)
            read += payloads
            try spool.markReplayed(upTo: next)
            if !spool.hasPending { break }
        }
        #expect(read == self.records(0..<5) + self.records(6..<10))
        #expect(spool.skippedCorrupt == Spool.recordHeader + self.records(5..<6)[0].count)
    }

    @Test func `the spool says its format; an older spool without the file is read, a newer or unknown one refused untouched`() throws {
        let dir = self.directory()
        let format = dir.appendingPathComponent("spool.format")
        do {
            let spool = try Spool(directory: dir, capacity: 1 << 20, fsync: .never)
            try spool.append(self.records(0..<3))
        }
        #expect(try String(contentsOf: format, encoding: .utf8) == "dang-spool 1\n")
        // Written before the file existed: the same layout, read whole, and the file added.
        try FileManager.default.removeItem(at: format)
        #expect(try Spool(directory: dir, capacity: 1 << 20, fsync: .never).read(limit: 100).payloads == self.records(0..<3))
        #expect(try String(contentsOf: format, encoding: .utf8) == "dang-spool 1\n")
        // A newer dang's spool, or a file that is not a spool's: refused, nothing read or changed.
        let log = try Data(contentsOf: dir.appendingPathComponent("spool-0.log"))
        for (text, expected) in [("dang-spool 2\n", "format 2, written by a newer dang"), ("PK\u{3}\u{4} zip", "does not name a spool format")] {
            try Data(text.utf8).write(to: format)
            let error = #expect(throws: Spool.Problem.self) { try Spool(directory: dir, capacity: 1 << 20, fsync: .never) }
            #expect(error?.message.contains(expected) == true, "\(error?.message ?? "")")
            #expect(try Data(contentsOf: dir.appendingPathComponent("spool-0.log")) == log)
            #expect(try String(contentsOf: format, encoding: .utf8) == text)
        }
        // And `dang run` refuses to start on it, saying why (no running on memory alone).
        var settings = DatabaseSettings()
        settings.spoolDirectory = dir.path
        let writer = RecordWriter(settings: settings, logger: Logger(label: "test"))
        #expect(writer.spoolProblem?.contains("does not name a spool format") == true)
    }

    @Test func `a second process on the same spool directory is refused; the first one's close frees it`() throws {
        let dir = self.directory()
        var first: Spool? = try Spool(directory: dir, capacity: 1 << 20, fsync: .never)
        let error = #expect(throws: Spool.Problem.self) { try Spool(directory: dir, capacity: 1 << 20, fsync: .never) }
        #expect(error?.message.contains("in use by another process") == true)
        var settings = DatabaseSettings()
        settings.spoolDirectory = dir.path
        settings.url = "postgres://nobody@127.0.0.1:1/none?connect_timeout=1"
        #expect(RecordWriter(settings: settings, logger: Logger(label: "test")).spoolProblem?.contains("in use") == true)
        try first?.append(self.records(0..<1))
        first = nil
        #expect(try Spool(directory: dir, capacity: 1 << 20, fsync: .never).read(limit: 10).payloads == self.records(0..<1))
    }

    @Test func `draining a big backlog copies each byte about once, not the whole tail every 4 MiB`() throws {
        let dir = self.directory()
        let spool = try Spool(directory: dir, capacity: 1 << 30, fsync: .never)
        let payload = [UInt8](repeating: 42, count: 1000)
        for _ in 0..<16 { try spool.append(Array(repeating: payload, count: 1000)) }  // 16 MB backlog
        let backlog = spool.pendingBytes
        var drained = 0
        while spool.hasPending {
            let (payloads, next) = try spool.read(limit: 500)
            drained += payloads.count
            try spool.markReplayed(upTo: next)
            // Live traffic keeps arriving while it drains.
            if drained % 5000 == 0 { try spool.append([payload]) }
        }
        #expect(drained >= 16_000)
        // The old rule (compact whenever 4 MiB were written) copied about 25 MB here.
        #expect(spool.compactedBytes <= backlog)
        #expect(spool.generation >= 1)
    }

    @Test func `while the database is away, appends are synced on a timer (spool_fsync batch)`() async throws {
        var settings = DatabaseSettings()
        settings.spoolDirectory = self.directory().path
        settings.url = "postgres://nobody@127.0.0.1:1/none?connect_timeout=1"
        settings.flushInterval = .milliseconds(20)
        let writer = RecordWriter(settings: settings, logger: Logger(label: "test"))
        let running = Task { await writer.run() }
        for i in 0..<5 {
            writer.deliver(AlertEvent(
                alertID: UUID(), state: .raised, severity: .info, kind: .system, tag: "t\(i)", topic: "t", timestamp: 0, raisedAt: 0,
                clearedAt: nil, value: 0, score: 0, message: "m"))
            try await Task.sleep(for: .milliseconds(150))
        }
        let deadline = ContinuousClock.now + .seconds(5)
        while writer.counters.timedSyncs < 2, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        writer.stop()
        await running.value
        #expect(writer.counters.timedSyncs >= 2)
        #expect(writer.counters.written == 0 && writer.counters.spooled == 5)
    }

    @Test func `a batch ends at its byte cap as well as its row count`() throws {
        let spool = try Spool(directory: self.directory(), capacity: 1 << 24, fsync: .never)
        let big = [UInt8](repeating: 1, count: 100_000)
        try spool.append(Array(repeating: big, count: 10))
        #expect(try spool.read(limit: 500, maxBytes: 250_000).payloads.count == 3)
        #expect(try spool.read(limit: 500, maxBytes: 10).payloads.count == 1)
        #expect(try spool.read(limit: 500).payloads.count == 10)
    }
}
