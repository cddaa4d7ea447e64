import Synchronization
import Testing

@testable import OrchestratorCore

/// The orchestrator's own alerts: one episode per condition, raised once, cleared with its id.
@Suite struct SystemAlertsTests {
    final class Sink: AlertSink {
        let events = Mutex<[AlertEvent]>([])
        func deliver(_ event: AlertEvent) { self.events.withLock { $0.append(event) } }
    }

    @Test func `a full spool raises one critical episode, and its clear carries the same id`() {
        let sink = Sink()
        let alerts = SystemAlerts(sinks: [sink])
        alerts.report(.spool(full: true, used: 95, capacity: 100, directory: "/var/lib/dang"), at: 1_000)
        alerts.report(.spool(full: true, used: 97, capacity: 100, directory: "/var/lib/dang"), at: 2_000)
        alerts.report(.spool(full: false, used: 70, capacity: 100, directory: "/var/lib/dang"), at: 3_000)
        alerts.report(.spool(full: false, used: 10, capacity: 100, directory: "/var/lib/dang"), at: 4_000)
        let events = sink.events.withLock { $0 }
        #expect(events.map(\.state) == [.raised, .cleared])
        #expect(events.allSatisfy { $0.kind == .system && $0.severity == .critical && $0.tag == "orchestrator/spool" })
        #expect(events[0].alertID == events[1].alertID)
        #expect(events[1].raisedAt == 1_000 && events[1].clearedAt == 3_000)
        #expect(events[0].message.contains("95% full"))
    }

    @Test func `records set aside raise one warning while it stays open, whatever the count`() {
        let sink = Sink()
        let alerts = SystemAlerts(sinks: [sink])
        for total in 1...5 { alerts.report(.recordSetAside(total: total, file: "/spool/dead-letter.jsonl", sqlState: "22008"), at: 10) }
        let events = sink.events.withLock { $0 }
        #expect(events.count == 1)
        #expect(events.first?.tag == "orchestrator/record" && events.first?.severity == .warning)
        #expect(events.first?.message.contains("22008") == true)
        #expect(events.first?.topic == "/spool/dead-letter.jsonl")
    }
}
