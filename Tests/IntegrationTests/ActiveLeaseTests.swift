import Foundation
import Testing

@testable import OrchestratorCore

/// The lease's rules, round by round, on a real PostgreSQL (docs/availability.md, "The lease"). The
/// rounds are driven by hand (`step`, `checkExpiry`), so only the lease's own clock matters: 1 s,
/// isolated past 0.84 s without a renewal.
@Suite(.timeLimit(.minutes(1)))
struct ActiveLeaseTests {
    static func pair() throws -> (ActiveLease, ActiveLease) {
        let url = try TestServices.freshDatabase()
        return (
            ActiveLease(url: url, holder: "a", lease: .seconds(1), logger: testLogger),
            ActiveLease(url: url, holder: "b", lease: .seconds(1), logger: testLogger)
        )
    }

    static func step(_ lease: ActiveLease) async { await offThePool { lease.step() } }

    @Test func `an isolated holder that answers before the standby's second look keeps its lease, same epoch`() async throws {
        let (a, b) = try Self.pair()
        await Self.step(a)
        #expect(a.role == .active && a.epoch == 1)
        await Self.step(b)
        #expect(b.role == .standby)
        // No renewal for more than lease − lease / 6: isolated, still acting.
        try await Task.sleep(for: .milliseconds(900))
        a.checkExpiry()
        #expect(a.role == .isolated)
        try await Task.sleep(for: .milliseconds(400))  // the row has expired on the server
        await Self.step(b)
        #expect(b.role == .standby)  // a first look only
        await Self.step(a)
        #expect(a.role == .active && a.epoch == 1)
        await Self.step(b)
        #expect(b.role == .standby)
    }

    @Test func `a dead holder's lease is taken on the standby's second look, under a new epoch; the old holder then stands by`() async throws {
        let (a, b) = try Self.pair()
        await Self.step(a)
        try await Task.sleep(for: .milliseconds(1300))
        await Self.step(b)
        #expect(b.role == .standby)
        await Self.step(b)
        #expect(b.role == .active && b.epoch == 2)
        // The old holder comes back: its renewal matches no row.
        await Self.step(a)
        #expect(a.role == .standby)
    }

    @Test func `only an isolated holder stands by when another instance announces itself on MQTT`() async throws {
        let (a, _) = try Self.pair()
        await Self.step(a)
        a.supersededOnWire(by: "b")
        #expect(a.role == .active)  // the row decides while the database answers
        try await Task.sleep(for: .milliseconds(900))
        a.checkExpiry()
        #expect(a.role == .isolated)
        a.supersededOnWire(by: "a")  // its own status
        #expect(a.role == .isolated)
        a.supersededOnWire(by: "b")
        #expect(a.role == .standby)
    }
}
