package import Foundation

/// An alert's `severity` (docs/mqtt-contract.md, "Alerts"); also the second level of the alert topic.
package enum AlertSeverity: String, Sendable, CaseIterable, Comparable {
    case info
    case warning
    case critical

    private var rank: Int {
        switch self {
        case .info: 0
        case .warning: 1
        case .critical: 2
        }
    }

    package static func < (lhs: AlertSeverity, rhs: AlertSeverity) -> Bool { lhs.rank < rhs.rank }
}

/// Why an episode is not annunciated (ISA-18.2): it is detected and recorded with the reason, but
/// neither published nor acted on.
package enum AlertSuppression: String, Sendable, CaseIterable {
    /// `suppress_when` in the topic map held when it was raised (e.g. low flow while the pump is stopped).
    case byDesign = "by_design"
    /// An operator took the tag out of service (maintenance, a known bad transmitter).
    case outOfService = "out_of_service"
}

/// One alert transition, as published on MQTT and recorded in PostgreSQL.
package struct AlertEvent: Sendable, Equatable {
    package enum State: String, Sendable {
        case raised
        case cleared
    }

    package let alertID: UUID
    package let state: State
    package let severity: AlertSeverity
    package let kind: AlertKind
    /// The tag's plant-unique identifier (e.g. `r1/cdu/cdu1/TI-101`, `market/brent`).
    package let tag: String
    /// The input topic the triggering sample came from.
    package let topic: String
    /// Epoch ms of the triggering sample.
    package let timestamp: Int64
    /// Epoch ms when the episode was raised (wall clock of the orchestrator).
    package let raisedAt: Int64
    /// Epoch ms when it cleared; only on `cleared`.
    package let clearedAt: Int64?
    package let value: Double
    package let score: Double
    package let message: String
    /// The detector condition behind the kind (which limit, which trend direction); in-process
    /// only, for the decision engine's triggers — not part of the published or recorded alert.
    package var condition: AlertCondition? = nil
    /// The condition's figures (slope, percentage move, drivers…); in-process only, on raises.
    package var detail: ConditionDetail? = nil
    /// Set when the episode is not annunciated (on its raise and its clear); recorded.
    package var suppression: AlertSuppression? = nil

    package init(
        alertID: UUID, state: State, severity: AlertSeverity, kind: AlertKind, tag: String, topic: String, timestamp: Int64,
        raisedAt: Int64, clearedAt: Int64?, value: Double, score: Double, message: String, condition: AlertCondition? = nil,
        detail: ConditionDetail? = nil
    ) {
        self.alertID = alertID
        self.state = state
        self.severity = severity
        self.kind = kind
        self.tag = tag
        self.topic = topic
        self.timestamp = timestamp
        self.raisedAt = raisedAt
        self.clearedAt = clearedAt
        self.value = value
        self.score = score
        self.message = message
        self.condition = condition
        self.detail = detail
    }

    /// Equal when everything published and recorded is equal (``condition`` and ``detail`` are
    /// in-process extras).
    package static func == (lhs: AlertEvent, rhs: AlertEvent) -> Bool {
        lhs.alertID == rhs.alertID && lhs.state == rhs.state && lhs.severity == rhs.severity && lhs.kind == rhs.kind
            && lhs.tag == rhs.tag && lhs.topic == rhs.topic && lhs.timestamp == rhs.timestamp && lhs.raisedAt == rhs.raisedAt
            && lhs.clearedAt == rhs.clearedAt && lhs.value.bitPattern == rhs.value.bitPattern
            && lhs.score.bitPattern == rhs.score.bitPattern && lhs.message == rhs.message && lhs.suppression == rhs.suppression
    }

    /// The alert id as written everywhere (lowercase UUID text).
    package var id: String { self.alertID.uuidString.lowercased() }

    /// `{prefix}/alert/{severity}/{site}/{area}/{unit}/{tag}` for plant tags,
    /// `{prefix}/alert/{severity}/market/{instrument…}` for market data: the tag identifier is the tail.
    package func alertTopic(prefix: String) -> String {
        Self.alertTopic(prefix: prefix, severity: self.severity, tag: self.tag, inputTopic: self.topic)
    }

    /// The alert topic of an episode of `tag` raised by a sample on `inputTopic`. Sparkplug data:
    /// `{prefix}/alert/{severity}/spb/{group}/{edge}[/{device}]/{metric}` (docs/mqtt-contract.md,
    /// "Sparkplug B").
    static func alertTopic(prefix: String, severity: AlertSeverity, tag: String, inputTopic: String) -> String {
        if inputTopic.hasPrefix(SparkplugSession.topicPrefix) { return "\(prefix)/alert/\(severity.rawValue)/spb/\(tag)" }
        return "\(prefix)/alert/\(severity.rawValue)/\(tag)"
    }

    /// The JSON body (docs/mqtt-contract.md, "Alerts"). Numbers that JSON cannot carry (NaN, ±∞)
    /// are written as `null`.
    package func jsonPayload() -> [UInt8] {
        var json = JSONWriter()
        json.field("alert_id", string: self.id)
        json.field("state", string: self.state.rawValue)
        json.field("severity", string: self.severity.rawValue)
        json.field("kind", string: self.kind.rawValue)
        json.field("tag", string: self.tag)
        json.field("topic", string: self.topic)
        json.field("ts", integer: self.timestamp)
        json.field("raised_at", integer: self.raisedAt)
        if let clearedAt = self.clearedAt { json.field("cleared_at", integer: clearedAt) }
        json.field("value", number: self.value)
        json.field("score", number: self.score)
        json.field("message", string: self.message)
        if let suppression = self.suppression { json.field("suppressed", string: suppression.rawValue) }
        if self.state == .raised, case .prediction(let name, let limit, let minutes, let earliest, let latest, let slope)? = self.detail {
            var prediction = JSONWriter()
            prediction.field("limit", string: name.lowercased())
            prediction.field("limit_value", number: limit)
            prediction.field("minutes", number: minutes)
            prediction.field("earliest_minutes", number: earliest)
            if let latest { prediction.field("latest_minutes", number: latest) }
            prediction.field("slope_per_hour", number: slope)
            json.field("prediction", rawJSON: prediction.finish())
        }
        return json.finish()
    }
}

extension AlertEvent {
    /// The same event under another episode's id and start (a takeover continues the previous
    /// active's episode).
    package func continuing(_ alertID: UUID, raisedAt: Int64) -> AlertEvent {
        var event = AlertEvent(
            alertID: alertID, state: self.state, severity: self.severity, kind: self.kind, tag: self.tag, topic: self.topic,
            timestamp: self.timestamp, raisedAt: raisedAt, clearedAt: self.clearedAt, value: self.value, score: self.score,
            message: self.message, condition: self.condition, detail: self.detail)
        event.suppression = self.suppression
        return event
    }

    /// Decodes ``jsonPayload()`` (the spool's record format); `nil` if it is not one.
    package init?(json bytes: [UInt8]) {
        guard let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any],
            let id = (object["alert_id"] as? String).flatMap(UUID.init(uuidString:)),
            let state = (object["state"] as? String).flatMap(State.init(rawValue:)),
            let severity = (object["severity"] as? String).flatMap(AlertSeverity.init(rawValue:)),
            let kind = (object["kind"] as? String).flatMap(AlertKind.init(rawValue:)),
            let tag = object["tag"] as? String, let topic = object["topic"] as? String,
            let timestamp = (object["ts"] as? NSNumber)?.int64Value,
            let raisedAt = (object["raised_at"] as? NSNumber)?.int64Value,
            let message = object["message"] as? String
        else { return nil }
        self.init(
            alertID: id, state: state, severity: severity, kind: kind, tag: tag, topic: topic, timestamp: timestamp,
            raisedAt: raisedAt, clearedAt: (object["cleared_at"] as? NSNumber)?.int64Value,
            value: (object["value"] as? NSNumber)?.doubleValue ?? .nan,
            score: (object["score"] as? NSNumber)?.doubleValue ?? .nan, message: message)
        self.suppression = (object["suppressed"] as? String).flatMap(AlertSuppression.init(rawValue:))
    }
}
