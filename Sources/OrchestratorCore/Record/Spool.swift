package import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A durable, append-only spool of records on local disk, for when PostgreSQL is unreachable.
///
/// ### Format
/// `spool-<generation>.log` is a sequence of records, each `[length: UInt32 LE][crc32: UInt32 LE]
/// [payload]`, the CRC-32 (IEEE) of the payload. `spool.offset` holds `<generation> <offset>`: the
/// byte offset up to which records have been written to the database. Records are read back in
/// order from that offset; compaction moves the unwritten tail to the next generation.
/// `spool.format` names the layout and the records' encoding: `dang-spool <version>` (now 1). A
/// directory without it but with logs was written before the file existed, in version 1; a
/// version this build does not know (a newer `dang`'s) is refused at open, never read as garbage
/// (docs/upgrade.md).
///
/// ### Guarantees
/// - Order: records are replayed in the order they were appended.
/// - Durability: with `fsync: batch` (the default) or `always` each appended batch is on disk
///   before `append` returns; `never` leaves it to the OS. The offset file is replaced atomically.
/// - A torn record at the end (a crash mid-write) is cut off and overwritten by the next append.
///   A corrupt stretch elsewhere (a bad sector, a stray write) loses only itself: the reader skips
///   to the next valid record header, moves the bad bytes aside to `spool-<generation>.corrupt`
///   and counts them; the records before and after it are kept.
/// - Replaying a record twice is harmless: the record's writes are idempotent on its UUID.
/// - One process per directory: the spool holds an exclusive `flock` on `spool.lock` while open,
///   and a second spool on the same directory (another `dang`) is refused.
///
/// ### Threading
/// Owned by the record writer; not `Sendable`. The owner serialises calls, except that the bulk copy
/// of a compaction (``copyForCompaction(_:)``) runs without that serialisation so appends go on.
package final class Spool {
    package enum FsyncPolicy: String, Sendable, CaseIterable {
        case always
        case batch
        case never
    }

    struct Problem: Error, CustomStringConvertible {
        let message: String
        var description: String { self.message }
    }

    let directory: URL
    private var log: FileHandle
    /// Generation of the log file (`spool-<generation>.log`); compaction starts the next one.
    private(set) var generation: Int
    private let policy: FsyncPolicy
    let capacity: Int
    /// Offset up to which records are in the database.
    private(set) var replayed: Int
    /// End of the last valid record: where the next append goes.
    private(set) var end: Int
    /// Bytes of a torn tail or of corrupt stretches found at open (skipped).
    private(set) var skippedAtOpen = 0
    /// Corrupt bytes skipped by ``read(limit:)`` since open (moved aside to the `.corrupt` file).
    private(set) var skippedCorrupt = 0
    /// Bytes copied by compactions since open (at most about what was appended).
    private(set) var compactedBytes = 0
    /// The exclusive lock on `spool.lock` (held until the spool is closed).
    private let lockDescriptor: Int32

    private var offsetURL: URL { self.directory.appendingPathComponent("spool.offset") }

    /// The spool format this build writes and reads (`spool.format`).
    package static let formatVersion = 1

    /// Checks `spool.format` (writing it for a new spool, or for one older than the file) before
    /// anything else is read; throws for a version this build cannot read.
    private static func checkFormat(_ directory: URL) throws {
        let url = directory.appendingPathComponent("spool.format")
        guard let text = try? String(contentsOf: url, encoding: .utf8) else {
            // New, or written before the file existed (the same layout: version 1).
            let line = "dang-spool \(Self.formatVersion)\n"
            guard FileManager.default.createFile(atPath: url.path, contents: Data(line.utf8)) else {
                throw Problem(message: "cannot write \(url.path)")
            }
            return
        }
        let words = text.split(whereSeparator: \.isWhitespace)
        guard words.count == 2, words[0] == "dang-spool", let version = Int(words[1]), version >= 1 else {
            throw Problem(
                message: "\(url.path) does not name a spool format (expected `dang-spool <version>`, found "
                    + "\"\(text.prefix(40).trimmingCharacters(in: .whitespacesAndNewlines))\"): is this a dang spool?")
        }
        guard version <= Self.formatVersion else {
            throw Problem(
                message: "the spool in \(directory.path) is format \(version), written by a newer dang; this one reads format "
                    + "\(Self.formatVersion). Its records may not be in PostgreSQL yet: run the newer version until the spool "
                    + "drains (GET /status: database.spool_bytes 0), or move the directory aside (docs/upgrade.md)")
        }
    }

    private static func logURL(_ directory: URL, generation: Int) -> URL {
        directory.appendingPathComponent("spool-\(generation).log")
    }

    /// Generations of the log files present, ascending.
    private static func generations(in directory: URL) -> [Int] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.compactMap { name -> Int? in
            guard name.hasPrefix("spool-"), name.hasSuffix(".log") else { return nil }
            return Int(name.dropFirst(6).dropLast(4))
        }.sorted()
    }

    /// Opens (or creates) the spool in `directory`, validating every record after the replay offset.
    ///
    /// `spool.offset` holds `<generation> <offset>`. If it is missing or unreadable (a crash while
    /// it was rewritten), the newest log is replayed from its start: records are replayed again,
    /// which the idempotent writes make harmless, and none is skipped.
    package init(directory: URL, capacity: Int, fsync: FsyncPolicy) throws {
        self.directory = directory
        self.capacity = capacity
        self.policy = fsync
        let manager = FileManager.default
        try manager.createDirectory(at: directory, withIntermediateDirectories: true)
        // One process per spool: two appending to one log corrupt each other.
        let lockPath = directory.appendingPathComponent("spool.lock").path
        let lock = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard lock >= 0 else { throw Problem(message: "cannot open \(lockPath): \(String(cString: strerror(errno)))") }
        guard flock(lock, LOCK_EX | LOCK_NB) == 0 else {
            close(lock)
            throw Problem(
                message: "the spool directory \(directory.path) is in use by another process (another dang?): "
                    + "each orchestrator needs its own database.spool_dir")
        }
        do {
            try Self.checkFormat(directory)
        } catch {
            close(lock)
            throw error
        }
        self.lockDescriptor = lock
        let existing = Self.generations(in: directory)
        let saved = ((try? String(contentsOf: directory.appendingPathComponent("spool.offset"), encoding: .utf8)) ?? "")
            .split(separator: " ").compactMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        var generation = existing.last ?? 0
        var replayed = 0
        if saved.count == 2, existing.contains(saved[0]) {
            generation = saved[0]
            replayed = saved[1]
        }
        let url = Self.logURL(directory, generation: generation)
        if !manager.fileExists(atPath: url.path) {
            guard manager.createFile(atPath: url.path, contents: nil) else {
                close(lock)
                throw Problem(message: "cannot create \(url.path)")
            }
        }
        guard let handle = FileHandle(forUpdatingAtPath: url.path) else {
            close(lock)
            throw Problem(message: "cannot open \(url.path) for writing")
        }
        self.log = handle
        self.generation = generation
        // Older generations are fully written (compaction copied their unwritten tail forward).
        for old in existing where old < generation {
            try? manager.removeItem(at: Self.logURL(directory, generation: old))
        }
        let size = Int(try handle.seekToEnd())
        // A hand-edited or torn offset file: replay from the start (idempotent) rather than trap.
        if replayed > size || replayed < 0 { replayed = 0 }
        self.replayed = replayed
        self.end = size
        // Every record after the offset is checked. A bad stretch followed by good records is moved
        // aside; a bad tail (a torn last write) is cut off.
        var position = replayed
        var bad: [Range<Int>] = []
        while position < size {
            if let (_, next) = try Self.readRecord(handle, at: position, size: size) {
                position = next
                continue
            }
            let next = try Self.nextValidRecord(handle.fileDescriptor, after: position, end: size)
            bad.append(position..<next)
            position = next
        }
        if let last = bad.last, last.upperBound == size {
            bad.removeLast()
            self.end = last.lowerBound
        }
        self.skippedAtOpen = size - self.end + bad.reduce(0) { $0 + $1.count }
        if !bad.isEmpty {
            // Keep the bad bytes for a person to look at, then rewrite the log without them.
            for range in bad { try self.moveAside(range) }
            try self.rewrite(skipping: bad)
        } else if self.end < size {
            // Cut the torn tail off, so stale bytes can never line up with later records.
            try handle.truncate(atOffset: UInt64(self.end))
            if fsync != .never { try handle.synchronize() }
        }
        try self.saveOffset(self.replayed)
    }

    /// Bytes before each payload: length and CRC-32.
    static let recordHeader = 8

    /// Largest record accepted (the reader refuses larger ones as corrupt).
    static let maxRecord = 16 * 1024 * 1024

    deinit {
        try? self.log.close()
        flock(self.lockDescriptor, LOCK_UN)
        close(self.lockDescriptor)
    }

    package var hasPending: Bool { self.end > self.replayed }
    package var pendingBytes: Int { self.end - self.replayed }
    /// Bytes on disk, replayed or not, until the spool is emptied.
    var usedBytes: Int { self.end }

    /// Appends records after the valid end. With `sync`, syncs per the policy before returning;
    /// without, the bytes are in the OS (they survive the process being killed) and ``sync()``
    /// makes them durable later. Throws when the spool would exceed its capacity; nothing is then
    /// written.
    package func append(_ payloads: [[UInt8]], sync: Bool = true) throws {
        var bytes: [UInt8] = []
        for payload in payloads {
            guard payload.count <= Self.maxRecord else { throw Problem(message: "a record of \(payload.count) bytes is too large") }
            var length = UInt32(payload.count).littleEndian
            var crc = CRC32.checksum(payload).littleEndian
            withUnsafeBytes(of: &length) { bytes.append(contentsOf: $0) }
            withUnsafeBytes(of: &crc) { bytes.append(contentsOf: $0) }
            bytes.append(contentsOf: payload)
        }
        guard self.end + bytes.count <= self.capacity else {
            throw Problem(message: "the spool is full (\(self.end) of \(self.capacity) bytes)")
        }
        // One positioned write (no seek, no Foundation buffering): appends run on the ingest thread.
        try Self.writeFully(self.log.fileDescriptor, bytes, at: self.end)
        if sync && self.policy != .never { try self.log.synchronize() }
        self.end += bytes.count
    }

    /// Flushes appended bytes to the disk.
    package func sync() throws {
        try self.log.synchronize()
    }

    /// The log's descriptor, so the owner can `fsync` it without holding the lock that guards
    /// appends (the descriptor stays open as long as the spool).
    var fileDescriptor: Int32 { self.log.fileDescriptor }

    /// Reads up to `limit` records from the replay offset; returns them and the offset after them.
    /// When the first bytes at the offset are not a valid record, nothing is returned but an offset
    /// past them: the next valid record header (or the end). Those bytes are moved aside to the
    /// `.corrupt` file and counted in ``skippedCorrupt``; everything after them is kept.
    /// A read also stops once `maxBytes` of records are in it (always at least one record).
    package func read(limit: Int, maxBytes: Int = .max) throws -> (payloads: [[UInt8]], next: Int) {
        let read = try self.readValid(limit: limit, maxBytes: maxBytes)
        guard read.payloads.isEmpty, read.next == self.replayed, self.replayed < self.end else { return read }
        let next = try Self.nextValidRecord(self.log.fileDescriptor, after: self.replayed, end: self.end)
        try self.moveAside(self.replayed..<next)
        self.skippedCorrupt += next - self.replayed
        return ([], next)
    }

    private func readValid(limit: Int, maxBytes: Int) throws -> (payloads: [[UInt8]], next: Int) {
        var payloads: [[UInt8]] = []
        var position = self.replayed
        // Whole chunks with one positioned read each, records cut out of memory: the record writer
        // holds the spool's lock while it reads, and the ingest thread waits for that lock.
        var chunk: [UInt8] = []
        var chunkStart = position
        while payloads.count < limit, position < self.end, position - self.replayed < maxBytes {
            var offset = position - chunkStart
            if offset + Self.recordHeader > chunk.count {
                chunk = try Self.readFully(self.log.fileDescriptor, at: position, count: min(self.end - position, Self.readChunk))
                chunkStart = position
                offset = 0
                guard chunk.count >= Self.recordHeader else { break }
            }
            let length = Int(UInt32(littleEndian: chunk.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: UInt32.self) }))
            let crc = UInt32(littleEndian: chunk.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self) })
            guard length <= Self.maxRecord, position + Self.recordHeader + length <= self.end else { break }
            if offset + Self.recordHeader + length > chunk.count {
                // A record larger than what is left of the chunk: read it on its own.
                chunk = try Self.readFully(self.log.fileDescriptor, at: position, count: Self.recordHeader + length)
                chunkStart = position
                offset = 0
                guard chunk.count == Self.recordHeader + length else { break }
            }
            let payload = Array(chunk[(offset + Self.recordHeader)..<(offset + Self.recordHeader + length)])
            guard CRC32.checksum(payload) == crc else { break }
            payloads.append(payload)
            position += Self.recordHeader + length
        }
        return (payloads, position)
    }

    static let readChunk = 1 << 20

    static func writeFully(_ fd: Int32, _ bytes: [UInt8], at offset: Int) throws {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress! + done, $0.count - done, off_t(offset + done)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw Problem(message: "spool: write failed: \(String(cString: strerror(errno)))")
            }
            done += n
        }
    }

    private static func readFully(_ fd: Int32, at offset: Int, count: Int) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, count - done, off_t(offset + done)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw Problem(message: "spool: read failed: \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            done += n
        }
        return done == count ? buffer : Array(buffer[..<done])
    }

    /// Records up to `offset` are in the database. When everything is, the spool is emptied; when
    /// the written part outweighs the rest, the rest moves to a new generation (here, at once; the
    /// record writer uses ``advanceReplayed(to:)`` and compacts outside its lock).
    package func markReplayed(upTo offset: Int) throws {
        try self.advanceReplayed(to: offset)
        if let plan = self.compactionPlan() {
            try self.finishCompaction(plan, try Self.copyForCompaction(plan))
        }
    }

    /// ``markReplayed(upTo:)`` without the compaction (see ``compactionPlan()``).
    func advanceReplayed(to offset: Int) throws {
        if offset >= self.end {
            // Everything is in the database: reset the offset first, then empty the log, so a
            // crash in between leaves an offset of 0 over an old log (replayed again, harmlessly)
            // rather than an old offset over a new one.
            try self.saveOffset(0)
            try self.log.truncate(atOffset: 0)
            self.replayed = 0
            self.end = 0
            return
        }
        self.replayed = offset
        try self.saveOffset(self.replayed)
    }

    /// Written-out bytes at the head of the log beyond which it may be compacted.
    static let compactAfter = 4 * 1024 * 1024

    /// What a compaction copies: the unwritten bytes `from..<to` of the log behind `descriptor`
    /// into `spool-<generation>.log`.
    struct CompactionPlan: Sendable {
        let descriptor: Int32
        let from: Int
        let to: Int
        let generation: Int
        let url: URL
    }

    /// A compaction, when one is due: the written head is past ``compactAfter`` and outweighs the
    /// unwritten rest. So each byte is copied a bounded number of times: draining a backlog of any
    /// size costs linear time, never a full copy per batch.
    func compactionPlan() -> CompactionPlan? {
        guard self.replayed >= Self.compactAfter, self.replayed >= self.end - self.replayed, self.generation < Int.max else { return nil }
        return CompactionPlan(
            descriptor: self.log.fileDescriptor, from: self.replayed, to: self.end, generation: self.generation + 1,
            url: Self.logURL(self.directory, generation: self.generation + 1))
    }

    /// The bulk of a compaction, in 1 MiB chunks: safe while appends go on (they only write past
    /// `plan.to`), so the owner runs it outside the lock the ingest thread takes.
    static func copyForCompaction(_ plan: CompactionPlan) throws -> FileHandle {
        guard FileManager.default.createFile(atPath: plan.url.path, contents: nil),
            let handle = FileHandle(forUpdatingAtPath: plan.url.path)
        else { throw Problem(message: "cannot create \(plan.url.path)") }
        try Self.copy(from: plan.descriptor, plan.from..<plan.to, to: handle.fileDescriptor, at: 0)
        // Synced here, outside the lock: the sync under it then has only the last few bytes to do.
        try handle.synchronize()
        return handle
    }

    /// Copies what was appended since the plan, syncs the new log, switches the offset file to it
    /// (atomically) and deletes the old log. A crash before the switch leaves the old log and offset
    /// as they were; after it, the new log is complete.
    func finishCompaction(_ plan: CompactionPlan, _ handle: FileHandle) throws {
        guard plan.from == self.replayed, plan.to <= self.end, plan.descriptor == self.log.fileDescriptor else {
            // The spool changed under the plan (emptied, or compacted): drop the copy.
            try? handle.close()
            try? FileManager.default.removeItem(at: plan.url)
            return
        }
        try Self.copy(from: self.log.fileDescriptor, plan.to..<self.end, to: handle.fileDescriptor, at: plan.to - plan.from)
        self.compactedBytes += self.end - plan.from
        try self.switchTo(generation: plan.generation, handle, end: self.end - self.replayed)
    }

    /// Makes a complete, unsynced next-generation log the spool's: syncs it, switches the offset file
    /// to it (atomically) and deletes the old log. A crash before the switch leaves the old log and
    /// offset as they were; after it, the new log is complete.
    private func switchTo(generation: Int, _ handle: FileHandle, end: Int) throws {
        try handle.synchronize()
        try Data("\(generation) 0".utf8).write(to: self.offsetURL, options: .atomic)
        let old = Self.logURL(self.directory, generation: self.generation)
        try? self.log.close()
        self.log = handle
        self.generation = generation
        self.end = end
        self.replayed = 0
        try? FileManager.default.removeItem(at: old)
    }

    private static func copy(from source: Int32, _ range: Range<Int>, to target: Int32, at offset: Int) throws {
        var position = range.lowerBound
        while position < range.upperBound {
            let chunk = try Self.readFully(source, at: position, count: min(Self.readChunk, range.upperBound - position))
            guard !chunk.isEmpty else { throw Problem(message: "spool: short read while compacting") }
            try Self.writeFully(target, chunk, at: offset + position - range.lowerBound)
            position += chunk.count
        }
    }

    /// The offset of the first valid record after `position` (one whose length fits and whose
    /// checksum matches), or `end`.
    static func nextValidRecord(_ fd: Int32, after position: Int, end: Int) throws -> Int {
        var candidate = position + 1
        while candidate + Self.recordHeader <= end {
            let window = try Self.readFully(fd, at: candidate, count: min(Self.readChunk, end - candidate))
            guard window.count >= Self.recordHeader else { break }
            for offset in 0...(window.count - Self.recordHeader) {
                let length = Int(UInt32(littleEndian: window.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: UInt32.self) }))
                let start = candidate + offset
                guard length <= Self.maxRecord, start + Self.recordHeader + length <= end else { continue }
                let crc = UInt32(littleEndian: window.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self) })
                let payload =
                    offset + Self.recordHeader + length <= window.count
                    ? Array(window[(offset + Self.recordHeader)..<(offset + Self.recordHeader + length)])
                    : try Self.readFully(fd, at: start + Self.recordHeader, count: length)
                if payload.count == length, CRC32.checksum(payload) == crc { return start }
            }
            candidate += window.count - Self.recordHeader + 1
        }
        return end
    }

    /// Appends a corrupt stretch of the log to `spool-<generation>.corrupt`, for a person to look at.
    private func moveAside(_ range: Range<Int>) throws {
        guard !range.isEmpty else { return }
        let path = self.directory.appendingPathComponent("spool-\(self.generation).corrupt").path
        let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw Problem(message: "cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        try Self.copy(from: self.log.fileDescriptor, range, to: fd, at: max(0, Int(lseek(fd, 0, SEEK_END))))
        _ = fsync(fd)
    }

    /// Rewrites the log as the next generation without the given stretches (at open).
    private func rewrite(skipping bad: [Range<Int>]) throws {
        guard self.generation < Int.max else { throw Problem(message: "spool: no generation number left") }
        let next = self.generation + 1
        let url = Self.logURL(self.directory, generation: next)
        guard FileManager.default.createFile(atPath: url.path, contents: nil), let handle = FileHandle(forUpdatingAtPath: url.path)
        else { throw Problem(message: "cannot create \(url.path)") }
        var written = 0
        var position = self.replayed
        for range in bad + [self.end..<self.end] {
            try Self.copy(from: self.log.fileDescriptor, position..<range.lowerBound, to: handle.fileDescriptor, at: written)
            written += range.lowerBound - position
            position = range.upperBound
        }
        try self.switchTo(generation: next, handle, end: written)
    }

    /// The offset file is small and rewritten after every batch: written in place without a sync. A
    /// torn one reads as "replay the newest log from its start" — harmless, the writes are idempotent.
    private func saveOffset(_ offset: Int) throws {
        try Data("\(self.generation) \(offset)".utf8).write(to: self.offsetURL)
    }

    /// One record at `position`, or `nil` if it is torn or corrupt.
    private static func readRecord(_ log: FileHandle, at position: Int, size: Int) throws -> ([UInt8], Int)? {
        guard position + Self.recordHeader <= size else { return nil }
        try log.seek(toOffset: UInt64(position))
        guard let header = try log.read(upToCount: Self.recordHeader), header.count == Self.recordHeader else { return nil }
        let length = Int(UInt32(littleEndian: header.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }))
        let crc = UInt32(littleEndian: header.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: UInt32.self) })
        guard length <= Self.maxRecord, position + Self.recordHeader + length <= size else { return nil }
        guard let body = try log.read(upToCount: length), body.count == length else { return nil }
        let payload = [UInt8](body)
        guard CRC32.checksum(payload) == crc else { return nil }
        return (payload, position + Self.recordHeader + length)
    }
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), table-driven.
enum CRC32 {
    static let table: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func checksum(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for byte in bytes { c = Self.table[Int((c ^ UInt32(byte)) & 0xFF)] ^ (c >> 8) }
        return c ^ 0xFFFF_FFFF
    }
}
