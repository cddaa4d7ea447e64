import Dispatch
import Foundation
import LibPQ
package import Logging
package import Metrics
import Synchronization

/// Writing batches to PostgreSQL: connecting, failures, row-by-row retries and the dead-letter file.
extension RecordWriter {
    func noteFailure(_ error: any Error, retryIn delay: Duration) {
        let wasConnected = self.state.withLock { state in
            defer {
                state.counters.connected = false
                state.counters.failedBatches += 1
            }
            return state.counters.connected
        }
        if wasConnected || self.state.withLock({ $0.counters.failedBatches }) <= 1
            || self.state.withLock({ $0.counters.failedBatches }).isPowerOfTwo
        {
            self.logger.warning(
                "database unavailable; spooling records and retrying",
                metadata: ["error": "\(error)", "retry.in_ms": "\(delay.milliseconds)"])
        }
    }

    /// Writes a batch in one transaction; a batch the server refuses for one row's data is retried
    /// row by row. Written rows are removed from `batch`. Returns `nil` when the batch could not be
    /// written for a reason that is not a row's (the connection, a read-only standby, a revoked
    /// grant, a timeout…): the rest is kept, and the caller backs off.
    func write(_ batch: inout [Record], on connection: PostgresConnection) -> Int? {
        let count = batch.count
        let writer = self.identity.withLock { $0 }
        do {
            try Record.write(batch, on: connection, as: writer)
            self.state.withLock { $0.counters.written += count }
            self.metrics.written.increment(by: count)
            batch.removeAll(keepingCapacity: true)
            return count
        } catch let fenced as Record.Fenced {
            // Another instance holds the lease now: what this one still had is not written (the
            // new active has its own view of the plant), and this one steps down.
            self.state.withLock { $0.counters.fenced += count }
            self.logger.error(
                "records refused: this instance lost a lease", metadata: ["records": "\(count)", "lease": "\(fenced)"])
            batch.removeAll(keepingCapacity: true)
            self.fencedHandler.withLock { $0 }?(fenced.lost)
            return count
        } catch let error as PostgresError where error.isRowSpecific {
            self.state.withLock { $0.counters.failedBatches += 1 }
            self.logger.error("record batch rejected; writing rows one by one", metadata: ["error": "\(error)"])
            do {
                try self.writeIndividually(&batch, on: connection)
                return count
            } catch {
                self.noteFailure(error, retryIn: .zero)
                return nil
            }
        } catch {
            self.noteFailure(error, retryIn: .zero)
            return nil
        }
    }

    func connect() throws -> PostgresConnection {
        let connection = try PostgresConnection(conninfo: self.settings.url)
        if self.migrate {
            let report = try Migrations.apply(on: connection)
            if !report.applied.isEmpty {
                self.logger.notice("database migrated", metadata: ["db.schema_version": "\(report.current)"])
            }
        }
        self.state.withLock { $0.counters.connected = true }
        self.logger.info("record writer connected", metadata: ["db.endpoint": "\(connection.endpointDescription)"])
        return connection
    }

    /// Writes rows one at a time. A row the server refuses for its own data is written again with
    /// its JSON kept as text, and if that is refused too, set aside in the dead-letter file (counted,
    /// logged and alerted). Rows written or set aside are removed from `batch`; any other error stops
    /// and is rethrown with the rest kept.
    private func writeIndividually(_ batch: inout [Record], on connection: PostgresConnection) throws {
        while let record = batch.first {
            do {
                try Record.write([record], on: connection, as: self.identity.withLock { $0 })
                self.state.withLock { $0.counters.written += 1 }
                self.metrics.written.increment()
            } catch let error as PostgresError where error.isRowSpecific {
                // Once more with its JSON as text; a second refusal of the row's own data sets it
                // aside, anything else (the connection broke meanwhile) keeps it for later.
                do {
                    guard let text = record.withJSONAsText() else { throw error }
                    try Record.write([text], on: connection, as: self.identity.withLock { $0 })
                    self.state.withLock { $0.counters.written += 1 }
                    self.metrics.written.increment()
                    self.logger.warning(
                        "record's JSON refused by the database; kept as text",
                        metadata: ["record.id": "\(record.id)", "error": "\(error)"])
                } catch let again as PostgresError where again.isRowSpecific {
                    try self.setAside(record, error: again)
                }
            }
            batch.removeFirst()
        }
    }

    /// Puts one refused record into the dead-letter file. Throws (keeping the record where it is)
    /// when that file cannot be written either: a refused row is never silently dropped.
    private func setAside(_ record: Record, error: PostgresError) throws {
        let now = EpochMilliseconds.now()
        let line = DeadLetter.line(record: record, sqlState: error.sqlState, error: error.message, at: now)
        if self.deadLetter.path != nil {
            do {
                try self.deadLetter.append(line)
            } catch let fileError {
                self.logger.critical(
                    "record refused by the database and the dead-letter file cannot be written; keeping it",
                    metadata: ["record.id": "\(record.id)", "error": "\(error)", "file.error": "\(fileError)"])
                throw error
            }
        } else {
            self.logger.critical("record refused by the database (no spool directory: logged in full)", metadata: ["record": "\(String(decoding: line, as: UTF8.self))"])
        }
        let total = self.state.withLock { state -> Int in
            state.counters.rejectedRecords += 1
            return state.counters.rejectedRecords
        }
        self.metrics.rejected.increment()
        self.logger.error(
            "record refused by the database; set aside in the dead-letter file",
            metadata: [
                "record.id": "\(record.id)", "error": "\(error)", "file": "\(self.deadLetter.path ?? "(log)")",
                "record.set_aside_total": "\(total)",
            ])
        self.report(.recordSetAside(total: total, file: self.deadLetter.path, sqlState: error.sqlState))
    }
}
