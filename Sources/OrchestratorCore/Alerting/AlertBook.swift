import Foundation

/// The alert stage: turns a detector's condition changes into alert episodes with an identity,
/// a severity and a message, so that each episode is one `raised` and one `cleared` event.
///
/// Holds only the episodes currently open.
package struct AlertBook: Sendable {
    private struct Key: Hashable {
        let slot: Int32
        let condition: AlertCondition
    }

    private struct Episode {
        let alertID: UUID
        let severity: AlertSeverity
        let raisedAt: Int64
    }

    private var open: [Key: Episode] = [:]

    package init() {}

    /// Number of episodes currently raised.
    package var openCount: Int { self.open.count }

    package mutating func event(
        for change: ConditionChange, slot: Int32, tag: String, info: TagInfo?, topic: String, sampleTime: Int64,
        now: Int64
    ) -> AlertEvent? {
        let key = Key(slot: slot, condition: change.condition)
        let score = change.condition == .anomaly ? anomalyScore(zScore: change.zScore) : 1
        if change.raised {
            guard self.open[key] == nil else { return nil }
            let severity = Self.severity(change.condition, criticality: info?.criticality ?? .medium)
            let episode = Episode(alertID: UUID(), severity: severity, raisedAt: now)
            self.open[key] = episode
            return AlertEvent(
                alertID: episode.alertID, state: .raised, severity: severity, kind: change.condition.kind, tag: tag,
                topic: topic, timestamp: sampleTime, raisedAt: now, clearedAt: nil, value: change.value, score: score,
                message: Self.message(change, tag: tag, info: info))
        }
        guard let episode = self.open.removeValue(forKey: key) else { return nil }
        return AlertEvent(
            alertID: episode.alertID, state: .cleared, severity: episode.severity, kind: change.condition.kind, tag: tag,
            topic: topic, timestamp: sampleTime, raisedAt: episode.raisedAt, clearedAt: now, value: change.value,
            score: score, message: Self.message(change, tag: tag, info: info))
    }

    static func severity(_ condition: AlertCondition, criticality: TagInfo.Criticality) -> AlertSeverity {
        switch condition {
        case .limitHighHigh, .limitLowLow: .critical
        case .limitHigh, .limitLow: .warning
        case .anomaly: criticality == .high ? .critical : .warning
        }
    }

    static func message(_ change: ConditionChange, tag: String, info: TagInfo?) -> String {
        let unit = info?.unit.map { " \($0)" } ?? ""
        let value = Self.format(change.value) + unit
        let limit = change.limit.map { Self.format($0) + unit } ?? ""
        switch (change.condition, change.raised) {
        case (.anomaly, true):
            return "\(tag) = \(value) deviates \(Self.format(change.zScore))σ from its running mean"
        case (.anomaly, false):
            return "\(tag) = \(value) is back within \(Self.format(change.zScore))σ of its running mean"
        case (.limitHighHigh, true): return "\(tag) = \(value) is above its HIHI limit \(limit)"
        case (.limitHigh, true): return "\(tag) = \(value) is above its HI limit \(limit)"
        case (.limitLow, true): return "\(tag) = \(value) is below its LO limit \(limit)"
        case (.limitLowLow, true): return "\(tag) = \(value) is below its LOLO limit \(limit)"
        case (.limitHighHigh, false): return "\(tag) = \(value) is back below its HIHI limit \(limit)"
        case (.limitHigh, false): return "\(tag) = \(value) is back below its HI limit \(limit)"
        case (.limitLow, false): return "\(tag) = \(value) is back above its LO limit \(limit)"
        case (.limitLowLow, false): return "\(tag) = \(value) is back above its LOLO limit \(limit)"
        }
    }

    static func format(_ value: Double) -> String {
        guard value.isFinite else { return "\(value)" }
        return String(format: "%.4g", value)
    }
}
