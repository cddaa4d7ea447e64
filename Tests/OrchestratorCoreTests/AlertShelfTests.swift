import Foundation
import Logging
import Mosquitto
import Synchronization
import Testing

@testable import OrchestratorCore

/// Shelving (ISA-18.2) without a broker or a database: the shelf itself, what the alert publisher
/// does with a shelved alert, and the alert desk with a journal in memory.
@Suite struct AlertShelfTests {
    /// Keeps what is logged, to see which way a call went.
    struct LogCapture: LogHandler {
        final class Lines: Sendable {
            let entries = Mutex<[(level: Logger.Level, message: String, metadata: Logger.Metadata)]>([])
        }
        let lines: Lines
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { self.metadata[key] }
            set { self.metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            self.lines.entries.withLock { $0.append((event.level, event.message.description, event.metadata ?? [:])) }
        }
    }

    func event(_ tag: String, _ kind: AlertKind, raisedAt: Int64, clearedAt: Int64? = nil) -> AlertEvent {
        AlertEvent(
            alertID: UUID(), state: clearedAt == nil ? .raised : .cleared, severity: .warning, kind: kind, tag: tag,
            topic: "plant/\(tag)", timestamp: raisedAt, raisedAt: raisedAt, clearedAt: clearedAt, value: 1, score: 1, message: "m")
    }

    // MARK: - The shelf

    @Test func `a shelved kind is shelved for its tag only, until the time is up`() {
        let shelf = AlertShelf()
        #expect(!shelf.isShelved(tag: "r1/TI-101", kind: .limit, now: 0))
        shelf.shelve(tag: "r1/TI-101", kind: .limit, until: 1_000)
        #expect(shelf.count == 1)
        #expect(shelf.isShelved(tag: "r1/TI-101", kind: .limit, now: 0))
        #expect(shelf.isShelved(tag: "r1/TI-101", kind: .limit, now: 999))
        #expect(!shelf.isShelved(tag: "r1/TI-101", kind: .anomaly, now: 500))
        #expect(!shelf.isShelved(tag: "r1/TI-102", kind: .limit, now: 500))
        #expect(!shelf.isShelved(tag: "r1/TI-101", kind: .limit, now: 1_000))  // `until` is exclusive
    }

    @Test func `an expired shelf is removed when it is looked at, and then stays off`() {
        let shelf = AlertShelf()
        shelf.shelve(tag: "t", kind: .flatline, until: 100)
        shelf.shelve(tag: "u", kind: .flatline, until: 100)
        #expect(shelf.count == 2)
        #expect(!shelf.isShelved(tag: "t", kind: .flatline, now: 100))
        #expect(shelf.count == 1)  // only the one looked at
        #expect(!shelf.isShelved(tag: "t", kind: .flatline, now: 50))  // gone, even for an earlier time
    }

    @Test func `unshelving ends the shelf at once; shelving again replaces the time`() {
        let shelf = AlertShelf()
        shelf.shelve(tag: "t", kind: .stale, until: 1_000)
        shelf.unshelve(tag: "t", kind: .stale)
        #expect(shelf.count == 0)
        #expect(!shelf.isShelved(tag: "t", kind: .stale, now: 0))
        shelf.unshelve(tag: "never", kind: .stale)  // nothing to remove: no effect
        shelf.shelve(tag: "t", kind: .stale, until: 1_000)
        shelf.shelve(tag: "t", kind: .stale, until: 200)
        #expect(shelf.count == 1)
        #expect(!shelf.isShelved(tag: "t", kind: .stale, now: 500))
    }

    @Test func `every tag and kind is its own shelf, even a tag that looks like a key`() {
        let shelf = AlertShelf()
        shelf.shelve(tag: "a", kind: .limit, until: 1_000)
        #expect(!shelf.isShelved(tag: "limit|a", kind: .limit, now: 0))
        #expect(!shelf.isShelved(tag: "a", kind: .trend, now: 0))
        for kind in AlertKind.allCases where kind != .limit { shelf.shelve(tag: "a", kind: kind, until: 1_000) }
        #expect(shelf.count == AlertKind.allCases.count)
    }

    // MARK: - Publication

    /// A publisher with a client that never connects and room for no queued message: every alert
    /// that reaches the MQTT client is counted in `droppedWhileAway`, one that is held back is not.
    func publisher() throws -> AlertPublisher {
        let publisher = AlertPublisher(prefix: "dang", qos: 1, logger: Logger(label: "test"))
        let options = MQTTConnectionOptions(host: "127.0.0.1", port: 1, clientID: "dang-shelf-test-\(UUID().uuidString.prefix(8))")
        publisher.attach(try MosquittoClient(options: options, onMessage: { _ in }, onEvent: { _ in }))
        publisher.setMaxQueued(0)
        return publisher
    }

    @Test func `a shelved alert is not published; another kind, another tag and an unshelved one are`() throws {
        let publisher = try self.publisher()
        publisher.shelf.shelve(tag: "r1/TI-101", kind: .limit, until: 10_000)
        publisher.deliver(self.event("r1/TI-101", .limit, raisedAt: 5_000))
        #expect(publisher.droppedWhileAway == 0)
        publisher.deliver(self.event("r1/TI-101", .anomaly, raisedAt: 5_000))
        #expect(publisher.droppedWhileAway == 1)
        publisher.deliver(self.event("r1/TI-102", .limit, raisedAt: 5_000))
        #expect(publisher.droppedWhileAway == 2)
        publisher.shelf.unshelve(tag: "r1/TI-101", kind: .limit)
        publisher.deliver(self.event("r1/TI-101", .limit, raisedAt: 5_000))
        #expect(publisher.droppedWhileAway == 3)
    }

    /// Shelving holds back raises only: a clear is published shelved or not (a subscriber that saw
    /// the raise sees it end), and a raise after the shelf's time is published again.
    @Test func `a clear is published while shelved; a raise is held back only within the shelf's time`() throws {
        let publisher = try self.publisher()
        publisher.shelf.shelve(tag: "t", kind: .limit, until: 10_000)
        publisher.deliver(self.event("t", .limit, raisedAt: 1_000, clearedAt: 9_999))
        #expect(publisher.droppedWhileAway == 1)  // published (the test's client is away: counted as dropped)
        publisher.deliver(self.event("t", .limit, raisedAt: 9_000))
        #expect(publisher.droppedWhileAway == 1)  // held back
        publisher.deliver(self.event("t", .limit, raisedAt: 10_000))
        #expect(publisher.droppedWhileAway == 2)
        #expect(publisher.shelf.count == 0)  // the expired shelf was removed on the way
    }

    @Test func `without a client nothing is published and the shelf is not consulted`() {
        let publisher = AlertPublisher(prefix: "dang", qos: 1, logger: Logger(label: "test"))
        publisher.shelf.shelve(tag: "t", kind: .limit, until: 100)
        publisher.deliver(self.event("t", .limit, raisedAt: 5_000))
        #expect(publisher.droppedWhileAway == 0)
        #expect(publisher.shelf.count == 1)  // expired, but nobody looked
    }

    // MARK: - The alert desk, with a journal in memory

    /// Keeps what the desk asks of it; knows one alert.
    final class MemoryJournal: AlertJournal {
        let known = UUID(uuidString: "3eda8af5-bcca-46c8-accc-664c659fd99c")!
        var episode: AlertEpisode {
            AlertEpisode(alertID: self.known, tag: "r1/TI-101", topic: "plant/r1/TI-101", kind: .limit, severity: .warning, raisedAt: 500)
        }
        let acknowledged = Mutex<[(UUID, String?)]>([])
        let stored = Mutex<[ShelvedAlert]>([])

        func acknowledge(alert id: UUID, by: String?) async throws -> AlertDesk.Outcome {
            guard id == self.known else { return .unknown }
            let episode = self.episode
            return self.acknowledged.withLock { list in
                defer { list.append((id, by)) }
                return list.contains { $0.0 == id } ? .already : .done(episode)
            }
        }

        func shelve(alert id: UUID, for duration: Duration, by: String?, reason: String?) async throws -> (episode: AlertEpisode, until: Int64)? {
            guard id == self.known else { return nil }
            let shelved = ShelvedAlert(tag: "r1/TI-101", kind: .limit, until: 1_000 + duration.milliseconds)
            self.stored.withLock { $0.append(shelved) }
            return (self.episode, shelved.until)
        }

        func unshelve(alert id: UUID, by: String?, reason: String?) async throws -> AlertDesk.Outcome {
            guard id == self.known else { return .unknown }
            let removed = self.stored.withLock { stored in
                defer { stored.removeAll() }
                return !stored.isEmpty
            }
            return removed ? .done(self.episode) : .already
        }

        func shelvedAlerts() async throws -> [ShelvedAlert] { self.stored.withLock { $0 } }

        let outOfService = Mutex<[String: OutOfServiceTag]>([:])

        func setOutOfService(tag: String, _ outOfService: Bool, by: String?, reason: String?) async throws -> Bool {
            self.outOfService.withLock { tags in
                guard (tags[tag] != nil) != outOfService else { return false }
                tags[tag] = outOfService ? OutOfServiceTag(tag: tag, since: 7, by: by, reason: reason) : nil
                return true
            }
        }

        func outOfServiceTags() async throws -> [OutOfServiceTag] { self.outOfService.withLock { Array($0.values) } }
    }

    /// What a desk announced.
    final class Announced: Sendable {
        let transitions = Mutex<[AlertTransition]>([])
    }

    func desk(_ lines: LogCapture.Lines, journal: MemoryJournal = MemoryJournal(), announced: Announced? = nil) -> AlertDesk {
        let logger = Logger(label: "test", factory: { (_: String) in LogCapture(lines: lines) })
        return AlertDesk(
            shelf: AlertShelf(), journal: journal, announce: { transition in announced?.transitions.withLock { $0.append(transition) } }, logger: logger)
    }

    @Test(arguments: ["", "not-an-alert-id", "3EDA8AF5-BCCB-46C8-ACCC-664C659FD99", "3EDA8AF5-BCCB-46C8-ACCC-664C659FD99CC"])
    func `an MQTT acknowledgement whose topic does not end in an alert id is refused before the journal`(id: String) {
        let lines = LogCapture.Lines()
        let desk = self.desk(lines)
        desk.acknowledgeFromMQTT(id, payload: Array(#"{"by":"operator"}"#.utf8))
        let logged = lines.entries.withLock { $0 }
        #expect(logged.count == 1)
        #expect(logged.first?.level == .warning)
        #expect(logged.first?.message == "acknowledgement refused: not an alert id")
    }

    @Test func `a refused acknowledgement logs at most 64 characters of what it was given`() {
        let lines = LogCapture.Lines()
        let desk = self.desk(lines)
        desk.acknowledgeFromMQTT(String(repeating: "x", count: 500), payload: [])
        let logged = lines.entries.withLock { $0 }
        #expect(logged.first?.metadata["alert.id"]?.description == String(repeating: "x", count: 64))
    }

    @Test(arguments: [(#"{"by":"operator"}"#, "operator"), ("not json", nil), ("", nil), (#"{"by": 7}"#, nil)] as [(String, String?)])
    func `an MQTT acknowledgement for an alert id is written by the desk's task, with its by when it is a string`(
        payload: String, by: String?
    ) async throws {
        let journal = MemoryJournal()
        let desk = self.desk(LogCapture.Lines(), journal: journal)
        desk.acknowledgeFromMQTT("3eda8af5-bcca-46c8-accc-664c659fd99c", payload: Array(payload.utf8))
        #expect(journal.acknowledged.withLock { $0.isEmpty })  // not on the calling (MQTT) thread
        let task = Task { await desk.run() }
        defer { task.cancel() }
        for _ in 0..<500 where journal.acknowledged.withLock({ $0.isEmpty }) { try await Task.sleep(for: .milliseconds(10)) }
        let written = journal.acknowledged.withLock { $0 }
        #expect(written.count == 1)
        #expect(written.first?.1 == by)
    }

    @Test func `acknowledging twice says already; an unknown alert says unknown`() async throws {
        let desk = self.desk(LogCapture.Lines())
        let id = MemoryJournal().known
        #expect(try await desk.acknowledge(id, by: "a") == .done(MemoryJournal().episode))
        #expect(try await desk.acknowledge(id, by: "b") == .already)
        #expect(try await desk.acknowledge(UUID(), by: "c") == .unknown)
    }

    /// The lifecycle's transitions: each done one is announced once, after the journal has it;
    /// what did nothing (already acknowledged, not shelved, unknown) announces nothing.
    @Test func `acknowledge, shelve and unshelve are announced once each, with who, why and until when`() async throws {
        let journal = MemoryJournal()
        let announced = Announced()
        let desk = self.desk(LogCapture.Lines(), journal: journal, announced: announced)
        #expect(try await desk.unshelve(journal.known, by: "x") == .already)
        _ = try await desk.acknowledge(journal.known, by: "op 1")
        _ = try await desk.acknowledge(journal.known, by: "op 2")
        _ = try await desk.acknowledge(UUID(), by: "op 3")
        #expect(try await desk.shelve(journal.known, for: .seconds(60), by: "op 1", reason: "recalibration") == 61_000)
        #expect(try await desk.shelve(UUID(), for: .seconds(60), by: "op 1") == nil)
        #expect(desk.shelf.isShelved(tag: "r1/TI-101", kind: .limit, now: 60_000))
        #expect(try await desk.unshelve(journal.known, by: "op 2", reason: "done") == .done(journal.episode))
        #expect(!desk.shelf.isShelved(tag: "r1/TI-101", kind: .limit, now: 60_000))
        #expect(try await desk.unshelve(journal.known, by: "op 2") == .already)
        #expect(try await desk.unshelve(UUID(), by: "op 2") == .unknown)
        let transitions = announced.transitions.withLock { $0 }
        #expect(transitions.map(\.state) == [.acknowledged, .shelved, .unshelved])
        #expect(transitions.map(\.by) == ["op 1", "op 1", "op 2"])
        #expect(transitions.map(\.reason) == [nil, "recalibration", "done"])
        #expect(transitions[1].shelvedUntil == 61_000 && transitions[0].shelvedUntil == nil)
        #expect(transitions.allSatisfy { $0.episode == journal.episode && $0.at > 1_700_000_000_000 })
    }

    @Test func `out of service: recorded once, applied and announced; restored after a restart`() async throws {
        let journal = MemoryJournal()
        let applied = Mutex<[(String, Bool)]>([])
        func desk() -> AlertDesk {
            AlertDesk(
                shelf: AlertShelf(), journal: journal, service: { tag, state in applied.withLock { $0.append((tag, state != nil)) } },
                logger: Logger(label: "test"))
        }
        let first = desk()
        #expect(try await first.setOutOfService(tag: "r1/TI-101", true, by: "tech", reason: "replaced"))
        #expect(try await !first.setOutOfService(tag: "r1/TI-101", true, by: "tech", reason: nil))
        #expect(try await first.setOutOfService(tag: "r1/TI-102", true, by: nil, reason: nil))
        #expect(try await first.setOutOfService(tag: "r1/TI-102", false, by: nil, reason: nil))
        #expect(try await !first.setOutOfService(tag: "r1/TI-102", false, by: nil, reason: nil))
        #expect(applied.withLock { $0.map { "\($0.0) \($0.1)" } } == ["r1/TI-101 true", "r1/TI-102 true", "r1/TI-102 false"])
        #expect(try await first.outOfServiceTags().map(\.tag) == ["r1/TI-101"])
        applied.withLock { $0.removeAll() }
        await desk().restoreOutOfService()
        #expect(applied.withLock { $0.map { "\($0.0) \($0.1)" } } == ["r1/TI-101 true"])
    }

    @Test func `a transition is published on the episode's own alert topic, with the fields of its state`() throws {
        let episode = AlertEpisode(alertID: MemoryJournal().known, tag: "r1/cdu/cdu1/TI-101", topic: "plant/r1/cdu/cdu1/TI-101", kind: .limit, severity: .critical, raisedAt: 100)
        let raised = AlertEvent(
            alertID: episode.alertID, state: .raised, severity: .critical, kind: .limit, tag: episode.tag, topic: episode.topic, timestamp: 90,
            raisedAt: 100, clearedAt: nil, value: 1, score: 1, message: "m")
        func object(_ transition: AlertTransition) throws -> [String: Any] {
            try #require(try JSONSerialization.jsonObject(with: Data(transition.jsonPayload())) as? [String: Any])
        }
        let ack = AlertTransition(state: .acknowledged, episode: episode, at: 200, by: "op \"1\"")
        #expect(ack.alertTopic(prefix: "apos") == raised.alertTopic(prefix: "apos"))
        let a = try object(ack)
        #expect(a["state"] as? String == "acknowledged" && a["acked_by"] as? String == "op \"1\"" && a["acked_at"] as? Int == 200)
        #expect(a["alert_id"] as? String == episode.alertID.uuidString.lowercased() && a["raised_at"] as? Int == 100 && a["reason"] == nil)
        let shelf = try object(AlertTransition(state: .shelved, episode: episode, at: 300, by: nil, reason: "why", shelvedUntil: 900))
        #expect(shelf["state"] as? String == "shelved" && shelf["shelved_until"] as? Int == 900 && shelf["reason"] as? String == "why" && shelf["shelved_by"] == nil)
        let unshelf = try object(AlertTransition(state: .unshelved, episode: episode, at: 400, by: "op"))
        #expect(unshelf["state"] as? String == "unshelved" && unshelf["unshelved_by"] as? String == "op" && unshelf["shelved_until"] == nil)
        // A Sparkplug tag's transitions go where its raise went.
        let spb = AlertEpisode(alertID: UUID(), tag: "plant/edge/TT-1", topic: "spBv1.0/plant/DDATA/edge", kind: .limit, severity: .warning, raisedAt: 1)
        #expect(AlertTransition(state: .acknowledged, episode: spb, at: 2, by: nil).alertTopic(prefix: "apos") == "apos/alert/warning/spb/plant/edge/TT-1")
    }

    @Test func `shelving puts the tag and kind on the publisher's shelf, and a restart restores it from the journal`() async throws {
        let journal = MemoryJournal()
        let desk = self.desk(LogCapture.Lines(), journal: journal)
        #expect(try await desk.shelve(UUID(), for: .seconds(60), by: nil) == nil)
        #expect(try await desk.shelve(journal.known, for: .seconds(60), by: "op") == 61_000)
        #expect(desk.shelf.isShelved(tag: "r1/TI-101", kind: .limit, now: 60_000))
        let restarted = self.desk(LogCapture.Lines(), journal: journal)
        #expect(!restarted.shelf.isShelved(tag: "r1/TI-101", kind: .limit, now: 60_000))
        await restarted.restoreShelves()
        #expect(restarted.shelf.isShelved(tag: "r1/TI-101", kind: .limit, now: 60_000))
    }
}
