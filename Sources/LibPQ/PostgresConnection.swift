internal import CLibPQ
#if canImport(Glibc)
import Glibc
#endif

/// One PostgreSQL connection: owns one `PGconn *` from libpq.
///
/// Not `Sendable`: libpq's documentation says "one thread restriction is that no two threads
/// attempt to manipulate the same PGconn object at the same time". The owner creates the
/// connection on the thread that uses it (the record writer's thread, or a command's main thread)
/// and never shares it.
///
/// ### Threading
/// Every call blocks the calling thread on the network; never call it from Swift's cooperative
/// thread pool on a hot path.
package final class PostgresConnection {
    private let handle: OpaquePointer

    /// Connects with a libpq connection string: a URL (`postgres://user@host:port/db`), a
    /// `key=value` conninfo, or the empty string, which makes libpq read the standard `PG*`
    /// environment variables (`PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`, `PGPASSWORD`…).
    ///
    /// A `connect_timeout` of 10 s applies unless the connection string sets its own, so one
    /// attempt against a host that drops packets cannot block for minutes.
    package init(conninfo: String) throws(PostgresError) {
        // expand_dbname = 1: the `dbname` value may itself be a URL or conninfo, whose keywords
        // override the ones before it (here, the default connect_timeout).
        // client_encoding after it: always UTF-8 (what every String sent is), whatever the server's
        // or the environment's default.
        let keywords = ["connect_timeout", "dbname", "client_encoding"]
        let values = ["10", conninfo, "UTF8"]
        let handle = withCStrings(keywords) { k in
            withCStrings(values) { v in
                PQconnectdbParams(k + [nil], v + [nil], 1)
            }
        }
        guard let handle else {
            throw PostgresError(code: .connectionFailed, message: "out of memory")
        }
        guard PQstatus(handle) == CONNECTION_OK else {
            let message = Self.redact(Self.errorMessage(handle), secret: conninfo)
            PQfinish(handle)
            throw PostgresError(code: .connectionFailed, message: message)
        }
        self.handle = handle
        // Notices (e.g. "relation already exists, skipping") are not errors; keep them off stderr.
        PQsetNoticeProcessor(handle, { _, _ in }, nil)
    }

    deinit {
        PQfinish(self.handle)
    }

    /// Whether the connection is still usable (it breaks when the server goes away).
    package var isConnected: Bool {
        PQstatus(self.handle) == CONNECTION_OK
    }

    /// Host, port and database of the connection, for log lines (never the password).
    package var endpointDescription: String {
        let host = PQhost(self.handle).map { String(cString: $0) } ?? "?"
        let port = PQport(self.handle).map { String(cString: $0) } ?? "?"
        let db = PQdb(self.handle).map { String(cString: $0) } ?? "?"
        return "\(host):\(port)/\(db)"
    }

    /// Runs one statement with parameters bound by libpq (`$1`, `$2`…, text format). SQL is never
    /// built from values.
    @discardableResult
    package func query(_ sql: String, _ parameters: [(any PostgresEncodable)?] = []) throws(PostgresError) -> PostgresRows {
        let texts: [String?] = parameters.map { $0?.postgresText }
        let result = withCStrings(texts) { pointers in
            PQexecParams(self.handle, sql, Int32(texts.count), nil, pointers, nil, nil, 0)
        }
        return try self.check(result)
    }

    /// Runs a script of one or more statements without parameters (migrations, DDL). Use
    /// ``query(_:_:)`` for anything that carries a value.
    package func execute(script sql: String) throws(PostgresError) {
        _ = try self.check(PQexec(self.handle, sql))
    }

    /// Runs `body` inside `BEGIN … COMMIT`; any error rolls back and is rethrown.
    package func withTransaction<T>(_ body: (PostgresConnection) throws -> T) throws -> T {
        try self.query("BEGIN")
        do {
            let value = try body(self)
            try self.query("COMMIT")
            return value
        } catch {
            _ = try? self.query("ROLLBACK")
            throw error
        }
    }

    private func check(_ result: OpaquePointer?) throws(PostgresError) -> PostgresRows {
        guard let result else {
            throw PostgresError(code: .connectionFailed, message: Self.errorMessage(self.handle))
        }
        defer { PQclear(result) }
        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY:
            return PostgresRows(copying: result)
        default:
            let sqlState = PQresultErrorField(result, Int32(UInt8(ascii: "C"))).map { String(cString: $0) }
            let primary = PQresultErrorField(result, Int32(UInt8(ascii: "M"))).map { String(cString: $0) }
            let message = primary ?? Self.errorMessage(self.handle)
            let code: PostgresError.Code = self.isConnected ? .queryFailed : .connectionFailed
            throw PostgresError(code: code, sqlState: sqlState, message: message)
        }
    }

    /// libpq quotes the whole connection string in some parse errors; it may hold a password.
    static func redact(_ message: String, secret: String) -> String {
        guard !secret.isEmpty else { return message }
        return message.replacingOccurrences(of: secret, with: "<connection string>")
    }

    private static func errorMessage(_ handle: OpaquePointer) -> String {
        guard let raw = PQerrorMessage(handle) else { return "unknown error" }
        let text = String(cString: raw)
        return text.split(whereSeparator: \.isNewline).joined(separator: " ").trimmingSpaces()
    }
}

@available(*, unavailable)
extension PostgresConnection: Sendable {}

/// Rows of a result, copied out of libpq as text (`nil` is SQL NULL).
package struct PostgresRows: Sendable {
    package let columns: [String]
    package let rows: [[String?]]
    /// Rows affected by INSERT/UPDATE/DELETE (`PQcmdTuples`), 0 otherwise.
    package let affected: Int

    init(copying result: OpaquePointer) {
        let columnCount = PQnfields(result)
        let rowCount = PQntuples(result)
        self.columns = (0..<columnCount).map { String(cString: PQfname(result, $0)) }
        self.rows = (0..<rowCount).map { row in
            (0..<columnCount).map { column in
                PQgetisnull(result, row, column) == 1 ? nil : String(cString: PQgetvalue(result, row, column))
            }
        }
        self.affected = Int(String(cString: PQcmdTuples(result))) ?? 0
    }
}

/// A value that can be bound as a query parameter in libpq's text format.
package protocol PostgresEncodable {
    var postgresText: String { get }
}

extension String: PostgresEncodable {
    package var postgresText: String { self }
}

extension Int: PostgresEncodable {
    package var postgresText: String { String(self) }
}

extension Int64: PostgresEncodable {
    package var postgresText: String { String(self) }
}

extension Double: PostgresEncodable {
    package var postgresText: String {
        if self.isNaN { return "NaN" }
        if self.isInfinite { return self > 0 ? "Infinity" : "-Infinity" }
        return "\(self)"
    }
}

extension Bool: PostgresEncodable {
    package var postgresText: String { self ? "true" : "false" }
}

/// Calls `body` with an array of C strings that live for the duration of the call.
///
/// A NUL character cannot cross the C API (it would cut the value short): it is replaced by U+FFFD.
private func withCStrings<R>(_ strings: [String?], _ body: ([UnsafePointer<CChar>?]) -> R) -> R {
    var owned: [UnsafeMutablePointer<CChar>?] = strings.map { string in
        string.map { text in
            // Looked for in the bytes: a search by `Character` segments the whole text into
            // grapheme clusters (it showed in `perf` on the batched statements' array literals).
            strdup(text.utf8.contains(0) ? String(text.unicodeScalars.map { $0 == "\u{0}" ? "\u{FFFD}" : Character($0) }) : text)
        } ?? nil
    }
    defer { for pointer in owned { free(pointer) } }
    return owned.withUnsafeMutableBufferPointer { buffer in
        body(buffer.map { UnsafePointer($0) })
    }
}

extension String {
    fileprivate func replacingOccurrences(of target: String, with replacement: String) -> String {
        guard !target.isEmpty else { return self }
        var result = ""
        var rest = Substring(self)
        while let range = rest.firstRange(of: target) {
            result += rest[rest.startIndex..<range.lowerBound]
            result += replacement
            rest = rest[range.upperBound...]
        }
        return result + rest
    }

    fileprivate func trimmingSpaces() -> String {
        var slice = Substring(self)
        while slice.first?.isWhitespace == true { slice.removeFirst() }
        while slice.last?.isWhitespace == true { slice.removeLast() }
        return String(slice)
    }
}

/// A one-dimensional array parameter in PostgreSQL's text format (`{…}`), for multi-row statements
/// such as `INSERT … SELECT * FROM unnest($1::text[], $2::float8[])`. Elements are quoted and
/// escaped, so any string is data.
package struct PostgresArray: PostgresEncodable {
    package let postgresText: String

    /// Built from the UTF-8 bytes (`"` and `\` are single bytes that never occur inside a
    /// multi-byte character): appending scalar by scalar was a third of the record writer's CPU
    /// in `perf`.
    package init(_ strings: [String]) {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(strings.reduce(2) { $0 + $1.utf8.count + 3 })
        bytes.append(UInt8(ascii: "{"))
        for (index, string) in strings.enumerated() {
            if index > 0 { bytes.append(UInt8(ascii: ",")) }
            bytes.append(UInt8(ascii: "\""))
            for byte in string.utf8 {
                if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") { bytes.append(UInt8(ascii: "\\")) }
                bytes.append(byte)
            }
            bytes.append(UInt8(ascii: "\""))
        }
        bytes.append(UInt8(ascii: "}"))
        self.postgresText = String(decoding: bytes, as: UTF8.self)
    }

    package init(_ values: [Int64]) {
        self.postgresText = "{" + values.map(String.init).joined(separator: ",") + "}"
    }

    package init(_ values: [Double?]) {
        self.postgresText = "{" + values.map { $0.map(\.postgresText).map { "\"\($0)\"" } ?? "NULL" }.joined(separator: ",") + "}"
    }
}
