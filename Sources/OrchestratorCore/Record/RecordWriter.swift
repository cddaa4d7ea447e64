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
/// When the database is unreachable (or a batch fails for a transient reason) records go to the
/// durable ``Spool`` on local disk, and are written from it, in order, when the database returns;
/// reconnection uses jittered exponential backoff. Writes are idempotent on the alert id, so a
/// record replayed twice lands once.
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
        /// Records appended to the spool, and bytes in it not yet written to the database.
        package var spooled = 0
        package var spooledBytes = 0
        /// Tag-state snapshots upserted.
        package var snapshotsWritten = 0
    }

    private struct State: ~Copyable {
        var pending: [Record] = []
        /// Latest snapshot per tag, waiting for the next write (state, not history: never spooled).
        var snapshots: [String: TagSnapshot] = [:]
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
        self.enqueue(.alert(event))
    }

    /// Queues a decision for `decisions` (same queue, batches and spool as alerts).
    package func deliver(decision: DecisionRecord) {
        self.enqueue(.decision(decision))
    }

    private func enqueue(_ record: Record) {
        let (accepted, signal) = self.state.withLock { state -> (Bool, Bool) in
            guard state.pending.count < self.settings.queueCapacity else {
                state.counters.dropped += 1
                return (false, false)
            }
            state.pending.append(record)
            state.counters.enqueued += 1
            return (true, state.pending.count >= self.settings.batchSize)
        }
        if signal { self.wake.signal() }
        if !accepted {
            self.logger.error(
                "record queue full: record dropped",
                metadata: ["record.id": "\(record.id)", "record.queue_capacity": "\(self.settings.queueCapacity)"])
        }
    }

    /// Queues tag-state snapshots for `tag_state`; a newer snapshot of a tag replaces an older one.
    package func deliver(snapshots: [TagSnapshot]) {
        guard !snapshots.isEmpty else { return }
        self.state.withLock { state in
            for snapshot in snapshots { state.snapshots[snapshot.tag] = snapshot }
        }
    }

    /// Reads `tag_state` once (for warming up detectors at start); `nil` if the database is away.
    package func loadTagState() -> [TagSnapshot]? {
        do {
            let connection = try PostgresConnection(conninfo: self.settings.url)
            try Migrations.apply(on: connection)
            return try TagStateStore.load(on: connection)
        } catch {
            self.logger.warning("tag_state not loaded; detectors start cold", metadata: ["error": "\(error)"])
            return nil
        }
    }

    /// Runs the writer until ``stop()``; then writes what is still queued — to the database if it is
    /// there, else to the spool — and returns.
    package func run() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let thread = Thread {
                self.loop()
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

    private func openSpool() -> Spool? {
        guard !self.settings.spoolDirectory.isEmpty else { return nil }
        do {
            let spool = try Spool(
                directory: URL(fileURLWithPath: self.settings.spoolDirectory), capacity: self.settings.spoolCapacity,
                fsync: self.settings.spoolFsync)
            if spool.skippedAtOpen > 0 {
                self.logger.warning(
                    "spool: a torn or corrupt record at its end was skipped",
                    metadata: ["spool.dir": "\(self.settings.spoolDirectory)", "spool.skipped_bytes": "\(spool.skippedAtOpen)"])
            }
            if spool.hasPending {
                self.logger.notice(
                    "spool: records from an earlier outage will be written first",
                    metadata: ["spool.pending_bytes": "\(spool.pendingBytes)"])
            }
            self.state.withLock { $0.counters.spooledBytes = spool.pendingBytes }
            return spool
        } catch {
            self.logger.critical(
                "spool unavailable: records will only be held in memory while the database is away",
                metadata: ["spool.dir": "\(self.settings.spoolDirectory)", "error": "\(error)"])
            return nil
        }
    }

    private func loop() {
        var connection: PostgresConnection? = nil
        var backoff = Backoff()
        var nextAttempt = ContinuousClock.now
        let clock = ContinuousClock()
        var nextRetention = clock.now + .seconds(30)
        let spool = self.openSpool()
        // Records that could go neither to the database nor to the spool (no spool, or it is full).
        var held: [Record] = []

        while true {
            let stopping = self.state.withLock { $0.stopping }
            let spoolPending = spool?.hasPending ?? false
            // Sleep until a full batch or the flush interval, unless there is a backlog to drain now.
            let backlog = self.state.withLock { $0.pending.count >= self.settings.batchSize }
            if !stopping && !backlog && !(connection != nil && (spoolPending || !held.isEmpty)) {
                let wait = connection == nil ? min(self.settings.flushInterval, max(.zero, nextAttempt - clock.now)) : self.settings.flushInterval
                _ = self.wake.wait(timeout: .now() + max(wait, .milliseconds(1)).timeInterval)
            }
            let (taken, stoppingNow) = self.state.withLock { state -> ([Record], Bool) in
                let count = min(state.pending.count, self.settings.batchSize)
                let taken = Array(state.pending.prefix(count))
                state.pending.removeFirst(count)
                return (taken, state.stopping)
            }
            var batch = held + taken
            held = []

            // (Re)connect when due.
            if connection == nil || connection?.isConnected == false {
                connection = nil
                if clock.now >= nextAttempt || (stoppingNow && backoff.attempt == 0) {
                    do {
                        connection = try self.connect()
                        backoff.reset()
                    } catch {
                        let delay = backoff.next()
                        nextAttempt = clock.now + delay
                        self.noteFailure(error, retryIn: delay)
                    }
                }
            }

            // New records: straight to the database only when nothing older waits in the spool.
            if !batch.isEmpty, let live = connection, !(spool?.hasPending ?? false) {
                if self.write(&batch, on: live) == nil {
                    connection = nil
                    nextAttempt = clock.now + backoff.next()
                }
            }
            if !batch.isEmpty {
                held = self.spoolOrHold(batch, spool: spool)
            }

            // Tag-state snapshots, when the database is there (state only: dropped if it is not).
            let snapshots = self.state.withLock { state -> [TagSnapshot] in
                defer { state.snapshots.removeAll(keepingCapacity: true) }
                return connection == nil ? [] : Array(state.snapshots.values)
            }
            if !snapshots.isEmpty, let live = connection {
                do {
                    try TagStateStore.upsert(snapshots, on: live)
                    self.state.withLock { $0.counters.snapshotsWritten += snapshots.count }
                } catch {
                    self.logger.warning("tag_state snapshot not written", metadata: ["error": "\(error)"])
                }
            }

            // Retention, now and then, in small batches.
            if let live = connection, !self.settings.retention.isEmpty, self.settings.retentionInterval > .zero,
                clock.now >= nextRetention
            {
                nextRetention = clock.now + self.settings.retentionInterval
                do {
                    let deleted = try Retention.run(self.settings.retention, on: live)
                    let total = deleted.values.reduce(0, +)
                    if total > 0 { self.logger.info("retention: old rows deleted", metadata: ["rows": "\(deleted)"]) }
                } catch {
                    self.logger.warning("retention failed; will retry", metadata: ["error": "\(error)"])
                }
            }

            // Drain the spool, oldest first, while the database is there.
            if let spool, spool.hasPending, let live = connection {
                do {
                    let (payloads, next) = try spool.read(limit: self.settings.batchSize)
                    if payloads.isEmpty {
                        // Pending bytes that no longer read as records (changed on disk since open):
                        // nothing can be recovered from them, and they must not block the rest.
                        self.logger.critical(
                            "spool: unreadable records discarded", metadata: ["spool.discarded_bytes": "\(spool.pendingBytes)"])
                        try spool.discardPending()
                        continue
                    }
                    var records = payloads.compactMap { Record(payload: $0) }
                    if records.count < payloads.count {
                        self.logger.error("spool: unreadable records skipped", metadata: ["spool.skipped": "\(payloads.count - records.count)"])
                    }
                    if self.write(&records, on: live) != nil {
                        try spool.markReplayed(upTo: next)
                        self.state.withLock { $0.counters.spooledBytes = spool.pendingBytes }
                    } else {
                        connection = nil
                        nextAttempt = clock.now + backoff.next()
                    }
                } catch {
                    self.logger.critical("spool: cannot read; retrying later", metadata: ["error": "\(error)"])
                    connection = nil
                    nextAttempt = clock.now + backoff.next()
                }
            }

            if stoppingNow && self.state.withLock({ $0.pending.isEmpty }) {
                if connection != nil {
                    // The database is here: finish draining held records and the spool first.
                    if held.isEmpty && !(spool?.hasPending ?? false) { break }
                } else {
                    // The database is away: what is left is in the spool, except records that
                    // neither it nor the database could take.
                    if !held.isEmpty {
                        self.logger.error(
                            "records not written at shutdown: no database and no spool room",
                            metadata: ["record.unwritten": "\(held.count)"])
                        self.state.withLock { $0.counters.dropped += held.count }
                    }
                    break
                }
            }
        }
        self.state.withLock { $0.counters.connected = false }
    }

    /// Puts records in the spool; returns those it could not take (kept in memory, bounded).
    private func spoolOrHold(_ batch: [Record], spool: Spool?) -> [Record] {
        if let spool {
            do {
                try spool.append(batch.map { $0.payload() })
                self.state.withLock {
                    $0.counters.spooled += batch.count
                    $0.counters.spooledBytes = spool.pendingBytes
                }
                if spool.usedBytes > spool.capacity / 10 * 9 {
                    self.logger.critical(
                        "spool is over 90% full", metadata: ["spool.used_bytes": "\(spool.usedBytes)", "spool.capacity": "\(spool.capacity)"])
                }
                return []
            } catch {
                self.logger.critical("spool: cannot append; holding records in memory", metadata: ["error": "\(error)"])
            }
        }
        // Hold what fits in the queue's capacity; beyond it, count and log the loss.
        let room = max(0, self.settings.queueCapacity - self.state.withLock { $0.pending.count })
        if batch.count > room {
            self.state.withLock { $0.counters.dropped += batch.count - room }
            self.logger.error("records dropped: no database, no spool room", metadata: ["record.dropped": "\(batch.count - room)"])
        }
        return Array(batch.prefix(room))
    }

    private func noteFailure(_ error: any Error, retryIn delay: Duration) {
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

    /// Writes a batch in one transaction; a batch the server refuses is retried row by row. Written
    /// rows are removed from `batch`. Returns `nil` when the connection failed (the rest is kept).
    private func write(_ batch: inout [Record], on connection: PostgresConnection) -> Int? {
        let count = batch.count
        do {
            try Record.write(batch, on: connection)
            self.state.withLock { $0.counters.written += count }
            batch.removeAll(keepingCapacity: true)
            return count
        } catch let error as PostgresError where !error.isTransient {
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

    /// Writes rows one at a time, dropping (and counting) only those the server refuses; rows
    /// written are removed from `batch`. A transient error stops and is rethrown with the rest kept.
    private func writeIndividually(_ batch: inout [Record], on connection: PostgresConnection) throws {
        while let event = batch.first {
            do {
                try Record.write([event], on: connection)
                self.state.withLock { $0.counters.written += 1 }
            } catch let error as PostgresError where !error.isTransient {
                self.state.withLock { $0.counters.rejectedRecords += 1 }
                self.logger.error(
                    "record rejected by the database", metadata: ["record.id": "\(event.id)", "error": "\(error)"])
            }
            batch.removeFirst()
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
