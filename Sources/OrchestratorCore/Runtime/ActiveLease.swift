import Dispatch
import Foundation
import LibPQ
package import Logging
import Synchronization

/// The election of one active instance among those sharing a database (`ha.enabled`;
/// docs/availability.md): a lease row in PostgreSQL, `leases(name = 'active', holder, epoch,
/// expires_at)`, renewed every `lease / 3` by its holder on a connection of its own.
///
/// A lease row rather than an advisory lock: a session lock lives as long as the server believes
/// the session does — after a partition or a dead machine, until TCP keepalives give up, minutes —
/// while the row expires on the server's clock at a known time. And the row carries an epoch that
/// grows with every change of holder: every batch the active writes is fenced by it
/// (``Record/Writer``), so a former active cut off from the database cannot write once another
/// instance has taken over.
///
/// The holder that has not renewed for `lease − lease / 6` (measured from before its last
/// successful renewal was sent, on its own monotonic clock) is *isolated* — before the row can
/// expire on the server. It cannot tell a database that is down for everyone from one cut off from
/// it alone, so it keeps acting (alarms must not stop because the record is away: it spools) until
/// one of these:
/// - another instance announces itself active on `{prefix}/status` (``supersededOnWire(by:)``): it
///   took the lease, so this one stands by at once;
/// - the database answers again: the row still ours with the same epoch (no one took it — taking
///   it raises the epoch), this one is active again; otherwise it stands by;
/// - a batch of its record is refused by the fence.
/// Everything it spooled meanwhile carries its epoch: written if it keeps the lease, refused if
/// another instance took it (which heard on MQTT what it published).
package final class ActiveLease: Sendable {
    package enum Role: String, Sendable {
        case active
        case standby
        /// The lease could not be renewed (the database does not answer); still acting.
        case isolated
    }

    /// One expiry of the row, as a standby saw it: a renewal in between makes a later expiry another.
    private struct Expiry: Equatable {
        var epoch: Int64
        var renewedAt: String
    }

    private struct State {
        var role = Role.standby
        var epoch: Int64 = 0
        /// When the last successful renewal (or acquisition) was sent: monotonic nanoseconds.
        var renewedAt: UInt64 = 0
        /// A standby's last round found the row expired: held by this epoch, last renewed then…
        var sawExpired: Expiry? = nil
        /// …for this many rounds in a row.
        var expiredRounds = 0
    }

    private let url: String
    private let holder: String
    /// The row: `active`, or a shard's (``ShardMap/leaseName(_:)``).
    package let name: String
    private let lease: Duration
    private let logger: Logger
    private let state = Mutex(State())
    /// Set by ``halt()``: no more rounds, no release (a process that died).
    private let halted = Atomic<Bool>(false)
    /// The lease's connection: one round at a time on it, shared by an instance's shard leases
    /// (one connection, not one per shard).
    package final class Connection: @unchecked Sendable {
        fileprivate var current: PostgresConnection?
        fileprivate let lock = NSLock()

        package init() {}
    }
    private let connection: Connection
    /// Whether this instance may take a free or expired row now, given how many rounds in a row it
    /// has seen it expired (0: free) — the shards' fair share (``Orchestrator``); always, by default.
    private let mayAcquire: @Sendable (Int) -> Bool
    /// Called with the new role (and the epoch when active) on every change, on the lease's thread.
    private let handler = Mutex<(@Sendable (Role, Int64) -> Void)?>(nil)

    package init(
        url: String, holder: String, lease: Duration, logger: Logger, name: String = "active", connection: Connection = Connection(),
        mayAcquire: @escaping @Sendable (Int) -> Bool = { _ in true }
    ) {
        self.url = url
        self.holder = holder
        self.lease = lease
        self.logger = logger
        self.name = name
        self.connection = connection
        self.mayAcquire = mayAcquire
    }

    /// Where role changes go (the orchestrator: ``Orchestrator/applyRole(_:epoch:)``).
    package func onChange(_ handler: @escaping @Sendable (Role, Int64) -> Void) {
        self.handler.withLock { $0 = handler }
    }

    private func changed(_ role: Role, _ epoch: Int64) {
        self.handler.withLock { $0 }?(role, epoch)
    }

    package var role: Role { self.state.withLock { $0.role } }
    package var epoch: Int64 { self.state.withLock { $0.epoch } }

    private var leaseMilliseconds: Int64 { max(1, self.lease.milliseconds) }

    /// Renews or tries to acquire every `lease / 3` until cancelled; then releases the lease if it
    /// holds it, so a standby takes over at once instead of after the lease.
    package func run() async {
        await withTaskGroup(of: Void.self) { group in
            // The rounds: one at a time, each on a thread of its own (libpq blocks).
            group.addTask {
                while !Task.isCancelled && !self.halted.load(ordering: .relaxed) {
                    await offTheCooperativePool { self.step() }
                    // Twice as often while isolated (to renew as soon as the database answers) and
                    // while a standby waits to see an expired row a second time.
                    let hurried = self.state.withLock { $0.role == .isolated || $0.sawExpired != nil }
                    try? await Task.sleep(for: hurried ? self.lease / 6 : self.lease / 3)
                }
            }
            // The deadline, on its own: a round that hangs (a connection that does not answer) must
            // not keep this instance acting past its lease.
            group.addTask {
                while !Task.isCancelled && !self.halted.load(ordering: .relaxed) {
                    try? await Task.sleep(for: self.lease / 6)
                    self.checkExpiry()
                }
            }
            await group.next()
            group.cancelAll()
        }
        guard !self.halted.load(ordering: .relaxed) else { return }
        await offTheCooperativePool { self.release() }
    }

    /// One round: the holder renews, the others try to acquire; either steps down when it must.
    package func step() {
        self.connection.lock.lock()
        defer { self.connection.lock.unlock() }
        let sentAt = DispatchTime.now().uptimeNanoseconds
        let (role, epoch) = self.state.withLock { ($0.role, $0.epoch) }
        do {
            let connection = try self.connected()
            switch role {
            case .active, .isolated:
                let renewed = try connection.query(
                    """
                    UPDATE leases SET expires_at = now() + $3 * interval '1 millisecond', renewed_at = now()
                    WHERE name = $4 AND holder = $1 AND epoch = $2 RETURNING epoch
                    """, [self.holder, epoch, self.leaseMilliseconds, self.name])
                if renewed.rows.isEmpty {
                    self.stepDown("another instance holds the lease now")
                } else {
                    let resumed = self.state.withLock { state -> Bool in
                        defer {
                            state.renewedAt = sentAt
                            state.role = .active
                        }
                        return state.role == .isolated
                    }
                    if resumed {
                        self.logger.notice(
                            "the database answers again: this instance still holds the lease",
                            metadata: ["lease": "\(self.name)", "lease.epoch": "\(epoch)", "instance": "\(self.holder)"])
                        self.changed(.active, epoch)
                    }
                }
            case .standby:
                // An expired row is taken only when the previous round saw the same expiry — the
                // same epoch, not renewed since: its holder, isolated while the database was away,
                // gets one round to renew when it answers again (else every database restart hands
                // the lease to whichever instance polls first, and fences the holder's spool). A
                // holder that renewed between two rounds further apart than the lease (a loaded
                // machine) gets its round again. A free row, or one this instance id held before a
                // restart, is taken at once.
                let row = try connection.query(
                    "SELECT epoch, holder = $1, expires_at < now(), renewed_at FROM leases WHERE name = $2", [self.holder, self.name])
                var expiredRounds = 0
                if let fields = row.rows.first, let heldEpoch = fields[0].flatMap({ Int64($0) }), fields[1] != "t" {
                    guard fields[2] == "t" else {
                        self.state.withLock {
                            $0.sawExpired = nil
                            $0.expiredRounds = 0
                        }
                        break
                    }
                    let expiry = Expiry(epoch: heldEpoch, renewedAt: fields[3] ?? "")
                    let rounds = self.state.withLock { state -> Int in
                        state.expiredRounds = state.sawExpired == expiry ? state.expiredRounds + 1 : 1
                        state.sawExpired = expiry
                        return state.expiredRounds
                    }
                    guard rounds >= 2 else { break }
                    expiredRounds = rounds
                }
                // (A row this instance id held before a restart is its own again, share or not.)
                if row.rows.first?[1] != "t" {
                    guard self.mayAcquire(expiredRounds) else { break }
                }
                // Taken when free or expired (or held by this instance id before a restart).
                let acquired = try connection.query(
                    """
                    INSERT INTO leases (name, holder, epoch, expires_at) VALUES ($3, $1, 1, now() + $2 * interval '1 millisecond')
                    ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, epoch = leases.epoch + 1,
                        expires_at = EXCLUDED.expires_at, renewed_at = now()
                    WHERE leases.expires_at < now() OR leases.holder = EXCLUDED.holder
                    RETURNING epoch
                    """, [self.holder, self.leaseMilliseconds, self.name])
                if let text = acquired.rows.first?.first ?? nil, let newEpoch = Int64(text) {
                    self.state.withLock {
                        $0.role = .active
                        $0.epoch = newEpoch
                        $0.renewedAt = sentAt
                        $0.sawExpired = nil
                        $0.expiredRounds = 0
                    }
                    self.logger.notice(
                        self.name == "active" ? "this instance is now the active one" : "this instance now holds \(self.name)",
                        metadata: ["lease": "\(self.name)", "lease.epoch": "\(newEpoch)", "instance": "\(self.holder)"])
                    self.changed(.active, newEpoch)
                }
            }
        } catch {
            self.connection.current = nil
            self.logger.warning("lease: the database is not reachable", metadata: ["lease": "\(self.name)", "error": "\(error)"])
        }
        self.checkExpiry()
    }

    /// The holder that could not renew in time is isolated before its row can expire (checked
    /// every `lease / 6`, whatever the rounds are doing).
    package func checkExpiry() {
        let now = DispatchTime.now().uptimeNanoseconds
        let margin = UInt64((self.lease - self.lease / 6).timeInterval * 1e9)
        let (isolated, epoch) = self.state.withLock { state -> (Bool, Int64) in
            guard state.role == .active, now &- state.renewedAt >= margin else { return (false, 0) }
            state.role = .isolated
            return (true, state.epoch)
        }
        guard isolated else { return }
        self.logger.error(
            "the lease could not be renewed in time: this instance goes on acting, isolated, until another one announces itself or the database answers",
            metadata: ["lease": "\(self.name)", "instance": "\(self.holder)", "lease.epoch": "\(epoch)"])
        self.changed(.isolated, epoch)
    }

    /// Another instance said on MQTT that it is the active one (`{prefix}/status`): an isolated
    /// holder stands by at once; the others go on (the lease row decides while the database answers).
    package func supersededOnWire(by instance: String) {
        guard instance != self.holder, self.role == .isolated else { return }
        self.stepDown("\(instance.prefix(128)) announced itself active on MQTT")
    }

    /// Stops acting (a fenced write, a renewal refused, or another instance heard acting).
    package func stepDown(_ reason: String) {
        let was = self.state.withLock { state -> Role in
            defer { state.role = .standby }
            return state.role
        }
        guard was != .standby else { return }
        self.logger.error("this instance stands by: \(reason)", metadata: ["lease": "\(self.name)", "instance": "\(self.holder)"])
        self.changed(.standby, 0)
    }

    /// Hands the lease over to another instance (a shard beyond this instance's fair share): stands
    /// by first, then lets the row expire now.
    package func giveUp() {
        let was = self.state.withLock { state -> Role in
            defer { state.role = .standby }
            return state.role
        }
        guard was == .active else { return }
        self.logger.notice("\(self.name) is handed over: beyond this instance's share", metadata: ["instance": "\(self.holder)"])
        self.changed(.standby, 0)
        self.connection.lock.lock()
        defer { self.connection.lock.unlock() }
        let epoch = self.epoch
        // No holder: not this instance's to take back as its own at its next round.
        _ = try? self.connected().query(
            "UPDATE leases SET expires_at = now(), holder = '' WHERE name = $3 AND holder = $1 AND epoch = $2", [self.holder, epoch, self.name])
    }

    /// Says this instance is alive (`sharding.shards`): its row `instance/{id}` in `leases`, renewed
    /// for one lease, on this lease's connection. Returns how many instances are alive (their rows
    /// not expired, this one's included), nil when the database does not answer.
    package func presence() -> Int? {
        guard !self.halted.load(ordering: .relaxed) else { return nil }
        self.connection.lock.lock()
        defer { self.connection.lock.unlock() }
        do {
            let connection = try self.connected()
            try connection.query(
                """
                INSERT INTO leases (name, holder, epoch, expires_at) VALUES ('instance/' || $1, $1, 0, now() + $2 * interval '1 millisecond')
                ON CONFLICT (name) DO UPDATE SET expires_at = EXCLUDED.expires_at, renewed_at = now()
                """, [self.holder, self.leaseMilliseconds])
            let live = try connection.query("SELECT count(*) FROM leases WHERE name LIKE 'instance/%' AND expires_at > now()")
            return (live.rows.first?.first ?? nil).flatMap { Int($0) }
        } catch {
            self.connection.current = nil
            return nil
        }
    }

    /// This instance is leaving (a graceful stop): its presence row goes, so the others' shares
    /// grow at once.
    package func absent() {
        self.connection.lock.lock()
        defer { self.connection.lock.unlock() }
        _ = try? self.connected().query("DELETE FROM leases WHERE name = 'instance/' || $1", [self.holder])
    }

    /// Stops renewing, and never gives the lease up: what a killed process does (the fault tests).
    package func halt() {
        self.halted.store(true, ordering: .relaxed)
    }

    /// Whether ``halt()`` was called.
    package var isHalted: Bool { self.halted.load(ordering: .relaxed) }

    /// Gives the lease up (graceful shutdown): its row expires now.
    package func release() {
        self.connection.lock.lock()
        defer { self.connection.lock.unlock() }
        let (role, epoch) = self.state.withLock { ($0.role, $0.epoch) }
        guard role != .standby, let connection = try? self.connected() else { return }
        _ = try? connection.query(
            "UPDATE leases SET expires_at = now() WHERE name = $3 AND holder = $1 AND epoch = $2", [self.holder, epoch, self.name])
        self.state.withLock { $0.role = .standby }
        self.logger.notice("the lease is given up", metadata: ["lease": "\(self.name)", "lease.epoch": "\(epoch)"])
    }

    private func connected() throws -> PostgresConnection {
        if let connection = self.connection.current { return connection }
        let connection = try PostgresConnection(conninfo: self.url)
        // A connection that hangs must not hold the lease loop past the lease.
        _ = try? connection.query("SET statement_timeout = \(max(500, self.leaseMilliseconds / 3))")
        // The table may not exist yet on a new database (the record writer migrates it).
        _ = try Migrations.apply(on: connection)
        self.connection.current = connection
        return connection
    }
}

/// Runs blocking work (libpq) on a thread of its own, not on the cooperative pool.
func offTheCooperativePool<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        Thread.detachNewThread { continuation.resume(returning: work()) }
    }
}
