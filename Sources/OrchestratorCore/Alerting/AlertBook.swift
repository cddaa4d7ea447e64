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
    /// Open episodes of severity warning or critical: alarms, which ask an operator to act (ISA-18.2).
    private var openAlarms = 0
    /// Sample time at which each slot's last `stale`, `flatline` or `data_quality` episode cleared.
    private var qualityCleared: [Int32: Int64] = [:]

    package init() {}

    /// Number of episodes currently raised (alarms and advisories).
    package var openCount: Int { self.open.count }

    /// Number of open **alarms**: episodes of severity warning or critical. Advisories (`info`:
    /// trends, market moves, data-quality notices, predictions) are published and recorded but are
    /// not alarms (SPEC §5; `dang replay`'s `alarm` column).
    package var openAlarmCount: Int { self.openAlarms }

    /// Slots with an open episode.
    package var openSlots: Set<Int32> { Set(self.open.keys.map(\.slot)) }

    /// When the slot's last `stale`, `flatline` or `data_quality` episode cleared (sample time).
    package func qualityEpisodeCleared(slot: Int32) -> Int64? { self.qualityCleared[slot] }

    /// Forgets evicted slots (their numbers are given to other tags).
    package mutating func forget(slots: Set<Int32>) {
        for slot in slots { self.qualityCleared[slot] = nil }
    }

    /// Kinds of a slot's open episodes.
    package func openKinds(slot: Int32) -> Set<AlertKind> {
        var kinds: Set<AlertKind> = []
        for key in self.open.keys where key.slot == slot { kinds.insert(key.condition.kind) }
        return kinds
    }

    /// The alert events of some condition changes, in order, appended to `events`; `conditions` is
    /// emptied (its storage kept).
    package mutating func apply(_ conditions: inout [ConditionEvent], into events: inout [AlertEvent]) {
        for condition in conditions {
            if let event = self.event(
                for: condition.change, slot: condition.slot, tag: condition.tag, info: condition.info, topic: condition.topic,
                sampleTime: condition.sampleTime, now: condition.now)
            {
                events.append(event)
            }
        }
        conditions.removeAll(keepingCapacity: true)
    }

    /// The alert event of one condition change: a new episode when raised (none if one is open),
    /// its end when cleared (none if none is open).
    package mutating func event(
        for change: ConditionChange, slot: Int32, tag: String, info: TagInfo?, topic: String, sampleTime: Int64,
        now: Int64
    ) -> AlertEvent? {
        let key = Key(slot: slot, condition: change.condition)
        let score = change.score
        if change.raised {
            guard self.open[key] == nil else { return nil }
            let severity = Self.severity(change.condition, criticality: info?.criticality ?? .medium, detail: change.detail)
            let episode = Episode(alertID: UUID(), severity: severity, raisedAt: now)
            self.open[key] = episode
            if severity >= .warning { self.openAlarms += 1 }
            var event = AlertEvent(
                alertID: episode.alertID, state: .raised, severity: severity, kind: change.condition.kind, tag: tag,
                topic: topic, timestamp: sampleTime, raisedAt: now, clearedAt: nil, value: change.value, score: score,
                message: Self.message(change, tag: tag, info: info))
            event.condition = change.condition
            event.detail = change.detail
            return event
        }
        guard let episode = self.open.removeValue(forKey: key) else { return nil }
        if episode.severity >= .warning { self.openAlarms -= 1 }
        if [.stale, .flatline, .dataQuality].contains(change.condition.kind) { self.qualityCleared[slot] = sampleTime }
        var event = AlertEvent(
            alertID: episode.alertID, state: .cleared, severity: episode.severity, kind: change.condition.kind, tag: tag,
            topic: topic, timestamp: sampleTime, raisedAt: episode.raisedAt, clearedAt: now, value: change.value,
            score: score, message: Self.message(change, tag: tag, info: info))
        event.condition = change.condition
        return event
    }

    /// Severity from the condition and the tag's criticality: HIHI/LOLO are always critical and
    /// HI/LO warnings; other conditions start at their base level, one higher on high-criticality
    /// tags and one lower on low-criticality ones.
    static func severity(_ condition: AlertCondition, criticality: TagInfo.Criticality, detail: ConditionDetail = .none) -> AlertSeverity {
        if condition == .marketMove { return Self.marketSeverity(detail, criticality: criticality) }
        // An advisory asks no one to act: the triggers act on it, before the alarm.
        if condition.kind == .predictedLimit { return .info }
        let base: AlertSeverity
        switch condition {
        case .limitHighHigh, .limitLowLow: return .critical
        case .limitHigh, .limitLow: return .warning
        case .anomaly, .shift, .rateOfChange, .flatline, .stale: base = .warning
        case .dataQuality, .trendUp, .trendDown, .marketMove: base = .info
        case .multivariate: base = .warning
        case .predictedHigh, .predictedLow: return .info
        }
        switch criticality {
        case .high: return base == .info ? .warning : .critical
        case .medium: return base
        case .low: return .info
        }
    }

    /// A market move's severity grows with its size against the instrument's own typical move over
    /// the same window: 3× is a warning, 6× critical, less (or while the typical move is still being
    /// learned) information. An instrument's criticality raises it one level when high but never
    /// lowers it: a price that moves six times as much as it usually does matters whatever the
    /// instrument (docs/decisions.md, "Market moves").
    static func marketSeverity(_ detail: ConditionDetail, criticality: TagInfo.Criticality) -> AlertSeverity {
        guard case .marketMove(_, _, let timesTypical?) = detail else { return criticality == .high ? .warning : .info }
        let base: AlertSeverity = timesTypical >= 6 ? .critical : timesTypical >= 3 ? .warning : .info
        guard criticality == .high else { return base }
        return base == .info ? .warning : .critical
    }

    static func message(_ change: ConditionChange, tag: String, info: TagInfo?) -> String {
        let unit = info?.unit.map { " \($0)" } ?? ""
        let value = Self.format(change.value) + unit
        let subject = "\(tag) = \(value)"
        switch (change.detail, change.raised) {
        case (.deviation(let sigmas), true) where change.condition == .shift:
            return "\(subject): its level has shifted (\(Self.format(abs(sigmas)))σ, CUSUM)"
        case (.deviation(let sigmas), true):
            return "\(subject) deviates \(Self.format(abs(sigmas)))σ from its recent behaviour"
        case (.deviation, false):
            return "\(subject) is back within its recent behaviour"
        case (.limit(let limit), let raised):
            let name: String
            switch change.condition {
            case .limitHighHigh: name = "HIHI"
            case .limitHigh: name = "HI"
            case .limitLow: name = "LO"
            default: name = "LOLO"
            }
            let high = change.condition == .limitHigh || change.condition == .limitHighHigh
            let where_ = raised ? (high ? "above" : "below") : (high ? "back below" : "back above")
            return "\(subject) is \(where_) its \(name) limit \(Self.format(limit))\(unit)"
        case (.rate(let rate, let limit), true):
            return "\(subject) changes \(Self.format(rate))\(unit)/min, faster than \(Self.format(limit))\(unit)/min"
        case (.rate, false):
            return "\(subject) changes at a credible rate again"
        case (.flatline(let seconds, let samples), true):
            return "\(subject) has not changed for \(samples) samples (\(Self.format(seconds)) s): stuck sensor?"
        case (.flatline, false):
            return "\(subject) is moving again"
        case (.stale(let seconds), _):
            return change.raised ? "\(tag): no sample for \(Self.format(seconds)) s" : "\(tag) is reporting again"
        case (.dataQuality(let issue), true):
            return "\(tag): \(issue.text)"
        case (.dataQuality, false):
            return "\(tag): data quality is good again"
        case (.trend(let slope, let p, let fast), true):
            let direction = slope >= 0 ? "rising" : "falling"
            return "\(subject) is \(direction) at \(Self.format(slope))\(unit)/h (Mann–Kendall p = \(Self.format(p)); "
                + "now \(Self.format(fast))\(unit)/h by Holt)"
        case (.trend, false):
            return "\(subject): the trend has ended"
        case (.marketMove(let percent, let window, let timesTypical), true):
            let usual = timesTypical.map { ", \(Self.format($0))× its usual move" } ?? ""
            return "\(subject) moved \(Self.format(percent))% in \(Self.format(window / 60)) min\(usual)"
        case (.multivariate(let ratio, let t2, let spe, let drivers), true):
            let driven = drivers.map { "\($0.tag) (\(Int(($0.share * 100).rounded()))%)" }.joined(separator: ", ")
            // SPE is 0 exactly when the model keeps every component (no residual space): not worth saying.
            let statistics = spe > 0 ? "T² \(Self.format(t2))×, SPE \(Self.format(spe))×" : "T² \(Self.format(t2))×"
            return "unit \(tag) departs from its trained normal operation (\(Self.format(ratio))× its limit; "
                + "\(statistics) theirs), driven by \(driven)"
        case (.prediction(let name, let limit, let minutes, let earliest, let latest, let slope), true):
            let side = change.condition == .predictedHigh ? "above" : "below"
            let range = latest.map { " (\(Self.format(earliest.rounded()))–\(Self.format($0.rounded())) min)" } ?? " (from \(Self.format(earliest.rounded())) min; the slope is uncertain)"
            return "\(subject): predicted \(side) \(name) \(Self.format(limit))\(unit) in ~\(Self.format(max(1, minutes.rounded()))) min\(range), "
                + "trend \(Self.format(slope))\(unit)/h"
        case (.multivariate, false):
            return "unit \(tag) is back within its trained normal operation"
        case (.marketMove, false), (.none, _):
            if change.condition.kind == .predictedLimit && !change.raised { return "\(subject): no limit crossing predicted any more" }
            return change.raised ? "\(subject): \(change.condition.kind.rawValue)" : "\(subject) is back to normal"
        case (.rate, _), (.flatline, _), (.dataQuality, _), (.trend, _), (.marketMove, _), (.deviation, _),
            (.multivariate, _), (.prediction, _):
            return subject
        }
    }

    static func format(_ value: Double) -> String {
        NumberText.significant(value, digits: 4)
    }
}
