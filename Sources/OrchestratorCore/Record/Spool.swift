import Foundation

/// A durable, append-only spool of records on local disk, for when PostgreSQL is unreachable.
///
/// ### Format
/// `spool.log` is a sequence of records, each `[length: UInt32 LE][crc32: UInt32 LE][payload]`, the
/// CRC-32 (IEEE) of the payload. `spool.offset` holds, as decimal text, the byte offset up to which
/// records have been written to the database (replaced atomically by rename). Records are read back
/// in order from that offset.
///
/// ### Guarantees
/// - Order: records are replayed in the order they were appended.
/// - Durability: with `fsync: batch` (the default) or `always` each appended batch is on disk
///   before `append` returns; `never` leaves it to the OS. The offset file is replaced atomically.
/// - A torn or corrupt record (a crash mid-write, a bad sector) ends the readable part: it and
///   anything after it are skipped with a logged warning and overwritten by the next append; it
///   never poisons the records before it.
/// - Replaying a record twice is harmless: the record's writes are idempotent on its UUID.
///
/// ### Threading
/// Owned by the record writer's thread; not `Sendable`.
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
    private let log: FileHandle
    private let policy: FsyncPolicy
    let capacity: Int
    /// Offset up to which records are in the database.
    private(set) var replayed: Int
    /// End of the last valid record: where the next append goes.
    private(set) var end: Int
    /// Bytes of a torn or corrupt tail found at open (skipped).
    private(set) var skippedAtOpen = 0

    private var offsetURL: URL { self.directory.appendingPathComponent("spool.offset") }

    /// Opens (or creates) the spool in `directory`, validating every record after the replay offset.
    init(directory: URL, capacity: Int, fsync: FsyncPolicy) throws {
        self.directory = directory
        self.capacity = capacity
        self.policy = fsync
        let manager = FileManager.default
        try manager.createDirectory(at: directory, withIntermediateDirectories: true)
        let logPath = directory.appendingPathComponent("spool.log").path
        if !manager.fileExists(atPath: logPath) {
            guard manager.createFile(atPath: logPath, contents: nil) else {
                throw Problem(message: "cannot create \(logPath)")
            }
        }
        guard let handle = FileHandle(forUpdatingAtPath: logPath) else {
            throw Problem(message: "cannot open \(logPath) for writing")
        }
        self.log = handle
        let offsetText = (try? String(contentsOf: directory.appendingPathComponent("spool.offset"), encoding: .utf8)) ?? "0"
        self.replayed = Int(offsetText.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        self.end = self.replayed
        // Find the end of the valid records.
        let size = Int(try handle.seekToEnd())
        if self.replayed > size {
            // The log was emptied after the offset was last saved: persist the reset now.
            self.replayed = 0
            try Data("0".utf8).write(to: directory.appendingPathComponent("spool.offset"), options: .atomic)
        }
        var position = self.replayed
        while position < size {
            guard let (_, next) = try self.readRecord(at: position, size: size) else { break }
            position = next
        }
        self.end = position
        self.skippedAtOpen = size - position
        if self.skippedAtOpen > 0 {
            // Cut the torn tail off, so stale bytes can never line up with later records.
            try handle.truncate(atOffset: UInt64(position))
            if fsync != .never { try handle.synchronize() }
        }
    }

    /// Largest record accepted (the reader refuses larger ones as corrupt).
    static let maxRecord = 16 * 1024 * 1024

    deinit {
        try? self.log.close()
    }

    var hasPending: Bool { self.end > self.replayed }
    var pendingBytes: Int { self.end - self.replayed }
    /// Bytes on disk, replayed or not, until the spool is emptied.
    var usedBytes: Int { self.end }

    /// Appends records after the valid end. With `sync`, syncs per the policy before returning;
    /// without, the bytes are in the OS (they survive the process being killed) and ``sync()``
    /// makes them durable later. Throws when the spool would exceed its capacity; nothing is then
    /// written.
    func append(_ payloads: [[UInt8]], sync: Bool = true) throws {
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
        try self.log.seek(toOffset: UInt64(self.end))
        try self.log.write(contentsOf: bytes)
        if sync && self.policy != .never { try self.log.synchronize() }
        self.end += bytes.count
    }

    /// Flushes appended bytes to the disk.
    func sync() throws {
        try self.log.synchronize()
    }

    /// The log's descriptor, so the owner can `fsync` it without holding the lock that guards
    /// appends (the descriptor stays open as long as the spool).
    var fileDescriptor: Int32 { self.log.fileDescriptor }

    /// Drops everything after the replay offset (records that can no longer be read).
    func discardPending() throws {
        try self.markReplayed(upTo: self.end)
    }

    /// Reads up to `limit` records from the replay offset; returns them and the offset after them.
    func read(limit: Int) throws -> (payloads: [[UInt8]], next: Int) {
        var payloads: [[UInt8]] = []
        var position = self.replayed
        while payloads.count < limit, position < self.end {
            guard let (payload, next) = try self.readRecord(at: position, size: self.end) else { break }
            payloads.append(payload)
            position = next
        }
        return (payloads, position)
    }

    /// Records up to `offset` are in the database. When everything is, the spool is emptied.
    func markReplayed(upTo offset: Int) throws {
        if offset >= self.end {
            // Everything is in the database: reset the offset first, then empty the log, so a
            // crash in between leaves an offset of 0 over an old log (replayed again, harmlessly)
            // rather than an old offset over a new one.
            try Data("0".utf8).write(to: self.offsetURL, options: .atomic)
            try self.log.truncate(atOffset: 0)
            if self.policy != .never { try self.log.synchronize() }
            self.replayed = 0
            self.end = 0
            return
        }
        self.replayed = offset
        // Written to a temporary file and renamed, so a crash leaves the old offset or the new one.
        try Data(String(self.replayed).utf8).write(to: self.offsetURL, options: .atomic)
    }

    /// One record at `position`, or `nil` if it is torn or corrupt.
    private func readRecord(at position: Int, size: Int) throws -> ([UInt8], Int)? {
        guard position + 8 <= size else { return nil }
        try self.log.seek(toOffset: UInt64(position))
        guard let header = try self.log.read(upToCount: 8), header.count == 8 else { return nil }
        let length = Int(UInt32(littleEndian: header.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }))
        let crc = UInt32(littleEndian: header.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: UInt32.self) })
        guard length <= Self.maxRecord, position + 8 + length <= size else { return nil }
        guard let body = try self.log.read(upToCount: length), body.count == length else { return nil }
        let payload = [UInt8](body)
        guard CRC32.checksum(payload) == crc else { return nil }
        return (payload, position + 8 + length)
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
