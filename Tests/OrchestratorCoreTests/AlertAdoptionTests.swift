import Foundation
import Testing

@testable import OrchestratorCore

/// After a restart: the episodes a previous run left raised are taken over by the same condition
/// raised again, or closed — never left open (`AlertBook.adopt`).
@Suite struct AlertAdoptionTests {
    static let hiID = UUID(uuidString: "00000000-0000-4000-8000-000000000001")!
    static let anomalyID = UUID(uuidString: "00000000-0000-4000-8000-000000000002")!
    static let unitID = UUID(uuidString: "00000000-0000-4000-8000-000000000003")!

    /// TI-101 was above HI (a warning) and anomalous; the unit r1/cdu/cdu1 was in alarm.
    static func leftOpen() -> [AlertEpisode] {
        [
            AlertEpisode(alertID: hiID, tag: "r1/TI-101", topic: "plant/r1/TI-101", kind: .limit, severity: .warning, raisedAt: 1_000),
            AlertEpisode(alertID: anomalyID, tag: "r1/TI-101", topic: "plant/r1/TI-101", kind: .anomaly, severity: .warning, raisedAt: 1_500),
            AlertEpisode(alertID: unitID, tag: "r1/cdu/cdu1", topic: "plant/r1/TI-101", kind: .multivariate, severity: .warning, raisedAt: 2_000),
        ]
    }

    func raise(_ book: inout AlertBook, _ condition: AlertCondition, tag: String = "r1/TI-101", slot: Int32 = 0, at now: Int64) -> AlertEvent? {
        book.event(
            for: ConditionChange(condition: condition, raised: true, value: 380, score: 1, detail: .none), slot: slot, tag: tag, info: nil,
            topic: "plant/\(tag)", sampleTime: now, now: now)
    }

    @Test func `the same condition raised again takes the episode over: same id, nothing published, cleared as usual`() throws {
        var book = AlertBook()
        book.adopt(Self.leftOpen(), until: 600_000)
        #expect(book.isAdopting)
        // HI again: adopted, no event.
        #expect(self.raise(&book, .limitHigh, at: 10_000) == nil)
        #expect(book.adoptedCount == 1 && book.openCount == 1 && book.openAlarmCount == 1)
        // It clears under the old id and its old raise time.
        let clear = book.event(
            for: ConditionChange(condition: .limitHigh, raised: false, value: 360, score: 0, detail: .none), slot: 0, tag: "r1/TI-101",
            info: nil, topic: "plant/r1/TI-101", sampleTime: 11_000, now: 11_000)
        let cleared = try #require(clear)
        #expect(cleared.alertID == Self.hiID && cleared.state == .cleared && cleared.raisedAt == 1_000)
        // HIHI is another severity: a new episode, not the HI one.
        var fresh = AlertBook()
        fresh.adopt(Self.leftOpen(), until: 600_000)
        let raised = self.raise(&fresh, .limitHighHigh, at: 10_000)
        let hihi = try #require(raised)
        #expect(hihi.alertID != Self.hiID && hihi.severity == .critical)
    }

    @Test func `an episode not raised again by its tag's next samples is closed: one sample for a limit, more for an anomaly`() {
        var book = AlertBook()
        book.adopt(Self.leftOpen(), until: 600_000)
        var events: [AlertEvent] = []
        book.sampleSeen(tag: "r1/TI-101", value: 360, sampleTime: 10_000, now: 10_000, into: &events)
        #expect(events.map(\.alertID) == [Self.hiID])
        #expect(events.first?.state == .cleared && events.first?.kind == .limit && events.first?.value == 360)
        #expect(events.first?.message.contains("left open by the previous run is no longer true") == true)
        events.removeAll()
        for i in 1..<AlertBook.adoptionSamples(.anomaly) - 1 {
            book.sampleSeen(tag: "r1/TI-101", value: 360, sampleTime: 10_000 + Int64(i), now: 10_000, into: &events)
        }
        #expect(events.isEmpty)
        // Another tag's samples do not count.
        book.sampleSeen(tag: "r1/TI-102", value: 1, sampleTime: 20_000, now: 20_000, into: &events)
        #expect(events.isEmpty)
        book.sampleSeen(tag: "r1/TI-101", value: 361, sampleTime: 20_000, now: 20_000, into: &events)
        #expect(events.map(\.alertID) == [Self.anomalyID])
        #expect(book.closedAtStartCount == 2 && book.isAdopting)  // the unit's episode still waits
    }

    @Test func `what is still waiting at the deadline is closed, and then nothing waits`() {
        var book = AlertBook()
        book.adopt(Self.leftOpen(), until: 600_000)
        var events: [AlertEvent] = []
        book.closeUnadopted(now: 599_999, into: &events)
        #expect(events.isEmpty)
        // The unit monitor raises again in time: adopted.
        #expect(self.raise(&book, .multivariate, tag: "r1/cdu/cdu1", slot: 9, at: 300_000) == nil)
        book.closeUnadopted(now: 600_000, into: &events)
        #expect(Set(events.map(\.alertID)) == [Self.hiID, Self.anomalyID])
        #expect(events.allSatisfy { $0.state == .cleared && $0.clearedAt == 600_000 && $0.value.isNaN })
        #expect(!book.isAdopting && book.adoptedCount == 1 && book.closedAtStartCount == 2)
        events.removeAll()
        book.closeUnadopted(now: 700_000, into: &events)
        book.sampleSeen(tag: "r1/TI-101", value: 1, sampleTime: 700_000, now: 700_000, into: &events)
        #expect(events.isEmpty)
    }
}

/// Suppressed by design (`suppress_when`) and out of service: raised and cleared in the book,
/// marked, and not alarms (ISA-18.2).
@Suite struct AlertSuppressionTests {
    static let fuel = TagInfo(limits: .init(lo: 2500, hi: 4200, deadband: 50))

    func change(_ raised: Bool) -> ConditionChange {
        ConditionChange(condition: .limitLow, raised: raised, value: 1000, score: 1, detail: .none)
    }

    func event(_ book: inout AlertBook, _ raised: Bool, tag: String = "r1/FI-110", info: TagInfo? = AlertSuppressionTests.fuel) -> AlertEvent? {
        // One slot per tag, as the pipeline gives them.
        let slot: Int32 = tag.hasSuffix("102") ? 2 : 1
        return book.event(for: self.change(raised), slot: slot, tag: tag, info: info, topic: "plant/\(tag)", sampleTime: 1, now: 1)
    }

    @Test func `while the other tag's latest value passes the test, a raise and its clear are marked by design, and are no alarm`() throws {
        var book = AlertBook()
        book.watchSuppressors(["r1/FI-101": 7], rules: ["r1/FI-110": SuppressWhen(tag: "r1/FI-101", test: .below(100))])
        // No value of FI-101 yet: not suppressed.
        let plain = try #require(self.event(&book, true))
        #expect(plain.suppression == nil && book.openAlarmCount == 1)
        _ = self.event(&book, false)
        book.noteSuppressor(slot: 7, value: 40)
        let raised = try #require(self.event(&book, true))
        #expect(raised.suppression == .byDesign && book.openCount == 1 && book.openAlarmCount == 0)
        // The charge comes back while it stands: the episode stays as it was raised.
        book.noteSuppressor(slot: 7, value: 600)
        let cleared = try #require(self.event(&book, false))
        #expect(cleared.suppression == .byDesign && cleared.alertID == raised.alertID && book.openAlarmCount == 0)
        #expect(try #require(self.event(&book, true)).suppression == nil)
        // The boundary: below is strict.
        #expect(SuppressWhen(tag: "x", test: .below(100)).holds(100) == false)
        #expect(SuppressWhen(tag: "x", test: .above(1)).holds(1.5) && SuppressWhen(tag: "x", test: .equals(0)).holds(0))
    }

    @Test func `a tag out of service has its raises marked out of service until it is put back; other tags are not`() throws {
        var book = AlertBook()
        book.setOutOfService(tag: "r1/TI-101", true)
        let out = try #require(self.event(&book, true, tag: "r1/TI-101", info: nil))
        #expect(out.suppression == .outOfService && book.openAlarmCount == 0)
        #expect(try #require(self.event(&book, true, tag: "r1/TI-102", info: nil)).suppression == nil)
        book.setOutOfService(tag: "r1/TI-101", false)
        _ = self.event(&book, false, tag: "r1/TI-101", info: nil)
        #expect(try #require(self.event(&book, true, tag: "r1/TI-101", info: nil)).suppression == nil)
    }

    @Test func `a suppressed event is recorded with its reason and never published`() throws {
        var event = AlertEvent(
            alertID: UUID(), state: .raised, severity: .warning, kind: .limit, tag: "r1/FI-110", topic: "plant/r1/FI-110", timestamp: 1,
            raisedAt: 1, clearedAt: nil, value: 1, score: 1, message: "m")
        event.suppression = .byDesign
        let decoded = try #require(AlertEvent(json: event.jsonPayload()))
        #expect(decoded == event && decoded.suppression == .byDesign)
    }
}
