#if canImport(Glibc)
import Glibc
#endif

/// Every detector of one tag — level/shape anomaly, engineering limits, rate of change, flatline,
/// staleness, data quality, trend and market moves — each condition raised once and cleared once
/// through its ``AlarmLatch`` (kept in ``AlarmLatches``).
///
/// A pure value type: no I/O and no clock (time comes with each sample or tick). Storage grows
/// with what a tag has shown — its first samples, the patterns it takes (``NGramSet``), the
/// conditions it has raised (``AlarmLatches``) — up to a bounded size, and a tag that has sent
/// little holds little. Changes go to a caller-owned buffer.
package struct TagDetector: Sendable {
    package private(set) var anomaly: AnomalyDetector
    /// One latch per ``AlertCondition``, holding only those ever used.
    private var latches = AlarmLatches()
    private var info: TagInfo
    /// Whether the tag is in the topic map (`info` is then its entry, else the defaults).
    private var isMapped: Bool
    let isMarket: Bool
    private var trend: TrendDetector?
    private var marketMoves: [MarketMoveDetector]

    // Sample history for the engineering and data-quality checks.
    private var lastTime: Int64 = .min
    private var lastValue = 0.0
    private var meanInterval = 0.0
    private var flatlineReference = 0.0
    private var flatlineSince: Int64 = 0
    private var flatlineCount = 0
    private var cleanRun = 0
    // The learned flatline (tags without a topic-map `flatline`): the current run of equal values,
    // when it began, the changes seen, and the longest recent run (decaying by 1 % a change).
    private var repeatRun: Int32 = 0
    private var repeatSince: Int64 = 0
    private var valueChanges: Int32 = 0
    private var longestRepeat: Float = 0
    private var lastIssue: DataQualityIssue?
    /// Whether the last sample fed the detectors (not bad, finite, in order).
    package private(set) var lastSampleUsable = false

    /// The settings of a tag the topic map does not name (one record shared by all of them).
    private static let unmapped = TagInfo()

    package init(settings: DetectionSettings, info: TagInfo?, isMarket: Bool) {
        self.anomaly = AnomalyDetector(settings: settings)
        self.info = info ?? Self.unmapped
        self.isMapped = info != nil
        self.isMarket = isMarket
        self.trend = settings.trendEnabled ? TrendDetector(blockSize: settings.trendBlock, windowBlocks: settings.trendWindow) : nil
        self.marketMoves =
            isMarket ? settings.marketMoves.map { MarketMoveDetector(windowMilliseconds: $0.window.milliseconds) } : []
    }

    /// The tag's topic-map entry; `nil` for a tag the map does not name.
    package var mappedInfo: TagInfo? { self.isMapped ? self.info : nil }

    /// A reloaded topic map's entry (nil: the map no longer names the tag). Everything learned stays
    /// — the anomaly statistics, the trend, open conditions — and the next sample is judged by the
    /// new limits, rate and flatline settings (an open limit alarm clears by the new deadband). A
    /// configured flatline's count starts again when its settings change.
    package mutating func reconfigure(info: TagInfo?) {
        if info?.flatline != self.mappedInfo?.flatline { self.flatlineCount = 0 }
        self.info = info ?? Self.unmapped
        self.isMapped = info != nil
    }

    package func isActive(_ condition: AlertCondition) -> Bool {
        self.latches.isActive(Int(condition.rawValue))
    }

    /// The EWMA statistics of the anomaly detector (also what a state snapshot keeps).
    package var statistics: EWMAStatistics { self.anomaly.ewma }

    /// Time and value of the last usable sample (`nil` before the first).
    package var lastSample: (time: Int64, value: Double)? {
        self.lastTime == .min ? nil : (self.lastTime, self.lastValue)
    }

    /// Warms up from a `tag_state` snapshot (only a tag that has seen nothing yet).
    package mutating func seed(mean: Double, variance: Double, count: Int) {
        self.anomaly.seed(mean: mean, variance: variance, count: count)
    }

    /// Feeds one sample (any quality, any value); returns its anomaly score in [0, 1].
    /// `receiptTime`: the timestamp is when the orchestrator received the sample (the payload had
    /// none), so equal or decreasing times say nothing about the source.
    @discardableResult
    package mutating func ingest(
        _ value: Double, time: Int64, receiptTime: Bool = false, quality: SampleQuality, settings: DetectionSettings, scratch: inout [Double],
        into changes: inout [ConditionChange]
    ) -> Double {
        let policy = settings.policy

        // Data quality first: a sample that fails it feeds nothing else.
        var issue: DataQualityIssue? = nil
        var usable = true
        if !value.isFinite {
            issue = .nonFinite
            usable = false
        } else if quality == .bad {
            issue = .badQuality
            usable = false
        } else if !receiptTime && self.lastTime != .min && time < self.lastTime {
            issue = .outOfOrder
            usable = false
        } else if !receiptTime && self.lastTime != .min && time == self.lastTime {
            issue = .duplicateTimestamp
            usable = false
        } else if quality == .uncertain {
            issue = .uncertainQuality
        } else if !receiptTime, self.lastTime != .min, self.meanInterval > 0,
            Self.elapsed(from: self.lastTime, to: time) > max(settings.gapFactor * self.meanInterval, 1000)
        {
            // A gap is judged on the source's own timestamps, and is at least a second: receipt
            // times of a burst say more about the network than about the source (staleness covers
            // silence).
            issue = .gap
        }
        self.updateDataQuality(issue, value: value, time: time, settings: settings, into: &changes)
        self.lastSampleUsable = usable
        guard usable else { return 0 }

        // Staleness clears on any usable sample.
        self.update(.stale, raise: false, clear: true, value: value, score: 0, detail: .none, time: time, policy: policy, into: &changes)

        // Level/shape anomaly.
        let verdict = self.anomaly.update(value, settings: settings)
        self.update(
            .anomaly, raise: verdict.raise, clear: verdict.clear, value: value, score: verdict.score,
            detail: .deviation(sigmas: verdict.sigmas), time: time, policy: policy, into: &changes)
        // Market prices wander by nature; their moves are `market_move`'s job.
        if settings.shiftAlerts && !self.isMarket {
            self.update(
                .shift, raise: verdict.shift && !self.isActive(.anomaly),
                clear: !verdict.shift && abs(verdict.sigmas) < settings.zClear, value: value, score: verdict.score,
                detail: .deviation(sigmas: verdict.sigmas), time: time, policy: policy, into: &changes)
        }

        self.checkLimits(value, time: time, policy: policy, into: &changes)
        self.checkRate(value, time: time, policy: policy, into: &changes)
        if self.info.flatline != nil {
            self.checkFlatline(value, time: time, policy: policy, into: &changes)
        } else if settings.flatlineLearn && !self.isMarket {
            self.checkLearnedFlatline(value, time: time, settings: settings, into: &changes)
        }
        if let result = self.trend?.update(value, time: time, alpha: settings.trendAlpha, scratch: &scratch) {
            self.checkTrend(result, value: value, time: time, settings: settings, into: &changes)
            if settings.predictionEnabled && !self.isMarket {
                self.checkPrediction(result, value: value, time: time, settings: settings, into: &changes)
            }
        }
        if self.isMarket {
            self.checkMarket(value, time: time, settings: settings, into: &changes)
        }

        if self.lastTime != .min, time > self.lastTime {
            let interval = Self.elapsed(from: self.lastTime, to: time)
            self.meanInterval = self.meanInterval == 0 ? interval : 0.95 * self.meanInterval + 0.05 * interval
        }
        self.lastTime = max(time, self.lastTime)
        self.lastValue = value
        return verdict.score
    }

    /// Timer-driven staleness: raises `stale` when no sample arrived for `stale_after` expected
    /// periods. `lastReceipt` is the orchestrator's clock at the last sample (the source's clock
    /// may lag or jump, and buffered data arrives late).
    package mutating func checkStale(now: Int64, lastReceipt: Int64, policy: AlertPolicy, into changes: inout [ConditionChange]) {
        guard let period = self.info.expectedPeriod, lastReceipt != .min else { return }
        let silence = Self.elapsed(from: lastReceipt, to: now)
        let limit = Double(period.milliseconds) * self.info.staleAfter
        guard silence > limit, !self.isActive(.stale) else { return }
        self.update(
            .stale, raise: true, clear: false, value: self.lastValue, score: 1, detail: .stale(seconds: silence / 1000),
            time: now, policy: AlertPolicy(cooldownMilliseconds: policy.cooldownMilliseconds), into: &changes)
    }

    /// The source said it is gone (a Sparkplug death): `stale` now, whatever the expected period.
    package mutating func forceStale(now: Int64, policy: AlertPolicy, into changes: inout [ConditionChange]) {
        guard !self.isActive(.stale) else { return }
        self.update(
            .stale, raise: true, clear: false, value: self.lastValue, score: 1, detail: .stale(seconds: 0), time: now,
            policy: AlertPolicy(cooldownMilliseconds: policy.cooldownMilliseconds), into: &changes)
    }

    /// A data-quality problem the transport found (not a sample's own).
    package mutating func reportDataQuality(_ issue: DataQualityIssue, now: Int64, settings: DetectionSettings, into changes: inout [ConditionChange]) {
        self.updateDataQuality(issue, value: self.lastValue, time: now, settings: settings, into: &changes)
    }

    private mutating func updateDataQuality(
        _ issue: DataQualityIssue?, value: Double, time: Int64, settings: DetectionSettings,
        into changes: inout [ConditionChange]
    ) {
        if let issue {
            self.cleanRun = 0
            self.lastIssue = issue
        } else {
            self.cleanRun += 1
        }
        let detail = ConditionDetail.dataQuality(issue ?? self.lastIssue ?? .badQuality)
        self.update(
            .dataQuality, raise: issue != nil, clear: self.cleanRun >= settings.dataQualityClearAfter,
            value: value.isFinite ? value : self.lastValue, score: 1, detail: detail, time: time,
            policy: AlertPolicy(cooldownMilliseconds: settings.policy.cooldownMilliseconds), into: &changes)
    }

    private mutating func checkLimits(_ value: Double, time: Int64, policy: AlertPolicy, into changes: inout [ConditionChange]) {
        let limits = self.info.limits
        let deadband = limits.deadband
        if let hihi = limits.hihi {
            self.update(.limitHighHigh, raise: value > hihi, clear: value <= hihi - deadband, value: value, score: 1, detail: .limit(hihi), time: time, policy: policy, into: &changes)
        }
        if let hi = limits.hi {
            self.update(.limitHigh, raise: value > hi, clear: value <= hi - deadband, value: value, score: 1, detail: .limit(hi), time: time, policy: policy, into: &changes)
        }
        if let lolo = limits.lolo {
            self.update(.limitLowLow, raise: value < lolo, clear: value >= lolo + deadband, value: value, score: 1, detail: .limit(lolo), time: time, policy: policy, into: &changes)
        }
        if let lo = limits.lo {
            self.update(.limitLow, raise: value < lo, clear: value >= lo + deadband, value: value, score: 1, detail: .limit(lo), time: time, policy: policy, into: &changes)
        }
    }

    private mutating func checkRate(_ value: Double, time: Int64, policy: AlertPolicy, into changes: inout [ConditionChange]) {
        guard let limit = self.info.maxRatePerMinute, self.lastTime != .min, time > self.lastTime else { return }
        let rate = (value - self.lastValue) / Self.elapsed(from: self.lastTime, to: time) * 60_000
        self.update(
            .rateOfChange, raise: abs(rate) > limit, clear: abs(rate) <= limit * 0.8, value: value, score: 1,
            detail: .rate(perMinute: rate, limit: limit), time: time, policy: policy, into: &changes)
    }

    private mutating func checkFlatline(_ value: Double, time: Int64, policy: AlertPolicy, into changes: inout [ConditionChange]) {
        guard let flatline = self.info.flatline else { return }
        if self.flatlineCount == 0 || abs(value - self.flatlineReference) > flatline.tolerance {
            self.flatlineReference = value
            self.flatlineSince = time
            self.flatlineCount = 1
        } else {
            self.flatlineCount += 1
        }
        let elapsed = Self.elapsed(from: self.flatlineSince, to: time)
        let seconds = elapsed / 1000
        let bySamples = flatline.samples.map { self.flatlineCount >= $0 } ?? false
        let byTime = flatline.duration.map { elapsed >= Double($0.milliseconds) } ?? false
        let samples = self.flatlineCount
        self.update(
            .flatline, raise: bySamples || byTime, clear: samples == 1, value: value, score: 1,
            detail: .flatline(seconds: seconds, samples: samples), time: time, policy: policy, into: &changes)
    }

    /// A stuck value on a tag nobody configured a flatline for, judged against the tag's own habit:
    /// raised when its value has repeated `factor` × the longest run of equal values it recently
    /// showed (at least `min_samples`), once it has changed `learn_changes` times; cleared by the
    /// next change. A live analog signal rarely repeats at all (flagged after `min_samples`); a
    /// quantised or slowly updated one repeats often, and is allowed that many times more; a
    /// setpoint that never changes is never learned, so never flagged.
    private mutating func checkLearnedFlatline(_ value: Double, time: Int64, settings: DetectionSettings, into changes: inout [ConditionChange]) {
        if self.repeatRun > 0 && value == self.lastValue {
            if self.repeatRun < Int32.max { self.repeatRun += 1 }
        } else {
            if self.repeatRun > 0 {
                if self.valueChanges < Int32.max { self.valueChanges += 1 }
                self.longestRepeat = max(self.longestRepeat * 0.99, Float(self.repeatRun))
            }
            self.repeatRun = 1
            self.repeatSince = time
        }
        guard self.valueChanges >= Int32(clamping: settings.flatlineLearnChanges) || self.isActive(.flatline) else { return }
        let limit = max(Double(settings.flatlineMinSamples), settings.flatlineFactor * Double(self.longestRepeat))
        let samples = Int(self.repeatRun)
        let seconds = Self.elapsed(from: self.repeatSince, to: time) / 1000
        self.update(
            .flatline, raise: Double(samples) >= limit, clear: samples == 1, value: value, score: 1,
            detail: .flatline(seconds: seconds, samples: samples), time: time,
            policy: settings.policy, into: &changes)
    }

    private mutating func checkTrend(
        _ result: TrendDetector.Result, value: Double, time: Int64, settings: DetectionSettings,
        into changes: inout [ConditionChange]
    ) {
        let slope = result.slopePerHour ?? 0
        let significant = result.pValue < settings.trendAlpha && self.isRelevant(slopePerHour: slope, settings: settings)
        let detail = ConditionDetail.trend(
            slopePerHour: slope, pValue: result.pValue, fastPerHour: self.trend?.fastSlopePerHour ?? 0)
        let score = 1 - result.pValue
        self.update(
            .trendUp, raise: significant && slope > 0, clear: result.pValue >= settings.trendClearAlpha || result.s <= 0,
            value: value, score: score, detail: detail, time: time, policy: settings.policy, into: &changes)
        self.update(
            .trendDown, raise: significant && slope < 0, clear: result.pValue >= settings.trendClearAlpha || result.s >= 0,
            value: value, score: score, detail: detail, time: time, policy: settings.policy, into: &changes)
    }

    /// Limit predictions: a significant trend whose Theil–Sen line reaches HI (HIHI when already
    /// past HI) within the horizon raises `predictedHigh` (LO/LOLO: `predictedLow`); it clears when
    /// the trend loses significance or turns, when the crossing recedes beyond `clear_factor` ×
    /// the horizon, or when the value reaches the limit (its limit alarm speaks from then on).
    /// Judged once per trend block, like the trend itself.
    private mutating func checkPrediction(
        _ result: TrendDetector.Result, value: Double, time: Int64, settings: DetectionSettings, into changes: inout [ConditionChange]
    ) {
        let limits = self.info.limits
        let horizon = Double(settings.predictionHorizon.milliseconds)
        let lost = result.pValue >= settings.trendClearAlpha
        var crossing: (limit: Double, name: String, minutes: Double, earliest: Double, latest: Double?, slope: Double)? = nil
        // Between `alpha` and `clear_alpha` the line is not fitted: an advisory up holds (hysteresis).
        var recededUp = false
        var recededDown = false
        if result.slopePerHour != nil {
            // A fitted line that does not bring a crossing within clear_factor × the horizon clears.
            recededUp = true
            recededDown = true
        }
        // Only a line that describes the window is extrapolated: a step inside it (an upset and its
        // return) is significant to Mann–Kendall, but no trend.
        if let slope = result.slopePerHour, let range = result.slopeRangePerHour, let line = result.lineValue, slope != 0,
            result.lineFit >= Self.minimumLineFit, self.isRelevant(slopePerHour: slope, settings: settings)
        {
            // The nearest limit ahead of the line, in the trend's direction.
            let ahead: (Double, String)? =
                slope > 0
                ? [(limits.hi, "HI"), (limits.hihi, "HIHI")].compactMap { l, n in l.map { ($0, n) } }.filter { $0.0 > value }.min { $0.0 < $1.0 }
                : [(limits.lo, "LO"), (limits.lolo, "LOLO")].compactMap { l, n in l.map { ($0, n) } }.filter { $0.0 < value }.max { $0.0 < $1.0 }
            if let (limit, name) = ahead {
                let since = Double(time) - result.lineTime
                // Milliseconds from this sample until the line reaches the limit.
                let eta = { (perHour: Double) -> Double? in
                    let perMs = perHour / 3_600_000
                    guard perMs != 0, (limit - line) / perMs > 0 else { return nil }
                    return max(0, (limit - line) / perMs - since)
                }
                if let central = eta(slope) {
                    let fast = slope > 0 ? range.upperBound : range.lowerBound
                    let slow = slope > 0 ? range.lowerBound : range.upperBound
                    let earliest = eta(fast) ?? central
                    let latest = slow.sign == slope.sign ? eta(slow) : nil
                    if slope > 0 { recededUp = central > horizon * settings.predictionClearFactor }
                    else { recededDown = central > horizon * settings.predictionClearFactor }
                    if central <= horizon {
                        crossing = (limit, name, central / 60_000, min(earliest, central) / 60_000, latest.map { max($0, central) / 60_000 }, slope)
                    }
                }
            }
        }
        let detail: ConditionDetail =
            crossing.map {
                .prediction(limitName: $0.name, limit: $0.limit, minutes: $0.minutes, earliest: $0.earliest, latest: $0.latest, slopePerHour: $0.slope)
            } ?? .none
        let high = limits.hi ?? limits.hihi
        let low = limits.lo ?? limits.lolo
        let up = crossing.map { $0.slope > 0 } ?? false
        let down = crossing.map { $0.slope < 0 } ?? false
        self.update(
            .predictedHigh, raise: up, clear: lost || result.s <= 0 || recededUp || high.map { value > $0 } == true && !up,
            value: value, score: 1 - result.pValue, detail: detail, time: time, policy: settings.policy, into: &changes)
        self.update(
            .predictedLow, raise: down, clear: lost || result.s >= 0 || recededDown || low.map { value < $0 } == true && !down,
            value: value, score: 1 - result.pValue, detail: detail, time: time, policy: settings.policy, into: &changes)
    }

    /// Whether a trend matters: at least the tag's `min_trend` per hour, or without one a change
    /// across the trend window of `trend.min_sigmas` × the tag's noise.
    private func isRelevant(slopePerHour slope: Double, settings: DetectionSettings) -> Bool {
        if let minimum = self.info.minTrendPerHour { return abs(slope) >= minimum }
        let spanHours = Double(settings.trendBlock * settings.trendWindow) * max(self.meanInterval, 1) / 3_600_000
        return abs(slope * spanHours) >= settings.trendMinSigmas * self.anomaly.noiseSigma
    }

    /// The share of the window's variance (R² of the block means) a trend line must explain to be
    /// extrapolated into a prediction.
    static let minimumLineFit = 0.8

    private mutating func checkMarket(_ value: Double, time: Int64, settings: DetectionSettings, into changes: inout [ConditionChange]) {
        var strongest: (percent: Double, window: Double, ratio: Double, timesTypical: Double?)? = nil
        var anyBelowHalf = true
        for index in self.marketMoves.indices {
            guard let move = self.marketMoves[index].update(value, time: time) else { continue }
            let rule = settings.marketMoves[index]
            let ratio = abs(move.percent) / rule.thresholdPercent
            if ratio >= 0.5 { anyBelowHalf = false }
            if ratio >= 1, ratio > (strongest?.ratio ?? 0) {
                strongest = (move.percent, Double(rule.window.milliseconds) / 1000, ratio, move.timesTypical)
            }
        }
        let detail =
            strongest.map { ConditionDetail.marketMove(percent: $0.percent, windowSeconds: $0.window, timesTypical: $0.timesTypical) } ?? .none
        self.update(
            .marketMove, raise: strongest != nil, clear: anyBelowHalf, value: value, score: strongest == nil ? 0 : 1,
            detail: detail, time: time, policy: settings.policy, into: &changes)
    }

    private mutating func update(
        _ condition: AlertCondition, raise: Bool, clear: Bool, value: Double, score: Double,
        detail: @autoclosure () -> ConditionDetail, time: Int64, policy: AlertPolicy, into changes: inout [ConditionChange]
    ) {
        let index = Int(condition.rawValue)
        guard let raised = self.latches.update(index, raise: raise, clear: clear, time: time, policy: policy) else { return }
        changes.append(ConditionChange(condition: condition, raised: raised, value: value, score: score, detail: detail()))
    }
}

extension TagDetector {
    /// Milliseconds from one time to a later one, as a Double: two wire-derived Int64 times can be
    /// far enough apart that their Int64 difference would overflow (and trap).
    @inline(__always)
    static func elapsed(from start: Int64, to end: Int64) -> Double {
        Double(end) - Double(start)
    }
}

/// Maps |z| to an anomaly score in [0, 1): the two-sided normal probability mass within ±|z|.
package func anomalyScore(zScore z: Double) -> Double {
    erf(abs(z) / 2.0.squareRoot())
}
