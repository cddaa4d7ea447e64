package import Logging

/// Reads from the record, for everything that is not the writer: the start-up memories (tag state,
/// the decision side's memory, shelved alarms), the API's history, the operator's actions. All of it
/// runs on the ``DatabasePool``'s few connections and threads — never a connection per call, never
/// blocking libpq work on the cooperative pool.
package final class RecordReader: Sendable {
    package let pool: DatabasePool
    private let migrate: Bool
    private let logger: Logger

    package init(pool: DatabasePool, migrate: Bool = true, logger: Logger) {
        self.pool = pool
        self.migrate = migrate
        self.logger = logger
    }

    /// The newest `limit` tag states, to warm the detectors up; nil if the database is away. Brings a
    /// new database's schema up to date first (the shelves read after it need it).
    package func tagState(limit: Int = .max) async -> [TagSnapshot]? {
        let migrate = self.migrate
        switch await self.pool.run({ connection in
            if migrate { try Migrations.apply(on: connection) }
            return try TagStateStore.load(on: connection, limit: limit)
        }) {
        case .success(let snapshots)?: return snapshots
        case .failure(let error)?:
            self.logger.warning("tag_state not loaded; detectors start cold", metadata: ["error": "\(error)"])
            return nil
        case nil: return nil
        }
    }

    /// The decision side's memory (learned outcomes, pending invocations, last invocations, schedules
    /// fired); nil if the database is away. Read it once the spool has drained, or the previous run's
    /// last records are not seen.
    package func decisionMemory() async -> DecisionMemory? {
        let migrate = self.migrate
        switch await self.pool.run({ connection in
            if migrate { try Migrations.apply(on: connection) }
            return try InvocationStore.load(on: connection)
        }) {
        case .success(let memory)?: return memory
        case .failure(let error)?:
            self.logger.warning("decision memory not loaded; outcomes start from their priors", metadata: ["error": "\(error)"])
            return nil
        case nil: return nil
        }
    }
}
