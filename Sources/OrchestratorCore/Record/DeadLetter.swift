import Foundation

/// Records the database refused for their own data (SQLSTATE classes 22, 23, 54), set aside instead
/// of lost: one JSON line each in `dead-letter.jsonl` in the spool directory, with when, why and the
/// record exactly as it was spooled. Appended and synced at once: these are rare, and each one
/// matters.
struct DeadLetter {
    /// Where the lines go; `nil` without a spool directory (the record is then logged in full).
    let path: String?

    static let fileName = "dead-letter.jsonl"

    init(spoolDirectory: String) {
        self.path = spoolDirectory.isEmpty ? nil : URL(fileURLWithPath: spoolDirectory).appendingPathComponent(Self.fileName).path
    }

    /// The line for one record.
    static func line(record: Record, sqlState: String?, error: String, at now: Int64) -> [UInt8] {
        var json = JSONWriter()
        json.field("set_aside_at", integer: now)
        json.field("record_id", string: record.id)
        if let sqlState { json.field("sqlstate", string: sqlState) }
        json.field("error", string: error)
        json.field("record", rawJSON: record.payload())
        return json.finish() + [UInt8(ascii: "\n")]
    }

    /// Appends one line; throws when the file cannot be written.
    func append(_ line: [UInt8]) throws {
        guard let path else { throw CocoaError(.fileNoSuchFile) }
        // Only the record writer's thread appends here.
        let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        defer { close(fd) }
        try Spool.writeFully(fd, line, at: max(0, Int(lseek(fd, 0, SEEK_END))))
        _ = fsync(fd)
    }
}
