import Foundation
import Logging
import MetricsTestKit
import Synchronization
import Testing

@testable import OrchestratorCore

@Suite struct SpoolTests {
    func directory() -> URL {
        FileManager.default.temporaryDirectory.appendingPathComponent("dang-spool-test-\(UUID().uuidString)")
    }

    func records(_ range: Range<Int>) -> [[UInt8]] { range.map { Array("record \($0)".utf8) } }

    @Test func `records come back in order from the replay offset, and survive a reopen`() throws {
        let dir = self.directory()
        do {
            let spool = try Spool(directory: dir, capacity: 1 << 20, fsync: .batch)
            try spool.append(self.records(0..<5))
            try spool.append(self.records(5..<10))
            let (first, next) = try spool.read(limit: 4)
            #expect(first == self.records(0..<4))
            try spool.markReplayed(upTo: next)
        }
        let reopened = try Spool(directory: dir, capacity: 1 << 20, fsync: .batch)
        #expect(reopened.hasPending)
        let (rest, next) = try reopened.read(limit: 100)
        #expect(rest == self.records(4..<10))
        try reopened.markReplayed(upTo: next)
        #expect(!reopened.hasPending)
        #expect(reopened.usedBytes == 0)  // emptied once everything is replayed
    }

    @Test func `a torn last record is skipped, and the next append overwrites it`() throws {
        let dir = self.directory()
        do {
            let spool = try Spool(directory: dir, capacity: 1 << 20, fsync: .batch)
            try spool.append(self.records(0..<3))
        }
        // A crash in the middle of writing a record: a header promising 100 bytes, and 5 of them.
        let log = try FileHandle(forWritingTo: dir.appendingPathComponent("spool-0.log"))
        try log.seekToEnd()
        try log.write(contentsOf: [100, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9, 9, 9])
        try log.close()

        let spool = try Spool(directory: dir, capacity: 1 << 20, fsync: .batch)
        #expect(spool.skippedAtOpen == 13)
        try spool.append(self.records(3..<4))
        #expect(try spool.read(limit: 100).payloads == self.records(0..<4))
    }

    @Test func `a record whose checksum does not match ends the readable part`() throws {
        let dir = self.directory()
        do {
            let spool = try Spool(directory: dir, capacity: 1 << 20, fsync: .never)
            try spool.append(self.records(0..<3))
        }
        // Flip one payload byte of the last record.
        let url = dir.appendingPathComponent("spool-0.log")
        var bytes = try [UInt8](Data(contentsOf: url))
        bytes[bytes.count - 1] ^= 0xFF
        try Data(bytes).write(to: url)
        let spool = try Spool(directory: dir, capacity: 1 << 20, fsync: .never)
        #expect(try spool.read(limit: 100).payloads == self.records(0..<2))
        #expect(spool.skippedAtOpen > 0)
    }

    @Test func `under steady traffic the log is compacted into a new generation, and nothing is lost`() throws {
        let dir = self.directory()
        let big = (0..<3000).map { i in Array("record \(i) ".utf8) + [UInt8](repeating: 7, count: 2000) }
        do {
            let spool = try Spool(directory: dir, capacity: 1 << 30, fsync: .never)
            try spool.append(Array(big[0..<2500]))
            // Written up to record 2499 while 2500… are appended behind: the head passes the threshold.
            let (written, next) = try spool.read(limit: 2500)
            #expect(written.count == 2500)
            try spool.append(Array(big[2500...]))
            try spool.markReplayed(upTo: next)
            #expect(spool.generation == 1)
            #expect(spool.usedBytes < 2 * 1024 * 1024)  // only the unwritten tail remains
        }
        let reopened = try Spool(directory: dir, capacity: 1 << 30, fsync: .never)
        #expect(reopened.generation == 1)
        #expect(try reopened.read(limit: 10_000).payloads == Array(big[2500...]))
        #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("spool-0.log").path))
    }

    @Test func `an unreadable offset file replays the newest log from its start`() throws {
        let dir = self.directory()
        do {
            let spool = try Spool(directory: dir, capacity: 1 << 20, fsync: .never)
            try spool.append(self.records(0..<4))
            try spool.markReplayed(upTo: try spool.read(limit: 2).next)
        }
        try Data("garbage".utf8).write(to: dir.appendingPathComponent("spool.offset"))
        let spool = try Spool(directory: dir, capacity: 1 << 20, fsync: .never)
        #expect(try spool.read(limit: 100).payloads == self.records(0..<4))
    }

    @Test func `a full spool refuses the append and writes nothing`() throws {
        let spool = try Spool(directory: self.directory(), capacity: 64, fsync: .never)
        try spool.append([Array(repeating: 1, count: 40)])
        #expect(throws: Spool.Problem.self) { try spool.append([Array(repeating: 2, count: 40)]) }
        #expect(try spool.read(limit: 10).payloads.count == 1)
    }

    @Test func `CRC-32 matches the IEEE check value`() {
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)
    }

    @Test func `alert events round-trip through the spool's record format`() throws {
        let event = AlertEvent(
            alertID: UUID(), state: .cleared, severity: .critical, kind: .multivariate, tag: "r1/'; DROP TABLE alerts; --",
            topic: "plant/x", timestamp: 1_700_000_000_123, raisedAt: 1_700_000_000_200, clearedAt: 1_700_000_100_000,
            value: 12.5, score: 0.75, message: "ünïcode \"quoted\"\n")
        #expect(AlertEvent(json: event.jsonPayload()) == event)
        #expect(AlertEvent(json: Array("{}".utf8)) == nil)
    }
}

@Suite struct SpoolPressureTests {
    @Test func `a nearly full spool raises one critical system alert; records beyond the cap wait in memory`() async throws {
        var settings = DatabaseSettings()
        settings.url = "postgres://nobody@127.0.0.1:1/none?connect_timeout=1"  // never reachable
        settings.spoolDirectory = FileManager.default.temporaryDirectory.appendingPathComponent("dang-pressure-\(UUID().uuidString)").path
        settings.spoolCapacity = 20_000
        settings.queueCapacity = 1000
        let metrics = TestMetrics()
        let writer = RecordWriter(settings: settings, logger: .init(label: "test"), metricsFactory: metrics)
        let sink = CollectingSink()
        let systemAlerts = SystemAlerts(sinks: [writer, sink])
        systemAlerts.follow(writer, spoolDirectory: settings.spoolDirectory)
        defer { withExtendedLifetime(systemAlerts) {} }
        for i in 0..<200 {
            writer.deliver(
                AlertEvent(
                    alertID: UUID(), state: .raised, severity: .info, kind: .limit, tag: "t\(i)", topic: "p", timestamp: 0,
                    raisedAt: 0, clearedAt: nil, value: 1, score: 1, message: String(repeating: "x", count: 100)))
        }
        let alerts = sink.events.withLock { $0 }
        #expect(alerts.count == 1)
        #expect(alerts.first?.kind == .system && alerts.first?.severity == .critical && alerts.first?.state == .raised)
        #expect(alerts.first?.alertTopic(prefix: "apos") == "apos/alert/critical/orchestrator/spool")
        let counters = writer.counters
        #expect(counters.spooled > 0 && counters.spooled < 200)
        #expect(counters.dropped == 0)  // the rest wait in memory (queue_capacity 1000)
        // The metric says how full the spool is.
        let gauge = try metrics.expectGauge("dang_record_spool_bytes")
        #expect((gauge.lastValue ?? 0) >= 18_000)
        #expect(try metrics.expectGauge("dang_record_spool_capacity_bytes").lastValue == 20_000)

        // Past the memory queue too: dropped, and counted — never silently.
        let waiting = counters.enqueued - counters.spooled
        for i in 0..<(1000 - waiting + 25) {
            writer.deliver(
                AlertEvent(
                    alertID: UUID(), state: .raised, severity: .info, kind: .limit, tag: "u\(i)", topic: "p", timestamp: 0,
                    raisedAt: 0, clearedAt: nil, value: 1, score: 1, message: "y"))
        }
        #expect(writer.counters.dropped == 25)
        #expect(try metrics.expectCounter("dang_record_dropped_total").totalValue == 25)
    }
}

@Suite struct SpoolMirrorTests {
    func decision(_ n: Int) -> Record {
        .decision(
            DecisionRecord(
                decisionID: UUID(), ts: Int64(n), module: "forecasting", action: "invoke", source: "rules", trigger: "{\"n\":\(n)}",
                reasons: "[]", confidence: nil, latencyMicroseconds: nil))
    }

    func spool() throws -> Spool {
        try Spool(
            directory: FileManager.default.temporaryDirectory.appendingPathComponent("dang-mirror-test-\(UUID().uuidString)"),
            capacity: 1 << 20, fsync: .never)
    }

    /// What the record writer does on append: the spool, then the copy.
    func append(_ records: [Record], to spool: Spool, mirror: inout SpoolMirror) throws {
        let payloads = records.map { $0.payload() }
        try spool.append(payloads)
        for (record, payload) in zip(records, payloads) { mirror.push(record, spoolBytes: Spool.recordHeader + payload.count) }
    }

    func read(_ spool: Spool, _ mirror: SpoolMirror, limit: Int) throws -> (payloads: [[UInt8]], copies: [Record?], next: Int) {
        let (payloads, next) = try spool.read(limit: limit)
        let copies = mirror.lookup(pendingBytes: spool.pendingBytes, spoolSizes: payloads.map { Spool.recordHeader + $0.count })
        return (payloads, copies, next)
    }

    @Test func `the writer gets back the records it appended without decoding them; a backlog is decoded`() throws {
        let spool = try self.spool()
        let backlog = (0..<3).map(self.decision)
        try spool.append(backlog.map { $0.payload() })  // left by a previous run: no copies
        var mirror = SpoolMirror(capacity: 100)
        let fresh = (3..<8).map(self.decision)
        try self.append(fresh, to: spool, mirror: &mirror)

        let first = try self.read(spool, mirror, limit: 5)
        #expect(first.copies.map { $0 == nil } == [true, true, true, false, false])
        #expect(first.copies[3] == fresh[0] && first.copies[4] == fresh[1])
        #expect(first.payloads.prefix(3).compactMap(Record.init(payload:)) == backlog)
        try spool.markReplayed(upTo: first.next)
        mirror.trim(pendingBytes: spool.pendingBytes)
        #expect(mirror.count == 3)

        let second = try self.read(spool, mirror, limit: 10)
        #expect(second.copies == fresh[2...].map { Optional($0) })
        try spool.markReplayed(upTo: second.next)
        mirror.trim(pendingBytes: spool.pendingBytes)
        #expect(mirror.count == 0 && mirror.bytes == 0 && !spool.hasPending)
    }

    @Test func `past its capacity the oldest copies go, and those records are decoded`() throws {
        let spool = try self.spool()
        var mirror = SpoolMirror(capacity: 2)
        let records = (0..<4).map(self.decision)
        try self.append(records, to: spool, mirror: &mirror)
        let batch = try self.read(spool, mirror, limit: 10)
        #expect(batch.copies == [nil, nil, records[2], records[3]])
    }

    @Test func `a batch that does not line up with the copies is decoded from there on`() throws {
        let spool = try self.spool()
        var mirror = SpoolMirror(capacity: 10)
        let records = (0..<3).map(self.decision)
        try spool.append(records.map { $0.payload() })
        // Copies whose sizes are not the spool's: never handed out as the wrong record.
        for record in records { mirror.push(record, spoolBytes: 7) }
        #expect(try self.read(spool, mirror, limit: 10).copies == [nil, nil, nil])
        // More copies than pending bytes: nothing lines up.
        let short = try self.spool()
        try short.append([records[0].payload()])
        var stale = SpoolMirror(capacity: 10)
        for record in records { stale.push(record, spoolBytes: Spool.recordHeader + record.payload().count) }
        #expect(try self.read(short, stale, limit: 10).copies == [nil])
    }
}

@Suite struct SnapshotQueueTests {
    func snapshot(_ tag: String, _ time: Int64) -> TagSnapshot {
        TagSnapshot(tag: tag, time: time, value: Double(time), quality: .good, samples: Int(time), ewmaMean: 0, ewmaVariance: 1)
    }

    @Test func `a second delivery before the writer drains keeps one snapshot per tag, the newer`() {
        var waiting = [self.snapshot("a", 1), self.snapshot("b", 1)]
        RecordWriter.merge([self.snapshot("b", 2), self.snapshot("c", 2)], into: &waiting)
        #expect(waiting == [self.snapshot("a", 1), self.snapshot("b", 2), self.snapshot("c", 2)])
        RecordWriter.merge([self.snapshot("a", 3)], into: &waiting)
        #expect(waiting.map(\.time) == [3, 2, 2])
    }
}
