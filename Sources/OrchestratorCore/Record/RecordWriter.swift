import Dispatch
import Foundation
import LibPQ
package import Logging
import Synchronization

/// Where alert events go after detection: publishers and the record.
package protocol AlertSink: Sendable {
    /// Called on the ingest thread, in order, for every alert transition. Must not block.
    func deliver(_ event: AlertEvent)
}

/// Writes the record to PostgreSQL off the hot path: a bounded in-memory queue, drained by one
/// writer thread in batches (by size and by time), one transaction per batch.
///
/// When the database is unreachable the writer keeps what it holds and reconnects with jittered
/// exponential backoff, so a short outage loses nothing; records beyond `queue_capacity` are
/// counted as dropped and logged (the durable spool that removes that limit is a later stage).
///
/// ### Threading
/// ``deliver(_:)`` may be called from any thread and never waits on PostgreSQL. The connection
/// lives on the writer's own thread (libpq connections are not to be shared between threads).
package final class RecordWriter: AlertSink, Sendable {
    /// Counts for status and tests.
    package struct Counters: Sendable, Equatable {
        package var enqueued = 0
        package var written = 0
        package var dropped = 0
        package var failedBatches = 0
        package var rejectedRecords = 0
        package var connected = false
    }

    private struct State: ~Copyable {
        var pending: [AlertEvent] = []
        var stopping = false
        var counters = Counters()
    }

    private let state = Mutex(State())
    private let wake = DispatchSemaphore(value: 0)
    private let settings: DatabaseSettings
    private let logger: Logger
    private let migrate: Bool

    package init(settings: DatabaseSettings, migrate: Bool = true, logger: Logger) {
        self.settings = settings
        self.migrate = migrate
        self.logger = logger
    }

    package var counters: Counters { self.state.withLock { $0.counters } }

    package func deliver(_ event: AlertEvent) {
        let (accepted, signal) = self.state.withLock { state -> (Bool, Bool) in
            guard state.pending.count < self.settings.queueCapacity else {
                state.counters.dropped += 1
                return (false, false)
            }
            state.pending.append(event)
            state.counters.enqueued += 1
            return (true, state.pending.count == self.settings.batchSize)
        }
        if signal { self.wake.signal() }
        if !accepted {
            self.logger.error(
                "record queue full: alert event dropped",
                metadata: ["alert.id": "\(event.id)", "record.queue_capacity": "\(self.settings.queueCapacity)"])
        }
    }

    /// Runs the writer until ``stop()``; then writes what is still queued (for up to `drainTimeout`
    /// when the database is down) and returns.
    package func run(drainTimeout: Duration = .seconds(10)) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let thread = Thread {
                self.loop(drainTimeout: drainTimeout)
                continuation.resume()
            }
            thread.name = "dang-record-writer"
            thread.start()
        }
    }

    /// Asks the writer to finish: no more waiting for full batches.
    package func stop() {
        self.state.withLock { $0.stopping = true }
        self.wake.signal()
    }

    private func loop(drainTimeout: Duration) {
        var connection: PostgresConnection? = nil
        var batch: [AlertEvent] = []
        var backoff = Backoff()
        var stopDeadline: ContinuousClock.Instant? = nil
        let clock = ContinuousClock()

        // Connect (and migrate) at start so a bad URL or a missing database shows up at once, not
        // with the first alert; failing here is not fatal, the loop retries when there is work.
        do {
            connection = try self.connect()
        } catch {
            self.logger.warning(
                "database unavailable at start; alerts will be held and written when it returns",
                metadata: ["error": "\(error)"])
        }

        while true {
            if batch.isEmpty {
                let stopping = self.state.withLock { $0.stopping }
                if !stopping {
                    _ = self.wake.wait(timeout: .now() + self.settings.flushInterval.timeInterval)
                }
                let (taken, stoppingNow) = self.state.withLock { state -> ([AlertEvent], Bool) in
                    let count = min(state.pending.count, self.settings.batchSize)
                    let taken = Array(state.pending.prefix(count))
                    state.pending.removeFirst(count)
                    return (taken, state.stopping)
                }
                batch = taken
                if batch.isEmpty {
                    if stoppingNow { break }
                    continue
                }
            }
            if stopDeadline == nil, self.state.withLock({ $0.stopping }) {
                stopDeadline = clock.now.advanced(by: drainTimeout)
            }
            if let deadline = stopDeadline, clock.now >= deadline {
                let left = batch.count + self.state.withLock { $0.pending.count }
                self.logger.error(
                    "database still unavailable at shutdown: records not written",
                    metadata: ["record.unwritten": "\(left)"])
                self.state.withLock {
                    $0.counters.dropped += left
                    $0.pending.removeAll()
                }
                break
            }

            // Connecting (and migrating) is never the batch's fault: any failure there is retried.
            var failure: (any Error)? = nil
            if connection == nil || connection?.isConnected == false {
                connection = nil
                do {
                    connection = try self.connect()
                    backoff.reset()
                } catch {
                    failure = error
                }
            }
            if let live = connection {
                do {
                    try self.write(batch, on: live)
                    self.state.withLock { $0.counters.written += batch.count }
                    batch.removeAll(keepingCapacity: true)
                } catch let error as PostgresError where !error.isTransient {
                    // The server refused the batch itself: isolate the bad rows so the good ones land.
                    self.state.withLock { $0.counters.failedBatches += 1 }
                    self.logger.error("record batch rejected; writing rows one by one", metadata: ["error": "\(error)"])
                    do {
                        try self.writeIndividually(&batch, on: live)
                    } catch {
                        failure = error
                    }
                } catch {
                    failure = error
                }
            }
            guard let failure else { continue }

            let wasConnected = self.state.withLock { state in
                defer {
                    state.counters.connected = false
                    state.counters.failedBatches += 1
                }
                return state.counters.connected
            }
            connection = nil
            var delay = backoff.next()
            if let deadline = stopDeadline { delay = min(delay, max(.zero, deadline - clock.now)) }
            if wasConnected || backoff.attempt <= 1 || backoff.attempt.isPowerOfTwo {
                self.logger.warning(
                    "database unavailable; holding records and retrying",
                    metadata: [
                        "error": "\(failure)", "record.held": "\(batch.count + self.state.withLock { $0.pending.count })",
                        "retry.in_ms": "\(delay.milliseconds)",
                    ])
            }
            // Interruptible: stop() (or a full batch) wakes the writer early.
            _ = self.wake.wait(timeout: .now() + delay.timeInterval)
        }
        self.state.withLock { $0.counters.connected = false }
    }

    private func connect() throws -> PostgresConnection {
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

    private func write(_ batch: [AlertEvent], on connection: PostgresConnection) throws {
        try connection.withTransaction { connection in
            for event in batch {
                try Self.insert(event, on: connection)
            }
        }
    }

    /// Writes rows one at a time, dropping (and counting) only those the server refuses; rows
    /// written are removed from `batch`. A transient error stops and is rethrown with the rest kept.
    private func writeIndividually(_ batch: inout [AlertEvent], on connection: PostgresConnection) throws {
        while let event = batch.first {
            do {
                try Self.insert(event, on: connection)
                self.state.withLock { $0.counters.written += 1 }
            } catch let error as PostgresError where !error.isTransient {
                self.state.withLock { $0.counters.rejectedRecords += 1 }
                self.logger.error(
                    "alert record rejected by the database", metadata: ["alert.id": "\(event.id)", "error": "\(error)"])
            }
            batch.removeFirst()
        }
    }

    /// One alert transition. Raising inserts the episode's row; clearing updates it (or inserts it,
    /// should the raise never have reached the database). Replaying a record is harmless.
    static func insert(_ event: AlertEvent, on connection: PostgresConnection) throws {
                switch event.state {
        case .raised:
            try connection.query(
                """
                INSERT INTO alerts (alert_id, tag, topic, kind, severity, state, ts, raised_at, value, score, message)
                VALUES ($1, $2, $3, $4, $5, 'raised', to_timestamp($6::double precision / 1000),
                        to_timestamp($7::double precision / 1000), $8, $9, $10)
                ON CONFLICT (alert_id) DO NOTHING
                """,
                [
                    event.id, event.tag, event.topic, event.kind.rawValue, event.severity.rawValue, event.timestamp,
                    event.raisedAt, event.value, event.score, event.message,
                ])
        case .cleared:
            try connection.query(
                """
                INSERT INTO alerts (alert_id, tag, topic, kind, severity, state, ts, raised_at, cleared_at,
                                    value, score, message, cleared_value, cleared_message)
                VALUES ($1, $2, $3, $4, $5, 'cleared', to_timestamp($6::double precision / 1000),
                        to_timestamp($7::double precision / 1000), to_timestamp($8::double precision / 1000),
                        $9, $10, $11, $9, $11)
                ON CONFLICT (alert_id) DO UPDATE
                SET state = 'cleared', cleared_at = EXCLUDED.cleared_at,
                    cleared_value = EXCLUDED.cleared_value, cleared_message = EXCLUDED.cleared_message
                """,
                [
                    event.id, event.tag, event.topic, event.kind.rawValue, event.severity.rawValue, event.timestamp,
                    event.raisedAt, event.clearedAt ?? event.raisedAt, event.value, event.score, event.message,
                ])
        }
    }
}

/// Jittered exponential backoff: 0.25 s doubling to 30 s, each delay drawn from [½d, d].
struct Backoff {
    private(set) var attempt = 0
    var base: Duration = .milliseconds(250)
    var cap: Duration = .seconds(30)

    mutating func next() -> Duration {
        self.attempt += 1
        let exponent = min(self.attempt - 1, 16)
        let ceiling = min(self.base * (1 << exponent), self.cap)
        let ms = ceiling.milliseconds
        return .milliseconds(Int64.random(in: (ms / 2)...max(ms / 2, ms)))
    }

    mutating func reset() { self.attempt = 0 }
}

extension Duration {
    var timeInterval: Double {
        Double(self.components.seconds) + Double(self.components.attoseconds) / 1e18
    }

    var milliseconds: Int64 {
        self.components.seconds * 1000 + self.components.attoseconds / 1_000_000_000_000_000
    }
}

extension Int {
    fileprivate var isPowerOfTwo: Bool { self > 0 && self & (self - 1) == 0 }
}
