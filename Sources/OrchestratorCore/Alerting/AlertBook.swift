package import Foundation

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
        var suppression: AlertSuppression? = nil
    }

    private var open: [Key: Episode] = [:]
    /// Open episodes of severity warning or critical: alarms, which ask an operator to act (ISA-18.2).
    private var openAlarms = 0
    /// Sample time at which each slot's last `stale`, `flatline` or `data_quality` episode cleared.
    private var qualityCleared: [Int32: Int64] = [:]

    /// The slots of the tags some `suppress_when` names, and their latest good values (kept by
    /// the pipeline, by slot: a write per such sample is one small hash of an integer).
    private var suppressorSlots: [String: Int32] = [:]
    private var suppressorValues: [Int32: Double] = [:]
    /// `suppress_when` by the tag it suppresses.
    private var suppressionRules: [String: SuppressWhen] = [:]
    /// Tags an operator took out of service: their raises are recorded, not annunciated.
    private var outOfService: Set<String> = []

    /// The `suppress_when` rules (by the tag they suppress), and the slots of the tags they name.
    package mutating func watchSuppressors(_ slots: [String: Int32], rules: [String: SuppressWhen]) {
        self.suppressorSlots = slots
        self.suppressionRules = rules
    }

    /// The latest good value of a tag that a `suppress_when` names.
    package mutating func noteSuppressor(slot: Int32, value: Double) {
        self.suppressorValues[slot] = value
    }

    /// Tags out of service now.
    package var outOfServiceCount: Int { self.outOfService.count }

    /// Takes a tag out of service, or puts it back.
    package mutating func setOutOfService(tag: String, _ outOfService: Bool) {
        if outOfService { self.outOfService.insert(tag) } else { self.outOfService.remove(tag) }
    }

    /// Why a raise of `tag` now would not be annunciated, if it would not: out of service, or its
    /// `suppress_when` holds on the other tag's latest value (suppressed by design).
    func suppression(tag: String) -> AlertSuppression? {
        if !self.outOfService.isEmpty, self.outOfService.contains(tag) { return .outOfService }
        if !self.suppressionRules.isEmpty, let rule = self.suppressionRules[tag], let slot = self.suppressorSlots[rule.tag],
            let value = self.suppressorValues[slot], rule.holds(value)
        {
            return .byDesign
        }
        return nil
    }

    /// Episodes a previous run left raised (``adopt(_:until:)``), by tag, kind and severity: the
    /// same condition raised again takes one over — same alert id, nothing published twice — and
    /// one not confirmed within its tag's next samples, or by the deadline, is closed.
    private var adoptable: [String: [Adoptable]] = [:]
    private var adoptionDeadline: Int64 = .max
    /// Episodes taken over and closed so far.
    package private(set) var adoptedCount = 0
    package private(set) var closedAtStartCount = 0

    private struct Adoptable {
        let episode: AlertEpisode
        var samplesLeft: Int
    }

    /// Samples of its tag within which a left-open episode must be raised again: one for the
    /// conditions a single sample decides (limits, data quality, staleness), more for those a
    /// detector builds up to.
    static func adoptionSamples(_ kind: AlertKind) -> Int {
        switch kind {
        case .limit, .dataQuality, .stale: 1
        default: 30
        }
    }

    package init() {}

    /// Number of episodes currently raised (alarms and advisories).
    package var openCount: Int { self.open.count }

    /// Open episodes by severity, every severity present (0 when none is open).
    package var openBySeverity: [AlertSeverity: Int] {
        var counts = Dictionary(uniqueKeysWithValues: AlertSeverity.allCases.map { ($0, 0) })
        for episode in self.open.values { counts[episode.severity, default: 0] += 1 }
        return counts
    }

    /// Number of open **alarms**: episodes of severity warning or critical, not suppressed. Advisories (`info`:
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

    /// Forgets the open episodes of these slots without closing them (their tags moved to another
    /// instance with their shard, which carries the episodes on). Returns how many.
    @discardableResult
    package mutating func drop(slots: Set<Int32>) -> Int {
        let dropped = self.open.filter { slots.contains($0.key.slot) }
        for (key, episode) in dropped {
            self.open[key] = nil
            if episode.severity >= .warning && episode.suppression == nil { self.openAlarms -= 1 }
        }
        for slot in slots { self.qualityCleared[slot] = nil }
        return dropped.count
    }

    /// Kinds of a slot's open episodes.
    package func openKinds(slot: Int32) -> Set<AlertKind> {
        var kinds: Set<AlertKind> = []
        for key in self.open.keys where key.slot == slot { kinds.insert(key.condition.kind) }
        return kinds
    }

    /// Takes the episodes a previous run left raised: each is adopted by the same condition raised
    /// again (tag, kind, severity) or closed — after its tag's next samples, or at `deadline`
    /// (epoch ms) — and never left open.
    package mutating func adopt(_ episodes: [AlertEpisode], until deadline: Int64) {
        for episode in episodes {
            self.adoptable[episode.tag, default: []].append(Adoptable(episode: episode, samplesLeft: Self.adoptionSamples(episode.kind)))
        }
        self.adoptionDeadline = deadline
    }

    /// Gives an open episode another id and start (a standby taking over the active's episode for
    /// the same condition: docs/availability.md); false when no open episode has `id`.
    package mutating func rekey(_ id: UUID, to other: UUID, raisedAt: Int64) -> Bool {
        guard let key = self.open.first(where: { $0.value.alertID == id })?.key, let episode = self.open[key] else { return false }
        self.open[key] = Episode(alertID: other, severity: episode.severity, raisedAt: raisedAt, suppression: episode.suppression)
        return true
    }

    /// Whether episodes of a previous run are still waiting (a cheap check for the hot path).
    package var isAdopting: Bool { !self.adoptable.isEmpty }

    /// Episodes of a previous run still waiting.
    package var waitingCount: Int { self.adoptable.values.reduce(0) { $0 + $1.count } }

    /// A sample of `tag` was processed (after its condition changes were applied): its waiting
    /// episodes not raised again by it come one sample nearer to being closed.
    package mutating func sampleSeen(tag: String, value: Double, sampleTime: Int64, now: Int64, into events: inout [AlertEvent]) {
        guard var waiting = self.adoptable.removeValue(forKey: tag) else { return }
        for index in waiting.indices.reversed() {
            waiting[index].samplesLeft -= 1
            if waiting[index].samplesLeft <= 0 {
                events.append(self.closing(waiting.remove(at: index).episode, value: value, sampleTime: sampleTime, now: now))
            }
        }
        if !waiting.isEmpty { self.adoptable[tag] = waiting }
    }

    /// Closes every waiting episode once the deadline has passed (tags that stayed silent, unit
    /// monitors and the orchestrator's own alerts that did not raise it again).
    package mutating func closeUnadopted(now: Int64, into events: inout [AlertEvent]) {
        guard now >= self.adoptionDeadline, !self.adoptable.isEmpty else { return }
        for waiting in self.adoptable.values.joined() { events.append(self.closing(waiting.episode, value: .nan, sampleTime: now, now: now)) }
        self.adoptable.removeAll()
    }

    private mutating func takeAdoptable(tag: String, kind: AlertKind, severity: AlertSeverity) -> Adoptable? {
        guard var waiting = self.adoptable[tag],
            let index = waiting.firstIndex(where: { $0.episode.kind == kind && $0.episode.severity == severity })
        else { return nil }
        let taken = waiting.remove(at: index)
        self.adoptable[tag] = waiting.isEmpty ? nil : waiting
        return taken
    }

    private mutating func closing(_ episode: AlertEpisode, value: Double, sampleTime: Int64, now: Int64) -> AlertEvent {
        self.closedAtStartCount += 1
        return AlertEvent(
            alertID: episode.alertID, state: .cleared, severity: episode.severity, kind: episode.kind, tag: episode.tag,
            topic: episode.topic, timestamp: sampleTime, raisedAt: episode.raisedAt, clearedAt: now, value: value, score: 0,
            message: "\(episode.tag): the \(episode.kind.rawValue) left open by the previous run is no longer true")
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
            if !self.adoptable.isEmpty, let waiting = self.takeAdoptable(tag: tag, kind: change.condition.kind, severity: severity) {
                // Still true: the previous run's episode goes on, already raised, recorded and published.
                self.open[key] = Episode(alertID: waiting.episode.alertID, severity: severity, raisedAt: waiting.episode.raisedAt)
                if severity >= .warning { self.openAlarms += 1 }
                self.adoptedCount += 1
                return nil
            }
            let episode = Episode(alertID: UUID(), severity: severity, raisedAt: now, suppression: self.suppression(tag: tag))
            self.open[key] = episode
            // A suppressed episode asks no one to act: not an alarm while it stands.
            if severity >= .warning && episode.suppression == nil { self.openAlarms += 1 }
            var event = AlertEvent(
                alertID: episode.alertID, state: .raised, severity: severity, kind: change.condition.kind, tag: tag,
                topic: topic, timestamp: sampleTime, raisedAt: now, clearedAt: nil, value: change.value, score: score,
                message: Self.message(change, tag: tag, info: info))
            event.condition = change.condition
            event.detail = change.detail
            event.suppression = episode.suppression
            return event
        }
        guard let episode = self.open.removeValue(forKey: key) else { return nil }
        if episode.severity >= .warning && episode.suppression == nil { self.openAlarms -= 1 }
        if [.stale, .flatline, .dataQuality].contains(change.condition.kind) { self.qualityCleared[slot] = sampleTime }
        var event = AlertEvent(
            alertID: episode.alertID, state: .cleared, severity: episode.severity, kind: change.condition.kind, tag: tag,
            topic: topic, timestamp: sampleTime, raisedAt: episode.raisedAt, clearedAt: now, value: change.value,
            score: score, message: Self.message(change, tag: tag, info: info))
        event.condition = change.condition
        event.suppression = episode.suppression
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
