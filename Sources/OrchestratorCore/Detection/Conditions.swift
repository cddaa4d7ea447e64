/// What an alert is about: its `kind` (docs/mqtt-contract.md, "Alerts").
package enum AlertKind: String, Sendable, CaseIterable {
    case anomaly
    case trend
    case limit
    case rateOfChange = "rate_of_change"
    case flatline
    case stale
    case dataQuality = "data_quality"
    case multivariate
    case marketMove = "market_move"
    /// An advisory: a trend projected across a limit within the prediction horizon.
    case predictedLimit = "predicted_limit"
    /// About the orchestrator itself (its spool nearly full…); the tag is `orchestrator/…`.
    case system
}

/// A condition a detector can hold a tag in; each is raised and cleared on its own.
package enum AlertCondition: UInt8, Sendable, CaseIterable {
    /// The value deviates from the tag's own recent behaviour (level/shape anomaly).
    case anomaly
    /// A small persistent shift of the level (CUSUM).
    case shift
    case limitHigh
    case limitHighHigh
    case limitLow
    case limitLowLow
    case rateOfChange
    case flatline
    case stale
    case dataQuality
    case trendUp
    case trendDown
    case marketMove
    /// A unit's tags together depart from their trained normal operation.
    case multivariate
    /// The trend is projected above HI (or HIHI) within the prediction horizon.
    case predictedHigh
    /// … below LO (or LOLO).
    case predictedLow

    package var kind: AlertKind {
        switch self {
        case .anomaly, .shift: .anomaly
        case .limitHigh, .limitHighHigh, .limitLow, .limitLowLow: .limit
        case .rateOfChange: .rateOfChange
        case .flatline: .flatline
        case .stale: .stale
        case .dataQuality: .dataQuality
        case .trendUp, .trendDown: .trend
        case .marketMove: .marketMove
        case .multivariate: .multivariate
        case .predictedHigh, .predictedLow: .predictedLimit
        }
    }
}

/// What went wrong with the data itself.
package enum DataQualityIssue: UInt8, Sendable, Equatable {
    case badQuality
    case uncertainQuality
    case nonFinite
    case outOfOrder
    case duplicateTimestamp
    case gap
    /// A Sparkplug edge node skipped sequence numbers or sent data before its birth.
    case sequence
    /// A sample stamped too far in the future, or outside what PostgreSQL can store: refused.
    case futureTimestamp

    package var text: String {
        switch self {
        case .badQuality: "bad-quality samples"
        case .uncertainQuality: "uncertain-quality samples"
        case .nonFinite: "NaN or infinite values"
        case .outOfOrder: "out-of-order timestamps"
        case .duplicateTimestamp: "duplicate timestamps"
        case .gap: "a gap in the data"
        case .sequence: "Sparkplug sequence broken (messages lost or data before birth); rebirth requested"
        case .futureTimestamp: "timestamps too far in the future or out of range (a source clock is wrong); samples refused"
        }
    }
}

/// Numbers that explain a condition change, for the alert message.
package enum ConditionDetail: Sendable, Equatable {
    case none
    /// Deviation in standard deviations.
    case deviation(sigmas: Double)
    /// A limit crossed.
    case limit(Double)
    /// Rate of change in engineering units per minute, and the configured limit.
    case rate(perMinute: Double, limit: Double)
    /// No change beyond the tolerance for this long.
    case flatline(seconds: Double, samples: Int)
    /// No sample for this long.
    case stale(seconds: Double)
    case dataQuality(DataQualityIssue)
    /// Theil–Sen slope in engineering units per hour, the Mann–Kendall two-sided p-value, and Holt's
    /// fast trend in units per hour (what the slope is now, not over the whole window).
    case trend(slopePerHour: Double, pValue: Double, fastPerHour: Double)
    /// Percentage change over a window of this many seconds, and how many times the instrument's
    /// typical move over that window it is (nil while the typical move is not known yet).
    case marketMove(percent: Double, windowSeconds: Double, timesTypical: Double?)
    /// A limit the trend is projected to cross: which (`HI`, `HIHI`, `LO`, `LOLO`) and its value,
    /// when (minutes from the sample; the earliest and latest by the slope's 95 % interval, the
    /// latest nil when that interval allows no crossing), and the Theil–Sen slope per hour.
    case prediction(limitName: String, limit: Double, minutes: Double, earliest: Double, latest: Double?, slopePerHour: Double)
    /// The unit's statistic relative to its limit, and the tags that drove it most.
    /// T² and SPE are relative to their own control limits.
    case multivariate(ratio: Double, t2Ratio: Double, speRatio: Double, drivers: [UnitDriver])
}

/// A condition starting or ending on one sample (or timer tick).
package struct ConditionChange: Sendable, Equatable {
    package let condition: AlertCondition
    package let raised: Bool
    package let value: Double
    /// How anomalous, in [0, 1].
    package let score: Double
    package let detail: ConditionDetail

    package init(condition: AlertCondition, raised: Bool, value: Double, score: Double, detail: ConditionDetail) {
        self.condition = condition
        self.raised = raised
        self.value = value
        self.score = score
        self.detail = detail
    }
}

/// How conditions become alerts: on/off delays and a cooldown, shared by every condition and by
/// the live path and replay alike.
package struct AlertPolicy: Sendable, Equatable {
    /// Consecutive evaluations a condition must hold before it is raised.
    package var onDelay = 1
    /// Consecutive evaluations it must be absent before it clears.
    package var offDelay = 1
    /// After a clear, the same condition of the same tag is not raised again for this long (ms).
    package var cooldownMilliseconds: Int64 = 0

    package init(onDelay: Int = 1, offDelay: Int = 1, cooldownMilliseconds: Int64 = 0) {
        self.onDelay = onDelay
        self.offDelay = offDelay
        self.cooldownMilliseconds = cooldownMilliseconds
    }
}

/// One condition's alarm state: raised once and cleared once, with hysteresis (separate raise and
/// clear tests), on/off delays and a cooldown. Never flaps.
package struct AlarmLatch: Sendable, Equatable {
    // Declared widest first: 16 bytes a latch (held by a tag only once used: ``AlarmLatches``).
    private var clearedAt: Int64 = .min
    /// Consecutive evaluations toward the next transition: raise tests while inactive, clear
    /// tests while active (one counter serves both).
    private var count: Int32 = 0
    package private(set) var active = false

    package init() {}

    /// Whether ``update(raise:clear:time:policy:)`` would change nothing and return `nil`: no test
    /// toward a transition passes and no count is under way.
    @inline(__always)
    package func isSteady(raise: Bool, clear: Bool) -> Bool {
        self.count == 0 && !(self.active ? clear : raise)
    }

    /// Returns `true` when the latch raises, `false` when it clears, `nil` when nothing changes.
    /// `raise` is the raise test, `clear` the (weaker) clear test.
    package mutating func update(raise: Bool, clear: Bool, time: Int64, policy: AlertPolicy) -> Bool? {
        if !self.active {
            guard raise else {
                self.count = 0
                return nil
            }
            if self.clearedAt != .min, time &- self.clearedAt < policy.cooldownMilliseconds { return nil }
            self.count += 1
            guard Int(self.count) >= policy.onDelay else { return nil }
            self.active = true
            self.count = 0
            return true
        }
        guard clear else {
            self.count = 0
            return nil
        }
        self.count += 1
        guard Int(self.count) >= policy.offDelay else { return nil }
        self.active = false
        self.count = 0
        self.clearedAt = time
        return false
    }
}

/// The alarm latches of one tag, one per ``AlertCondition``, holding only those that ever left the
/// default state (raised, counting toward a raise, or cleared, whose time a cooldown needs). A
/// latch never raised is the default one and takes no room: most tags of a plant never alarm, and
/// every tag's 16 inline latches were 256 bytes (issue 19, part 5). Behaves exactly as 16 latches.
package struct AlarmLatches: Sendable, Equatable {
    /// Bit `n`: condition `n` has an entry.
    private var present: UInt16 = 0
    /// The entries, in condition order.
    private var entries: [AlarmLatch] = []

    package init() {}

    /// Where condition `index`'s entry is (or would go) in `entries`.
    @inline(__always)
    private func position(_ index: Int) -> Int {
        (self.present & ((UInt16(1) << UInt16(index)) &- 1)).nonzeroBitCount
    }

    package func isActive(_ index: Int) -> Bool {
        guard self.present & (UInt16(1) << UInt16(index)) != 0 else { return false }
        return self.entries[self.position(index)].active
    }

    /// ``AlarmLatch/update(raise:clear:time:policy:)`` on condition `index`'s latch.
    @inline(__always)
    package mutating func update(_ index: Int, raise: Bool, clear: Bool, time: Int64, policy: AlertPolicy) -> Bool? {
        let bit = UInt16(1) << UInt16(index)
        if self.present & bit != 0 {
            let position = self.position(index)
            // Nothing to change (the usual case, sample after sample): read, do not write.
            if self.entries[position].isSteady(raise: raise, clear: clear) { return nil }
            return self.entries[position].update(raise: raise, clear: clear, time: time, policy: policy)
        }
        // A default latch that is not asked to raise stays the default latch and reports nothing.
        guard raise else { return nil }
        var latch = AlarmLatch()
        let result = latch.update(raise: raise, clear: clear, time: time, policy: policy)
        if latch != AlarmLatch() {
            self.entries.insert(latch, at: self.position(index))
            self.present |= bit
        }
        return result
    }
}

/// A condition of a tag or a unit that changed, with what the alert stage needs to make it an
/// alert episode: where it happened and when.
package struct ConditionEvent: Sendable {
    package let change: ConditionChange
    /// The tag's slot; a unit monitor's is −1 − its index.
    package let slot: Int32
    /// The tag (or the unit's name).
    package let tag: String
    /// The tag's topic-map entry, if it has one.
    package let info: TagInfo?
    /// The input topic of the sample (or the tag, the unit, for the timer's conditions).
    package let topic: String
    /// Epoch ms of the sample (or of the timer tick).
    package let sampleTime: Int64
    /// The orchestrator's clock.
    package let now: Int64

    package init(change: ConditionChange, slot: Int32, tag: String, info: TagInfo?, topic: String, sampleTime: Int64, now: Int64) {
        self.change = change
        self.slot = slot
        self.tag = tag
        self.info = info
        self.topic = topic
        self.sampleTime = sampleTime
        self.now = now
    }
}
