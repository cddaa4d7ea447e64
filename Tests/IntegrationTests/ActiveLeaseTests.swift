import Foundation
import LibPQ
import Testing

@testable import OrchestratorCore

/// The lease's rules, round by round, on a real PostgreSQL (docs/availability.md, "The lease"). The
/// rounds are driven by hand (`step`, `checkExpiry`), and every wait is for a state, not a guess
/// of how long a round takes on a loaded machine: a 3 s lease, isolated past 2.5 s without renewal.
@Suite(.timeLimit(.minutes(1)))
struct ActiveLeaseTests {
    static let lease = Duration.seconds(3)

    /// Two instances on a migrated database, both connected (their first rounds, which connect,
    /// are done before any timing matters): `a` holds the lease, `b` stands by.
    static func pair() async throws -> (ActiveLease, ActiveLease, String) {
        let url = try await TestServices.freshDatabase()
        try await offThePool { Result { try Migrations.apply(on: PostgresConnection(conninfo: url)) } }.get()
        let a = ActiveLease(url: url, holder: "a", lease: Self.lease, logger: testLogger)
        let b = ActiveLease(url: url, holder: "b", lease: Self.lease, logger: testLogger)
        await Self.step(a)
        await Self.step(b)
        await Self.step(a)  // a renewal: the lease runs from here
        #expect(a.role == .active && a.epoch == 1 && b.role == .standby)
        return (a, b, url)
    }

    static func step(_ lease: ActiveLease) async { await offThePool { lease.step() } }

    /// Until `a` has gone without renewal past lease − lease / 6.
    static func isolate(_ a: ActiveLease) async throws {
        try await eventually("isolated", timeout: .seconds(10)) {
            a.checkExpiry()
            return a.role == .isolated
        }
    }

    /// Until the row has expired on the server's clock.
    static func expired(_ url: String) async throws {
        try await eventually("the lease row expired", timeout: .seconds(10)) {
            try DecisionLoopTests.rows(url, "SELECT expires_at < now() FROM leases WHERE name = 'active'") == [["t"]]
        }
    }

    @Test func `an isolated holder that answers before the standby's second look keeps its lease, same epoch`() async throws {
        let (a, b, url) = try await Self.pair()
        try await Self.isolate(a)
        try await Self.expired(url)
        await Self.step(b)
        #expect(b.role == .standby)  // a first look only
        await Self.step(a)
        #expect(a.role == .active && a.epoch == 1)
        await Self.step(b)
        #expect(b.role == .standby)
    }

    @Test func `a holder that renewed between the standby's looks gets a round again, even when its row has expired once more`() async throws {
        let (a, b, url) = try await Self.pair()
        try await Self.isolate(a)
        try await Self.expired(url)
        await Self.step(b)
        #expect(b.role == .standby)  // a first look at this expiry
        await Self.step(a)
        #expect(a.role == .active && a.epoch == 1)
        // The standby's next look comes more than a lease after that renewal (a loaded machine): the
        // row has expired again, but it is another expiry, and its holder gets its round.
        _ = try DecisionLoopTests.rows(url, "UPDATE leases SET expires_at = now() - interval '1 millisecond' WHERE name = 'active'")
        await Self.step(b)
        #expect(b.role == .standby)
        await Self.step(b)  // the second look at the same expiry
        #expect(b.role == .active && b.epoch == 2)
    }

    @Test func `a dead holder's lease is taken on the standby's second look, under a new epoch; the old holder then stands by`() async throws {
        let (a, b, url) = try await Self.pair()
        try await Self.isolate(a)  // (what a dead holder's row looks like: not renewed)
        try await Self.expired(url)
        await Self.step(b)
        #expect(b.role == .standby)
        await Self.step(b)
        #expect(b.role == .active && b.epoch == 2)
        // The old holder comes back: its renewal matches no row.
        await Self.step(a)
        #expect(a.role == .standby)
    }

    @Test func `only an isolated holder stands by when another instance announces itself on MQTT`() async throws {
        let (a, _, _) = try await Self.pair()
        a.supersededOnWire(by: "b")
        #expect(a.role == .active)  // the row decides while the database answers
        try await Self.isolate(a)
        a.supersededOnWire(by: "a")  // its own status
        #expect(a.role == .isolated)
        a.supersededOnWire(by: "b")
        #expect(a.role == .standby)
    }
}
