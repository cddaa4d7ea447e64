import Dispatch
import Foundation
import LibPQ
package import Logging
package import Metrics
import Synchronization

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
        /// Records refused because this instance no longer held the active lease (fencing).
        package var fenced = 0
    }

    struct State: ~Copyable {
        var pending: [Record] = []
        /// Latest snapshot per tag, waiting for the next write (state, not history: never spooled).
        /// The array the pipeline delivered, taken as it is: the writer drains it within a flush
        /// interval, and snapshots come every `snapshot_interval`, so a second delivery rarely
        /// finds one waiting (then ``merge(_:into:)``). Kept by tag in a dictionary, 10,000 tags'
        /// snapshots held 1.3 MB for good and were copied out again each time.
        var snapshots: [TagSnapshot] = []
        var stopping = false
        var counters = Counters()
        /// Records in the spool not yet written.
        var backlog = 0
        /// Whether the spool is reported past 90 % of its cap (until it is back under 80 %).
        var spoolFull = false
    }

    /// What the writer notices about itself, for the orchestrator to make alerts of (the record
    /// only records: ``SystemAlerts`` makes the episodes).
    package enum Condition: Sendable, Equatable {
        /// The spool passed 90 % of its cap (`full`), or came back under 80 %.
        case spool(full: Bool, used: Int, capacity: Int)
        /// A record refused by the database for its data was set aside (`total` so far).
        case recordSetAside(total: Int, file: String?, sqlState: String?)
    }

    /// Where ``Condition``s go.
    let conditionHandler = Mutex<(@Sendable (Condition) -> Void)?>(nil)

    /// Sets where the writer's ``Condition``s go (called on the thread that noticed them; must not block).
    package func reportConditions(to handler: @escaping @Sendable (Condition) -> Void) {
        self.conditionHandler.withLock { $0 = handler }
    }

    func report(_ condition: Condition) {
        self.conditionHandler.withLock { $0 }?(condition)
    }

    let state = Mutex(State())
    /// Who writes: the instance id, and the lease while this instance is the active one (``Record/Writer``).
    let identity = Mutex(Record.Writer())
    /// False on a standby (`ha.enabled`): it records nothing, not even into its spool.
    private let acting = Atomic<Bool>(true)
    /// Called when a batch was refused for a lease no longer held (the orchestrator steps down).
    let fencedHandler = Mutex<(@Sendable ([Record.Writer.Lease]) -> Void)?>(nil)
    /// The spool doubles as the queue: every record is appended to it (a `write`, no fsync) before
    /// anything else happens to it, so it survives the process being killed; the writer thread
    /// syncs it per batch, writes the batch and advances the replay offset.
    let spool: Mutex<Spooled>

    /// The spool and decoded copies of its newest records (so the writer does not parse back what
    /// this process appended), under one lock: the mirror follows every append, read and trim.
    struct Spooled {
        var spool: Spool?
        var mirror: SpoolMirror
    }
    let wake = DispatchSemaphore(value: 0)
    /// Appends not yet synced to disk (`spool_fsync: batch`).
    let unsynced = Atomic<Bool>(false)
    let deadLetter: DeadLetter
    let settings: DatabaseSettings
    let logger: Logger
    let migrate: Bool

    /// Prometheus-style metrics (exported by whatever `MetricsSystem` backend `dang` bootstraps).
    struct Instruments: Sendable {
        let spoolBytes: Gauge
        let written: Counter
        let dropped: Counter
        let rejected: Counter
    }

    let metrics: Instruments

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

    /// The instance id written on decision and invocation rows.
    package func setInstance(_ instance: String) { self.identity.withLock { $0.instance = instance } }

    /// Records from now on (`true`: single instance, or the active) or not at all (a standby); with a
    /// lease, every batch is fenced by it. Standing down keeps the lease it acted under: what it
    /// spooled then and could not write yet is written under that epoch, so refused once another
    /// instance holds the lease (not written as a standby's, unfenced).
    package func setActing(_ acting: Bool, lease: Record.Writer.Lease?) {
        self.setActing(acting, leases: lease.map { [$0] } ?? [])
    }

    /// The same with the leases of several shards: acting, its batches are fenced by all of them.
    package func setActing(_ acting: Bool, leases: [Record.Writer.Lease]) {
        self.identity.withLock { if acting || $0.leases.isEmpty { $0.leases = leases } }
        self.acting.store(acting, ordering: .relaxed)
    }

    package var isActing: Bool { self.acting.load(ordering: .relaxed) }

    /// Where a fenced batch is reported (the leases no longer held).
    package func onFenced(_ handler: @escaping @Sendable ([Record.Writer.Lease]) -> Void) {
        self.fencedHandler.withLock { $0 = handler }
    }

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

    func enqueue(_ record: Record) {
        guard self.acting.load(ordering: .relaxed) else { return }
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
        guard !snapshots.isEmpty, self.acting.load(ordering: .relaxed) else { return }
        self.state.withLock { state in
            if state.snapshots.isEmpty {
                state.snapshots = snapshots
            } else {
                Self.merge(snapshots, into: &state.snapshots)
            }
        }
    }

    /// Adds `newer` to the waiting snapshots: a tag's newer snapshot replaces its older one.
    static func merge(_ newer: [TagSnapshot], into waiting: inout [TagSnapshot]) {
        var position: [String: Int] = [:]
        position.reserveCapacity(waiting.count)
        for (index, snapshot) in waiting.enumerated() { position[snapshot.tag] = index }
        for snapshot in newer {
            if let index = position[snapshot.tag] {
                waiting[index] = snapshot
            } else {
                position[snapshot.tag] = waiting.count
                waiting.append(snapshot)
            }
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

    /// Reports the spool passing 90 % of its cap, and coming back under 80 %.
    private func checkPressure(_ usage: (used: Int, capacity: Int)?) {
        guard let usage, usage.capacity > 0 else { return }
        let ratio = Double(usage.used) / Double(usage.capacity)
        let changed = self.state.withLock { state -> Bool? in
            if state.spoolFull {
                guard ratio < 0.8 else { return nil }
                state.spoolFull = false
                return false
            }
            guard ratio >= 0.9 else { return nil }
            state.spoolFull = true
            return true
        }
        guard let full = changed else { return }
        if full {
            self.logger.critical(
                "the record spool is nearly full: the database has been away long; records are lost when it is full",
                metadata: ["spool.bytes": "\(usage.used)", "spool.capacity": "\(usage.capacity)"])
        }
        // The report's alert comes back here to be recorded like any alert (the flag stops recursion).
        self.report(.spool(full: full, used: usage.used, capacity: usage.capacity))
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

}
