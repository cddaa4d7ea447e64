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

    package var description: String {
        if let sqlState { return "PostgreSQL \(self.code) [\(sqlState)]: \(self.message)" }
        return "PostgreSQL \(self.code): \(self.message)"
    }
}
