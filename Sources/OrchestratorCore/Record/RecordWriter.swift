import Dispatch
import Foundation
import LibPQ
package import Logging
package import Metrics
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
        /// Records the database refused for their own data, set aside in the dead-letter file.
        package var rejectedRecords = 0
        package var connected = false
        /// Records appended to the spool, and bytes in it not yet written to the database.
        package var spooled = 0
        package var spooledBytes = 0
        /// Tag-state snapshots upserted.
        package var snapshotsWritten = 0
        /// Corrupt spool bytes skipped (moved aside) while running, and at open.
        package var corruptBytesSkipped = 0
        /// Timed syncs of appends made while no batch was read (`spool_fsync: batch`).
        package var timedSyncs = 0
    }

    private struct State: ~Copyable {
        var pending: [Record] = []
        /// Latest snapshot per tag, waiting for the next write (state, not history: never spooled).
        var snapshots: [String: TagSnapshot] = [:]
        var stopping = false
        var counters = Counters()
        /// Records in the spool not yet written.
        var backlog = 0
        /// The open "spool nearly full" alert, if any.
        var pressureAlert: AlertEvent?
        /// The open "records set aside" alert, if any.
        var deadLetterAlert: AlertEvent?
    }

    /// Where the writer's own alerts go (the "spool nearly full" one).
    private let alertSinks = Mutex<[any AlertSink]>([])

    /// Sets the sinks of the writer's own alerts (publisher, log); the record itself is added.
    package func attachAlertSinks(_ sinks: [any AlertSink]) {
        self.alertSinks.withLock { $0 = sinks }
    }

    private let state = Mutex(State())
    /// The spool doubles as the queue: every record is appended to it (a `write`, no fsync) before
    /// anything else happens to it, so it survives the process being killed; the writer thread
    /// syncs it per batch, writes the batch and advances the replay offset.
    private let spool: Mutex<Spooled>

    /// The spool and decoded copies of its newest records (so the writer does not parse back what
    /// this process appended), under one lock: the mirror follows every append, read and trim.
    private struct Spooled {
        var spool: Spool?
        var mirror: SpoolMirror
    }
    private let wake = DispatchSemaphore(value: 0)
    /// Appends not yet synced to disk (`spool_fsync: batch`).
    private let unsynced = Atomic<Bool>(false)
    private let deadLetter: DeadLetter
    private let settings: DatabaseSettings
    private let logger: Logger
    private let migrate: Bool

    /// Prometheus-style metrics (exported by whatever `MetricsSystem` backend `dang` bootstraps).
    private struct Instruments: Sendable {
        let spoolBytes: Gauge
        let written: Counter
        let dropped: Counter
        let rejected: Counter
    }

    private let metrics: Instruments

    /// - Parameter metricsFactory: where the writer's metrics go (tests pass their own).
    package init(
        settings: DatabaseSettings, migrate: Bool = true, logger: Logger,
        metricsFactory: any MetricsFactory = MetricsSystem.factory
    ) {
        self.settings = settings
        self.deadLetter = DeadLetter(spoolDirectory: settings.spoolDirectory)
        self.migrate = migrate
        self.logger = logger
        self.metrics = Instruments(
            spoolBytes: Gauge(label: "dang_record_spool_bytes", dimensions: [], factory: metricsFactory),
            written: Counter(label: "dang_record_written_total", dimensions: [], factory: metricsFactory),
            dropped: Counter(label: "dang_record_dropped_total", dimensions: [], factory: metricsFactory),
            rejected: Counter(label: "dang_record_rejected_total", dimensions: [], factory: metricsFactory))
        Gauge(label: "dang_record_spool_capacity_bytes", dimensions: [], factory: metricsFactory).record(settings.spoolCapacity)
        let (spool, problem) = Self.openSpool(settings: settings, logger: logger)
        self.spoolProblem = problem
        self.state.withLock { $0.counters.corruptBytesSkipped = spool?.skippedAtOpen ?? 0 }
        let pending = spool?.pendingBytes ?? 0
        self.metrics.spoolBytes.record(pending)
        self.spool = Mutex(Spooled(spool: spool, mirror: SpoolMirror(capacity: 4 * settings.batchSize)))
        self.state.withLock {
            $0.counters.spooledBytes = pending
            $0.backlog = pending > 0 ? 1 : 0
        }
    }

    package var counters: Counters { self.state.withLock { $0.counters } }

    package func deliver(_ event: AlertEvent) {
        self.enqueue(.alert(event))
    }

    /// Queues a decision for `decisions` (same queue, batches and spool as alerts).
    package func deliver(decision: DecisionRecord) {
        self.enqueue(.decision(decision))
    }

    /// Queues any record (invocations, outcomes, approvals) behind what is already queued.
    package func deliver(record: Record) {
        self.enqueue(record)
    }

    private func enqueue(_ record: Record) {
        // Durable first: into the spool (survives SIGKILL), else the bounded memory queue.
        // While older records wait in memory (the spool was full), newer ones queue behind them.
        let memoryBacklog = self.state.withLock { !$0.pending.isEmpty }
        let appended = self.spool.withLock { spooled -> (ok: Bool, pending: Int, used: Int, capacity: Int)? in
            guard let spool = spooled.spool, !memoryBacklog else { return nil }
            do {
                let payload = record.payload()
                try spool.append([payload], sync: self.settings.spoolFsync == .always)
                if self.settings.spoolFsync == .batch { self.unsynced.store(true, ordering: .relaxed) }
                spooled.mirror.push(record, spoolBytes: Spool.recordHeader + payload.count)
                return (true, spool.pendingBytes, spool.pendingBytes, spool.capacity)
            } catch {
                return (false, spool.pendingBytes, spool.capacity, spool.capacity)  // full: count it as 100 %
            }
        }
        self.checkPressure(appended.map { ($0.used, $0.capacity) })
        let spooled = appended.flatMap { $0.ok ? $0.pending : nil }
        let (accepted, signal) = self.state.withLock { state -> (Bool, Bool) in
            state.counters.enqueued += 1
            if let spooled {
                state.counters.spooled += 1
                state.counters.spooledBytes = spooled
                self.metrics.spoolBytes.record(spooled)
                state.backlog += 1
                return (true, state.backlog == self.settings.batchSize)
            }
            guard state.pending.count < self.settings.queueCapacity else {
                state.counters.dropped += 1
                self.metrics.dropped.increment()
                return (false, false)
            }
            state.pending.append(record)
            return (true, state.pending.count >= self.settings.batchSize)
        }
        if signal { self.wake.signal() }
        if !accepted {
            self.logger.error(
                "record dropped: the spool is full or unavailable and the memory queue is full",
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

    /// Raises a critical `system` alert when the spool passes 90 % of its cap, clears it below 80 %.
    private func checkPressure(_ usage: (used: Int, capacity: Int)?) {
        guard let usage, usage.capacity > 0 else { return }
        let ratio = Double(usage.used) / Double(usage.capacity)
        let now = Int64((Date().timeIntervalSince1970 * 1000).rounded())
        let event = self.state.withLock { state -> AlertEvent? in
            if let open = state.pressureAlert {
                guard ratio < 0.8 else { return nil }
                state.pressureAlert = nil
                return AlertEvent(
                    alertID: open.alertID, state: .cleared, severity: .critical, kind: .system, tag: "orchestrator/spool",
                    topic: self.settings.spoolDirectory, timestamp: now, raisedAt: open.raisedAt, clearedAt: now,
                    value: Double(usage.used), score: ratio, message: "the record spool is back under 80% of its cap")
            }
            guard ratio >= 0.9 else { return nil }
            let raised = AlertEvent(
                alertID: UUID(), state: .raised, severity: .critical, kind: .system, tag: "orchestrator/spool",
                topic: self.settings.spoolDirectory, timestamp: now, raisedAt: now, clearedAt: nil, value: Double(usage.used),
                score: min(1, ratio),
                message: "the record spool is \(Int(ratio * 100))% full (\(usage.used) of \(usage.capacity) bytes): "
                    + "the database has been away long; records are lost when it is full")
            state.pressureAlert = raised
            return raised
        }
        guard let event else { return }
        self.logger.critical("\(event.message)")
        self.enqueue(.alert(event))  // recorded like any alert (the open episode stops recursion)
        for sink in self.alertSinks.withLock({ $0 }) { sink.deliver(event) }
    }

    /// Why the configured spool could not be opened (`nil`: it opened, or none is configured).
    /// `dang run` refuses to start with one: records would be held in memory only.
    package let spoolProblem: String?

    private static func openSpool(settings: DatabaseSettings, logger: Logger) -> (spool: Spool?, problem: String?) {
        guard !settings.spoolDirectory.isEmpty else { return (nil, nil) }
        do {
            let spool = try Spool(
                directory: URL(fileURLWithPath: settings.spoolDirectory), capacity: settings.spoolCapacity,
                fsync: settings.spoolFsync)
            if spool.skippedAtOpen > 0 {
                logger.warning(
                    "spool: a torn last record or corrupt stretches were skipped (corrupt ones moved aside to spool-*.corrupt)",
                    metadata: ["spool.dir": "\(settings.spoolDirectory)", "spool.skipped_bytes": "\(spool.skippedAtOpen)"])
            }
            if spool.hasPending {
                logger.notice(
                    "spool: records not yet in the database (an outage or a stop) will be written first",
                    metadata: ["spool.pending_bytes": "\(spool.pendingBytes)"])
            }
            return (spool, nil)
        } catch {
            logger.critical(
                "spool unavailable: records will only be held in memory",
                metadata: ["spool.dir": "\(settings.spoolDirectory)", "error": "\(error)"])
            return (nil, "\(error)")
        }
    }

    private func loop() {
        var connection: PostgresConnection? = nil
        var backoff = Backoff.reconnect
        var nextAttempt = ContinuousClock.now
        let clock = ContinuousClock()
        var nextRetention = clock.now + .seconds(30)
        let hasSpool = self.spool.withLock { $0.spool != nil }
        // The last spool read was a full batch: more is probably waiting (a backlog after a restart).
        var lastBatchFull = false
        var stopDeadline: ContinuousClock.Instant? = nil
        var lastSync = clock.now

        while true {
            let (stopping, backlog, queued) = self.state.withLock { ($0.stopping, $0.backlog, $0.pending.count) }
            let spoolPending = self.spool.withLock { $0.spool?.hasPending ?? false }
            // Sleep until a full batch or the flush interval, unless there is a backlog to drain now.
            let busy = connection != nil
                && ((spoolPending && (backlog >= self.settings.batchSize || lastBatchFull)) || queued >= self.settings.batchSize)
            if !stopping && !busy {
                let wait = connection == nil ? min(self.settings.flushInterval, max(.zero, nextAttempt - clock.now)) : self.settings.flushInterval
                _ = self.wake.wait(timeout: .now() + max(wait, .milliseconds(1)).timeInterval)
            }

            // `spool_fsync: batch` syncs when a batch is read, which needs the database: while it is
            // away, appends are synced here at least every 200 ms (outside the lock).
            if self.settings.spoolFsync == .batch, self.unsynced.load(ordering: .relaxed), clock.now - lastSync >= .milliseconds(200) {
                self.unsynced.store(false, ordering: .relaxed)
                if let fd = self.spool.withLock({ $0.spool?.fileDescriptor }) { _ = fsync(fd) }
                lastSync = clock.now
                self.state.withLock { $0.counters.timedSyncs += 1 }
            }

            // (Re)connect when due.
            if connection == nil || connection?.isConnected == false {
                connection = nil
                if clock.now >= nextAttempt || (stopping && backoff.attempt == 0) {
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

            // Records held in memory (no spool, or it was full): to the spool if it now has room,
            // else straight to the database.
            var memory = self.state.withLock { state -> [Record] in
                let count = min(state.pending.count, self.settings.batchSize)
                defer { state.pending.removeFirst(count) }
                return Array(state.pending.prefix(count))
            }
            if !memory.isEmpty {
                if let live = connection, !spoolPending {
                    if self.write(&memory, on: live) == nil {
                        connection = nil
                        nextAttempt = clock.now + backoff.next()
                    }
                }
                if !memory.isEmpty { self.requeue(memory) }
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

            // The spool, oldest first, one batch per pass.
            if hasSpool, let live = connection {
                do {
                    let read = try self.spool.withLock { spooled -> (payloads: [[UInt8]], copies: [Record?], next: Int, pending: Int, fd: Int32)? in
                        guard let spool = spooled.spool, spool.hasPending else { return nil }
                        let (payloads, next) = try spool.read(limit: self.settings.batchSize, maxBytes: self.settings.batchBytes)
                        if payloads.isEmpty {
                            // Bytes at the offset that do not read as a record (changed on disk since
                            // open): the spool moved them aside and skips to the next valid record;
                            // everything after them is kept.
                            let skipped = next - spool.replayed
                            try spool.advanceReplayed(to: next)
                            spooled.mirror.removeAll()
                            return ([], [], next, skipped, spool.fileDescriptor)
                        }
                        let copies = spooled.mirror.lookup(
                            pendingBytes: spool.pendingBytes, spoolSizes: payloads.map { Spool.recordHeader + $0.count })
                        return (payloads, copies, next, spool.pendingBytes, spool.fileDescriptor)
                    }
                    // Durable against power loss before the batch is written; outside the lock, so
                    // the ingest thread's appends never wait for the disk.
                    if let read, self.settings.spoolFsync != .never {
                        _ = fsync(read.fd)
                        lastSync = clock.now
                    }
                    if let read {
                        if read.payloads.isEmpty {
                            self.logger.critical(
                                "spool: a corrupt stretch was skipped and moved aside; the records after it are kept",
                                metadata: ["spool.skipped_bytes": "\(read.pending)", "spool.dir": "\(self.settings.spoolDirectory)"])
                            self.state.withLock { $0.counters.corruptBytesSkipped += read.pending }
                        } else {
                            lastBatchFull = read.payloads.count >= self.settings.batchSize
                            // Records appended by this process are still in the mirror; a backlog is decoded.
                            var records = zip(read.payloads, read.copies).compactMap { payload, copy in copy ?? Record(payload: payload) }
                            if records.count < read.payloads.count {
                                self.logger.error("spool: unreadable records skipped", metadata: ["spool.skipped": "\(read.payloads.count - records.count)"])
                            }
                            if self.write(&records, on: live) != nil {
                                let (pending, plan) = try self.spool.withLock { spooled -> (Int, Spool.CompactionPlan?) in
                                    try spooled.spool?.advanceReplayed(to: read.next)
                                    let pending = spooled.spool?.pendingBytes ?? 0
                                    spooled.mirror.trim(pendingBytes: pending)
                                    return (pending, spooled.spool?.compactionPlan())
                                }
                                if let plan { try self.compact(plan) }
                                self.state.withLock {
                                    $0.counters.spooledBytes = pending
                                    self.metrics.spoolBytes.record(pending)
                                    $0.backlog = pending == 0 ? 0 : max(0, $0.backlog - read.payloads.count)
                                }
                            } else {
                                connection = nil
                                nextAttempt = clock.now + backoff.next()
                            }
                        }
                    }
                } catch {
                    self.logger.critical("spool: cannot read; retrying later", metadata: ["error": "\(error)"])
                    connection = nil
                    nextAttempt = clock.now + backoff.next()
                }
            }

            if stopping {
                if stopDeadline == nil { stopDeadline = clock.now + .seconds(10) }
                let queueEmpty = self.state.withLock { $0.pending.isEmpty }
                let spoolEmpty = self.spool.withLock { !($0.spool?.hasPending ?? false) }
                if connection != nil {
                    // The database is here: finish what is queued and spooled, for up to 10 s; what
                    // is left in the spool is written at the next start.
                    if queueEmpty && (spoolEmpty || clock.now >= stopDeadline!) {
                        if !spoolEmpty { self.logger.notice("spool backlog left for the next start") }
                        break
                    }
                } else {
                    // The database is away: the spool keeps its records for the next start;
                    // only records that it could not take are lost.
                    let left = self.state.withLock { state -> Int in
                        defer { state.pending.removeAll() }
                        return state.pending.count
                    }
                    if left > 0 {
                        self.logger.error(
                            "records not written at shutdown: no database and no spool room", metadata: ["record.unwritten": "\(left)"])
                        self.state.withLock { $0.counters.dropped += left }
                        self.metrics.dropped.increment(by: left)
                    }
                    break
                }
            }
        }
        // Synced and closed: its lock is released for the next process (a restart) on this directory.
        self.spool.withLock { spooled in
            try? spooled.spool?.sync()
            spooled.spool = nil
            spooled.mirror.removeAll()
        }
        self.state.withLock { $0.counters.connected = false }
    }

    /// Moves the spool's unwritten tail to a new generation: the bulk copy outside the lock (the
    /// ingest thread keeps appending), the few bytes appended meanwhile and the switch under it.
    private func compact(_ plan: Spool.CompactionPlan) throws {
        let clock = ContinuousClock()
        let started = clock.now
        let handle = try Spool.copyForCompaction(plan)
        try self.spool.withLock { spooled in try spooled.spool?.finishCompaction(plan, handle) }
        self.logger.debug(
            "spool compacted",
            metadata: ["spool.bytes": "\(plan.to - plan.from)", "spool.compaction_ms": "\((clock.now - started).milliseconds)"])
    }

    /// Puts memory-held records into the spool if it has room now, else back at the head of the
    /// memory queue.
    private func requeue(_ records: [Record]) {
        let pendingBytes = self.spool.withLock { spooled -> Int? in
            guard let spool = spooled.spool else { return nil }
            do {
                let payloads = records.map { $0.payload() }
                try spool.append(payloads, sync: true)
                for (record, payload) in zip(records, payloads) { spooled.mirror.push(record, spoolBytes: Spool.recordHeader + payload.count) }
                return spool.pendingBytes
            } catch {
                return nil
            }
        }
        self.state.withLock { state in
            if let pendingBytes {
                state.counters.spooled += records.count
                state.counters.spooledBytes = pendingBytes
                self.metrics.spoolBytes.record(pendingBytes)
                state.backlog += records.count
            } else {
                state.pending.insert(contentsOf: records, at: 0)
            }
        }
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

    /// Writes a batch in one transaction; a batch the server refuses for one row's data is retried
    /// row by row. Written rows are removed from `batch`. Returns `nil` when the batch could not be
    /// written for a reason that is not a row's (the connection, a read-only standby, a revoked
    /// grant, a timeout…): the rest is kept, and the caller backs off.
    private func write(_ batch: inout [Record], on connection: PostgresConnection) -> Int? {
        let count = batch.count
        do {
            try Record.write(batch, on: connection)
            self.state.withLock { $0.counters.written += count }
            self.metrics.written.increment(by: count)
            batch.removeAll(keepingCapacity: true)
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

    /// Writes rows one at a time. A row the server refuses for its own data is written again with
    /// its JSON kept as text, and if that is refused too, set aside in the dead-letter file (counted,
    /// logged and alerted). Rows written or set aside are removed from `batch`; any other error stops
    /// and is rethrown with the rest kept.
    private func writeIndividually(_ batch: inout [Record], on connection: PostgresConnection) throws {
        while let record = batch.first {
            do {
                try Record.write([record], on: connection)
                self.state.withLock { $0.counters.written += 1 }
                self.metrics.written.increment()
            } catch let error as PostgresError where error.isRowSpecific {
                // Once more with its JSON as text; a second refusal of the row's own data sets it
                // aside, anything else (the connection broke meanwhile) keeps it for later.
                do {
                    guard let text = record.withJSONAsText() else { throw error }
                    try Record.write([text], on: connection)
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
        let now = Int64((Date().timeIntervalSince1970 * 1000).rounded())
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
        // One open `system` alert while records have been set aside (an operator looks at the file).
        let event = self.state.withLock { state -> AlertEvent? in
            guard state.deadLetterAlert == nil else { return nil }
            let raised = AlertEvent(
                alertID: UUID(), state: .raised, severity: .warning, kind: .system, tag: "orchestrator/record",
                topic: self.deadLetter.path ?? "", timestamp: now, raisedAt: now, clearedAt: nil, value: Double(total), score: 1,
                message: "a record was refused by the database for its data (\(error.sqlState ?? "?")) and set aside in "
                    + "\(self.deadLetter.path ?? "the log"): nothing is lost, but it needs a look")
            state.deadLetterAlert = raised
            return raised
        }
        guard let event else { return }
        self.enqueue(.alert(event))
        for sink in self.alertSinks.withLock({ $0 }) { sink.deliver(event) }
    }

}
