package import Foundation

/// An alert episode as the journal knows it: what an operator's action is about.
package struct AlertEpisode: Sendable, Equatable {
    package let alertID: UUID
    package let tag: String
    /// The input topic of the sample that raised it.
    package let topic: String
    package let kind: AlertKind
    package let severity: AlertSeverity
    /// Epoch ms.
    package let raisedAt: Int64

    package init(alertID: UUID, tag: String, topic: String, kind: AlertKind, severity: AlertSeverity, raisedAt: Int64) {
        self.alertID = alertID
        self.tag = tag
        self.topic = topic
        self.kind = kind
        self.severity = severity
        self.raisedAt = raisedAt
    }

    /// The alert id as written everywhere (lowercase UUID text).
    package var id: String { self.alertID.uuidString.lowercased() }
}

/// An operator's transition of an episode (ISA-18.2): acknowledged, shelved or unshelved. Recorded
/// in its `alerts` row and published on the episode's own alert topic, beside its `raised` and
/// `cleared` (docs/mqtt-contract.md, "Alarm lifecycle"), so a subscriber follows the whole life of
/// an alarm on one topic.
package struct AlertTransition: Sendable, Equatable {
    package enum State: String, Sendable, CaseIterable {
        case acknowledged
        case shelved
        case unshelved
    }

    package let state: State
    package let episode: AlertEpisode
    /// Epoch ms of the action.
    package let at: Int64
    package let by: String?
    package let reason: String?
    /// Epoch ms; on `shelved` only.
    package let shelvedUntil: Int64?

    package init(state: State, episode: AlertEpisode, at: Int64, by: String?, reason: String? = nil, shelvedUntil: Int64? = nil) {
        self.state = state
        self.episode = episode
        self.at = at
        self.by = by
        self.reason = reason
        self.shelvedUntil = shelvedUntil
    }

    /// The episode's topic, as its raise and clear were published.
    package func alertTopic(prefix: String) -> String {
        AlertEvent.alertTopic(prefix: prefix, severity: self.episode.severity, tag: self.episode.tag, inputTopic: self.episode.topic)
    }

    /// `{"alert_id", "state", "severity", "kind", "tag", "topic", "raised_at", "at", "by",
    /// "reason"?, "shelved_until"?}` (docs/mqtt-contract.md).
    package func jsonPayload() -> [UInt8] {
        var json = JSONWriter()
        json.field("alert_id", string: self.episode.id)
        json.field("state", string: self.state.rawValue)
        json.field("severity", string: self.episode.severity.rawValue)
        json.field("kind", string: self.episode.kind.rawValue)
        json.field("tag", string: self.episode.tag)
        json.field("topic", string: self.episode.topic)
        json.field("raised_at", integer: self.episode.raisedAt)
        json.field("at", integer: self.at)
        switch self.state {
        case .acknowledged:
            json.field("acked_at", integer: self.at)
            if let by = self.by { json.field("acked_by", string: by) }
        case .shelved:
            if let until = self.shelvedUntil { json.field("shelved_until", integer: until) }
            if let by = self.by { json.field("shelved_by", string: by) }
        case .unshelved:
            if let by = self.by { json.field("unshelved_by", string: by) }
        }
        if let reason = self.reason { json.field("reason", string: reason) }
        return json.finish()
    }
}
