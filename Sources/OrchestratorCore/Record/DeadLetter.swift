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
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        defer { close(fd) }
        var written = 0
        try line.withUnsafeBytes { bytes in
            while written < bytes.count {
                let n = write(fd, bytes.baseAddress! + written, bytes.count - written)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)
                }
                written += n
            }
        }
        _ = fsync(fd)
    }
}
