/// An error from PostgreSQL or libpq.
///
/// The description carries the server's message and SQLSTATE, never the connection string
/// (which may hold a password).
package struct PostgresError: Error, CustomStringConvertible, Sendable {
    /// What kind of failure; extensible.
    package struct Code: Hashable, Sendable, CustomStringConvertible {
        package let name: String
        /// The server could not be reached or the connection broke: worth retrying later.
        package static let connectionFailed = Code(name: "connection failed")
        /// The server rejected the statement (syntax, constraint, permission…).
        package static let queryFailed = Code(name: "query failed")
        package var description: String { self.name }
    }

    package let code: Code
    /// The five-character SQLSTATE, when the server sent one.
    package let sqlState: String?
    package let message: String

    package init(code: Code, sqlState: String? = nil, message: String) {
        self.code = code
        self.sqlState = sqlState
        self.message = message
    }

    /// Errors worth retrying: connection trouble, serialization failures, deadlocks, shutdowns
    /// (SQLSTATE classes 08, 40, 53, 57P).
    package var isTransient: Bool {
        if self.code == .connectionFailed { return true }
        guard let state = self.sqlState else { return false }
        return state.hasPrefix("08") || state.hasPrefix("40") || state.hasPrefix("53") || state.hasPrefix("57P")
    }

    /// Errors that belong to one row's data, not to the database or the session: bad data (class
    /// 22: a value out of range, an unstorable escape), integrity (23: a constraint) and program
    /// limits (54: a value too large for an index). Only these may set one row aside; anything else
    /// (a read-only standby, a revoked grant, a missing table, a lock or statement timeout) is the
    /// whole database's problem, and the rows wait for it.
    package var isRowSpecific: Bool {
        guard self.code != .connectionFailed, let state = self.sqlState else { return false }
        return state.hasPrefix("22") || state.hasPrefix("23") || state.hasPrefix("54")
    }

    package var description: String {
        if let sqlState { return "PostgreSQL \(self.code) [\(sqlState)]: \(self.message)" }
        return "PostgreSQL \(self.code): \(self.message)"
    }
}
