package import Foundation
package import Logging
import Synchronization

/// Where acknowledgements and shelves are kept (the record's `alerts` table); declared here so the
/// alert stage does not depend on the record.
package protocol AlertJournal: Sendable {
    /// Records the acknowledgement once: `.done` with the episode, `.already`, or `.unknown`.
    func acknowledge(alert id: UUID, by: String?) async throws -> AlertDesk.Outcome
    /// Shelves the alert's tag and kind for `duration`; nil for an unknown alert.
    func shelve(alert id: UUID, for duration: Duration, by: String?, reason: String?) async throws -> (episode: AlertEpisode, until: Int64)?
    /// Ends the shelving of the alert's tag and kind: `.done` with the episode, `.already` when it
    /// is not shelved, `.unknown`.
    func unshelve(alert id: UUID, by: String?, reason: String?) async throws -> AlertDesk.Outcome
    /// What is shelved now.
    func shelvedAlerts() async throws -> [ShelvedAlert]
    /// Takes a tag out of service, or puts it back in; false when it already was so.
    func setOutOfService(tag: String, _ outOfService: Bool, by: String?, reason: String?) async throws -> Bool
    /// The tags out of service now.
    func outOfServiceTags() async throws -> [OutOfServiceTag]
}

/// A tag an operator took out of service (ISA-18.2): its alarms are detected and recorded, marked
/// `out_of_service`, but not annunciated nor acted on, until it is put back.
package struct OutOfServiceTag: Sendable, Equatable, Codable {
    package let tag: String
    /// Epoch ms.
    package let since: Int64
    package let by: String?
    package let reason: String?

    package init(tag: String, since: Int64, by: String?, reason: String?) {
        self.tag = tag
        self.since = since
        self.by = by
        self.reason = reason
    }

    /// A tag's service state as published (MQTT, `GET /events`): `{"tag", "out_of_service": true,
    /// "since", "by", "reason"}` while it is out, `{"tag", "out_of_service": false, "at"}` once back.
    package static func json(tag: String, _ state: OutOfServiceTag?, at now: Int64) -> [UInt8] {
        var json = JSONWriter()
        json.field("tag", string: tag)
        json.field("out_of_service", rawJSON: Array((state != nil ? "true" : "false").utf8))
        if let state {
            json.field("since", integer: state.since)
            if let by = state.by { json.field("by", string: by) }
            if let reason = state.reason { json.field("reason", string: reason) }
        } else {
            json.field("at", integer: now)
        }
        return json.finish()
    }
}

/// A tag and kind shelved until a time (epoch ms).
package struct ShelvedAlert: Sendable, Equatable {
    package let tag: String
    package let kind: AlertKind
    package let until: Int64

    package init(tag: String, kind: AlertKind, until: Int64) {
        self.tag = tag
        self.kind = kind
        self.until = until
    }
}

/// Alert management in the manner of ISA-18.2: acknowledging, shelving and unshelving alert
/// episodes, from HTTP (`POST /alerts/{id}/ack`, `/shelve`, `/unshelve`) and MQTT
/// (`{prefix}/ack/{alert_id}`). Each transition is kept in the journal (`alerts.acked_at`,
/// `acked_by`, `shelved_until`, `shelved_by`, `shelve_reason`, `unshelved_at`, …) and then
/// announced (published on the episode's alert topic); shelves also go on the publisher's
/// ``AlertShelf``.
package final class AlertDesk: Sendable {
    /// What an acknowledgement or an unshelving did.
    package enum Outcome: Sendable, Equatable {
        /// Done, to this episode.
        case done(AlertEpisode)
        /// Nothing to do: already acknowledged, or not shelved.
        case already
        case unknown
    }

    let shelf: AlertShelf
    /// Acknowledgements, shelvings and unshelvings done, by kind and severity (`dang_alerts_total`).
    private let tallies = Mutex<[AlertTally: Int]>([:])
    private let journal: any AlertJournal
    private let announce: @Sendable (AlertTransition) -> Void
    /// Applies a tag's service state to detection (the pipeline's alert stage) and announces it.
    private let service: @Sendable (_ tag: String, _ outOfService: OutOfServiceTag?) -> Void
    private let logger: Logger
    /// Acknowledgements from MQTT, written by ``run()``: the MQTT thread never waits on the database.
    private let acknowledgements: AsyncStream<(id: UUID, by: String?)>
    private let submit: AsyncStream<(id: UUID, by: String?)>.Continuation
    private let dropped = Atomic<Int>(0)

    /// MQTT acknowledgements waiting beyond this are refused (counted and logged): a flood cannot grow memory.
    static let queueLimit = 256

    /// `announce` gets each transition once it is recorded (the orchestrator publishes it).
    /// `service` gets a tag's new service state (nil: back in service) once it is recorded, and each
    /// tag out of service at ``restoreOutOfService()``.
    package init(
        shelf: AlertShelf, journal: any AlertJournal, announce: @escaping @Sendable (AlertTransition) -> Void = { _ in },
        service: @escaping @Sendable (String, OutOfServiceTag?) -> Void = { _, _ in }, logger: Logger
    ) {
        self.shelf = shelf
        self.journal = journal
        self.announce = announce
        self.service = service
        self.logger = logger
        (self.acknowledgements, self.submit) = AsyncStream.makeStream(bufferingPolicy: .bufferingOldest(Self.queueLimit))
    }

    package func acknowledge(_ id: UUID, by: String?) async throws -> Outcome {
        let result = try await self.journal.acknowledge(alert: id, by: by)
        if case .done(let episode) = result {
            self.logger.notice("alert acknowledged", metadata: ["alert.id": "\(id.uuidString.lowercased())", "by": "\(by ?? "-")"])
            self.tally(episode, .acknowledged)
            self.announce(AlertTransition(state: .acknowledged, episode: episode, at: .now(), by: by))
        }
        return result
    }

    /// Shelves the alert's tag and kind until now + `duration`; returns that time (epoch ms), or nil
    /// for an unknown alert.
    package func shelve(_ id: UUID, for duration: Duration, by: String?, reason: String? = nil) async throws -> Int64? {
        guard let shelved = try await self.journal.shelve(alert: id, for: duration, by: by, reason: reason) else { return nil }
        self.shelf.shelve(tag: shelved.episode.tag, kind: shelved.episode.kind, until: shelved.until)
        self.tally(shelved.episode, .shelved)
        self.logger.notice(
            "alert shelved",
            metadata: ["alert.id": "\(id.uuidString.lowercased())", "until": "\(shelved.until)", "by": "\(by ?? "-")", "reason": "\(reason ?? "-")"])
        self.announce(
            AlertTransition(state: .shelved, episode: shelved.episode, at: .now(), by: by, reason: reason, shelvedUntil: shelved.until))
        return shelved.until
    }

    /// Ends the shelving of the alert's tag and kind before its time: its raises are annunciated
    /// again.
    package func unshelve(_ id: UUID, by: String?, reason: String? = nil) async throws -> Outcome {
        let result = try await self.journal.unshelve(alert: id, by: by, reason: reason)
        if case .done(let episode) = result {
            self.shelf.unshelve(tag: episode.tag, kind: episode.kind)
            self.tally(episode, .unshelved)
            self.logger.notice(
                "alert unshelved", metadata: ["alert.id": "\(id.uuidString.lowercased())", "by": "\(by ?? "-")", "reason": "\(reason ?? "-")"])
            self.announce(AlertTransition(state: .unshelved, episode: episode, at: .now(), by: by, reason: reason))
        }
        return result
    }


    /// The lifecycle transitions done so far, by kind, severity and transition.
    package var transitionTallies: [AlertTally: Int] { self.tallies.withLock { $0 } }

    private func tally(_ episode: AlertEpisode, _ transition: AlertTally.Transition) {
        self.tallies.withLock { $0[AlertTally(kind: episode.kind, severity: episode.severity, transition: transition), default: 0] += 1 }
    }

    /// Takes a tag out of service or puts it back in; false when it already was so.
    package func setOutOfService(tag: String, _ outOfService: Bool, by: String?, reason: String?) async throws -> Bool {
        guard try await self.journal.setOutOfService(tag: tag, outOfService, by: by, reason: reason) else { return false }
        self.service(tag, outOfService ? OutOfServiceTag(tag: tag, since: .now(), by: by, reason: reason) : nil)
        self.logger.notice(
            outOfService ? "tag taken out of service" : "tag back in service",
            metadata: ["alert.tag": "\(tag)", "by": "\(by ?? "-")", "reason": "\(reason ?? "-")"])
        return true
    }

    /// The tags out of service now.
    package func outOfServiceTags() async throws -> [OutOfServiceTag] {
        try await self.journal.outOfServiceTags()
    }

    /// Puts back out of service what was before a restart.
    package func restoreOutOfService() async {
        do {
            let tags = try await self.journal.outOfServiceTags()
            for tag in tags { self.service(tag.tag, tag) }
            if !tags.isEmpty { self.logger.notice("tags out of service restored", metadata: ["tags": "\(tags.count)"]) }
        } catch {
            self.logger.warning("tags out of service not restored", metadata: ["error": "\(error)"])
        }
    }

    /// Puts back on the shelf what was shelved before a restart.
    package func restoreShelves() async {
        do {
            let shelved = try await self.journal.shelvedAlerts()
            for alert in shelved { self.shelf.shelve(tag: alert.tag, kind: alert.kind, until: alert.until) }
            if !shelved.isEmpty { self.logger.notice("shelved alerts restored", metadata: ["alerts": "\(shelved.count)"]) }
        } catch {
            self.logger.warning("shelved alerts not restored", metadata: ["error": "\(error)"])
        }
    }

    /// `{prefix}/ack/{alert_id}` with an optional `{"by": "name"}`: queued for ``run()``.
    package func acknowledgeFromMQTT(_ idText: String, payload: [UInt8]) {
        guard let id = UUID(uuidString: idText) else {
            self.logger.warning("acknowledgement refused: not an alert id", metadata: ["alert.id": "\(idText.prefix(64))"])
            return
        }
        let by = JSONValue(parsing: payload)?.string("by", limit: 200)
        switch self.submit.yield((id, by)) {
        case .enqueued: break
        case .dropped, .terminated:
            let dropped = self.dropped.add(1, ordering: .relaxed).newValue
            if dropped.isWorthLogging {
                self.logger.warning(
                    "acknowledgement refused: too many waiting, or the orchestrator is stopping",
                    metadata: ["alert.id": "\(id.uuidString.lowercased())", "refused_total": "\(dropped)"])
            }
        @unknown default: break
        }
    }

    /// MQTT acknowledgements refused because too many were waiting.
    package var refusedAcknowledgements: Int { self.dropped.load(ordering: .relaxed) }

    /// Writes MQTT acknowledgements to the journal until cancelled; later ones are refused (counted).
    package func run() async {
        defer { self.submit.finish() }
        for await (id, by) in self.acknowledgements {
            do {
                if try await self.acknowledge(id, by: by) == .unknown {
                    self.logger.warning("acknowledgement for an unknown alert", metadata: ["alert.id": "\(id.uuidString.lowercased())"])
                }
            } catch {
                self.logger.error("acknowledgement not recorded", metadata: ["alert.id": "\(id.uuidString.lowercased())", "error": "\(error)"])
            }
        }
    }
}
