import Dispatch
import Foundation
import LibPQ
package import Logging
package import Metrics
import Synchronization

/// The writer thread: drains the memory queue, the tag-state snapshots, retention and the spool into the database.
extension RecordWriter {
    func loop() {
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
        // An idle connection is probed now and then: a database that went away is noticed (status,
        // metrics, the spool taking over) within seconds, not at the next write.
        var nextProbe = clock.now + Self.probeInterval

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
                var taken: [TagSnapshot] = []
                swap(&taken, &state.snapshots)
                return connection == nil ? [] : taken
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

            if !stopping, let live = connection, clock.now >= nextProbe {
                nextProbe = clock.now + Self.probeInterval
                do {
                    _ = try live.query("SELECT 1")
                } catch {
                    self.noteFailure(error, retryIn: .zero)
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

    /// How often an open connection is probed (`SELECT 1`).
    static let probeInterval: Duration = .seconds(2)

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
}
