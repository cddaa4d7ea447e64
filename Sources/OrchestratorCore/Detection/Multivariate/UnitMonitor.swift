/// Multivariate monitoring of one process unit: collects a baseline of its tags' values, trains a
/// ``MultivariateModel`` on it, then tests every new vector — raw D² against its limit, the EWMA
/// of D² against its own (temporal filtering keeps false alarms low and catches small persistent
/// shifts), and each tag's |z| against the per-tag limit, each test with its own hysteresis — and
/// says which tags drove an alarm.
package struct UnitMonitor: Sendable {
    package let name: String
    /// Engine slots of the unit's tags, in model order.
    package let slots: [Int32]
    package private(set) var model: MultivariateModel?
    /// The baseline vectors collected so far, one after the other in one array, each value as its
    /// offset from the first vector's in single precision: 4 bytes a value (1,000 units of 10 tags
    /// collecting 500 vectors each, all at once when a plant starts: 20 MB; 40 MB as doubles, 64 MB
    /// as an array per vector). An offset is the tag's movement since the baseline began, so it
    /// keeps about 7 significant digits of that movement whatever the tag's level.
    private var baseline: [Float] = []
    /// The first baseline vector: what the offsets are from.
    private var origin: [Double] = []
    private var baselineRows = 0
    private let baselineSize: Int
    private var filtered = 0.0
    private var filteredContributions: [Double]
    private var z: [Double]
    private var y: [Double]
    private var contributions: [Double]
    /// Each test's own hysteresis (see `evaluate`).
    private var rawTest = TestLatch(clear: 0.8)
    private var filteredTest = TestLatch(clear: 0.8)
    private var tagTest = TestLatch(clear: 0.98, rearm: 0.8, escalation: 1.25)
    private var latch = AlarmLatch()
    package private(set) var lastScore = 0.0
    package private(set) var trainingError: String?
    /// The last evaluation's tests against their limits (raw D², its EWMA, the farthest tag) and
    /// that tag's index: which contributions name the drivers (``drivers(names:)``).
    private var lastRatios = (raw: 0.0, filtered: 0.0, tag: 0.0, outlier: 0)
    private var evaluated = false

    package init(name: String, slots: [Int32], baselineSize: Int) {
        self.name = name
        self.slots = slots
        self.baselineSize = baselineSize
        let n = slots.count
        self.filteredContributions = [Double](repeating: 0, count: n)
        self.z = [Double](repeating: 0, count: n)
        self.y = [Double](repeating: 0, count: n)
        self.contributions = [Double](repeating: 0, count: n)
    }

    package var isTrained: Bool { self.model != nil }

    /// Adds a baseline vector; trains once the baseline is full, unless `autoTrain` is off (a
    /// replay's `--train` file is used whole, and trained at its end).
    package mutating func learn(_ vector: [Double], settings: MultivariateModel.Settings, autoTrain: Bool = true) {
        guard self.model == nil, self.trainingError == nil, vector.count == self.slots.count else { return }
        // A vector has one value per tag of the unit, in slot order (the engine builds it so).
        if self.baseline.count + vector.count > self.baseline.capacity {
            // Doubling, but not past the rows training needs while short of them (a plain append
            // could overshoot the full baseline by almost twice); a replay's `--train` file may
            // hold more, and keeps doubling.
            let doubled = max(64, 2 * self.baseline.capacity)
            let full = self.baselineSize * vector.count
            self.baseline.reserveCapacity(self.baseline.count < full ? min(doubled, full) : doubled)
        }
        if self.baselineRows == 0 { self.origin = vector }
        for (value, origin) in zip(vector, self.origin) {
            let offset = Float(value - origin)
            guard offset.isFinite else {
                // More than 3.4e38 from where the tag began: nothing a unit can be trained on.
                self.trainingError = "a value \(value) is too far from the baseline's first (\(origin)) to learn from"
                self.baseline = []
                self.origin = []
                self.baselineRows = 0
                return
            }
            self.baseline.append(offset)
        }
        self.baselineRows += 1
        if autoTrain && self.baselineRows >= self.baselineSize { self.train(settings: settings) }
    }

    /// The baseline as rows again, for training.
    private var baselineVectors: [[Double]] {
        let width = self.slots.count
        return (0..<self.baselineRows).map { row in
            (0..<width).map { j in self.origin[j] + Double(self.baseline[row * width + j]) }
        }
    }

    /// Trains on the baseline collected so far (the end of a replay's `--train` file).
    package mutating func train(settings: MultivariateModel.Settings) {
        guard self.model == nil else { return }
        do {
            let model = try MultivariateModel.train(rows: self.baselineVectors, settings: settings)
            self.model = model
            self.filtered = model.baselineMean
            let share = model.baselineMean / Double(model.tags)
            for j in 0..<model.tags { self.filteredContributions[j] = share }
        } catch {
            self.trainingError = error.message
        }
        self.baseline = []
        self.origin = []
        self.baselineRows = 0
    }

    /// Tests one vector; returns the change of the `multivariate` condition, if any.
    package mutating func evaluate(
        _ vector: [Double], time: Int64, policy: AlertPolicy, names: (Int32) -> String
    ) -> ConditionChange? {
        guard let model = self.model else { return nil }
        let parts = model.evaluate(vector, z: &self.z, y: &self.y)
        let d2 = parts.t2 + parts.residual
        let lambda = model.settings.lambda
        self.filtered = (1 - lambda) * self.filtered + lambda * d2
        model.contributions(y: self.y, into: &self.contributions)
        for j in 0..<model.tags {
            self.filteredContributions[j] = (1 - lambda) * self.filteredContributions[j] + lambda * self.contributions[j]
        }
        let rawRatio = d2 / model.rawLimit
        let filteredRatio = self.filtered / model.filteredLimit
        // One tag far outside its baseline range alarms by itself (a Bonferroni per-tag limit).
        var tagRatio = 0.0
        var outlier = 0
        if model.tagLimit > 0 {
            for j in 0..<model.tags where abs(self.z[j]) / model.tagLimit > tagRatio {
                tagRatio = abs(self.z[j]) / model.tagLimit
                outlier = j
            }
        }
        let ratio = max(rawRatio, filteredRatio, tagRatio)
        self.lastScore = ratio / (1 + ratio)
        self.lastRatios = (rawRatio, filteredRatio, tagRatio, outlier)
        self.evaluated = true
        // Hysteresis, per test: D² and its EWMA, which swing widely from sample to sample, clear
        // below 80 % of their limits; a tag's reading clears 2 % inside its limit, as a limit alarm
        // with a deadband, and re-arms below 80 % of it, so a reading wandering back and forth
        // across the limit does not raise, clear and raise again (unless it goes 25 % beyond: an
        // escalation is never held back). The unit is in alarm while any test is: one episode from
        // the first test beyond its limit to the last one cleared; a test that has not gone beyond
        // its own limit holds nothing open, however close to it it stays.
        // (Every test is updated, whichever is beyond.)
        let rawBeyond = self.rawTest.update(rawRatio)
        let filteredBeyond = self.filteredTest.update(filteredRatio)
        let tagBeyond = self.tagTest.update(tagRatio)
        let anyBeyond = rawBeyond || filteredBeyond || tagBeyond
        guard let raised = self.latch.update(raise: anyBeyond, clear: !anyBeyond, time: time, policy: policy) else {
            return nil
        }
        return ConditionChange(
            condition: .multivariate, raised: raised, value: d2, score: self.lastScore,
            detail: .multivariate(
                ratio: ratio, t2Ratio: Self.ratio(parts.t2, model.t2Limit), speRatio: Self.ratio(parts.spe, model.speLimit),
                drivers: self.drivers(names: names)))
    }

    /// The three tags that weigh most in the last evaluation, with their shares: the statistic
    /// farthest toward its limit decides which contributions are ranked (a single tag beyond its
    /// own limit takes it all).
    private func drivers(names: (Int32) -> String) -> [UnitDriver] {
        let last = self.lastRatios
        var ranked = last.raw >= last.filtered ? self.contributions : self.filteredContributions
        if last.tag > max(last.raw, last.filtered) {
            for j in ranked.indices { ranked[j] = j == last.outlier ? 1 : 0 }
        }
        let total = ranked.reduce(0, +)
        return ranked.indices.sorted { ranked[$0] > ranked[$1] }.prefix(3).map { index in
            UnitDriver(tag: names(self.slots[index]), share: total > 0 ? ranked[index] / total : 0)
        }
    }

    /// The monitor now, as the console shows it: learning (and how far), or watching — in alarm
    /// or not, how near its limits, and which tags weigh most.
    package func state(names: (Int32) -> String) -> UnitMonitorState {
        let evaluated = self.evaluated
        return UnitMonitorState(
            name: self.name, tags: self.slots.map(names), trained: self.isTrained, baselineSamples: self.isTrained ? self.baselineSize : self.baselineRows,
            baselineSize: self.baselineSize, trainingError: self.trainingError, inAlarm: self.latch.active,
            ratio: evaluated ? max(self.lastRatios.raw, self.lastRatios.filtered, self.lastRatios.tag) : nil,
            drivers: evaluated ? self.drivers(names: names) : [])
    }

    /// A statistic against its limit; 0 where the limit is 0 — SPE when the model keeps every
    /// component, so nothing is left in the residual space (0 / 0 printed "-nan×" in the alert).
    private static func ratio(_ value: Double, _ limit: Double) -> Double {
        limit > 0 ? value / limit : 0
    }
}

/// A tag's share of a multivariate alarm.
package struct UnitDriver: Sendable, Equatable, Encodable {
    package let tag: String
    package let share: Double
}

/// A unit monitor's state (`GET /tags?unit=`'s `monitor`).
package struct UnitMonitorState: Sendable, Equatable, Encodable {
    package let name: String
    package let tags: [String]
    package let trained: Bool
    /// Baseline vectors collected (all of them once trained) of the `baselineSize` training needs.
    package let baselineSamples: Int
    package let baselineSize: Int
    package let trainingError: String?
    package let inAlarm: Bool
    /// The last evaluation's farthest test against its limit (1 = at the limit); nil before one.
    package let ratio: Double?
    /// The tags that weigh most in that evaluation, largest share first.
    package let drivers: [UnitDriver]

    enum CodingKeys: String, CodingKey {
        case name, tags, trained, baselineSamples = "baseline_samples", baselineSize = "baseline_size"
        case trainingError = "training_error", inAlarm = "in_alarm", ratio, drivers
    }

    package func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(self.name, forKey: .name)
        try c.encode(self.tags, forKey: .tags)
        try c.encode(self.trained, forKey: .trained)
        try c.encode(self.baselineSamples, forKey: .baselineSamples)
        try c.encode(self.baselineSize, forKey: .baselineSize)
        try c.encode(self.trainingError, forKey: .trainingError)
        try c.encode(self.inAlarm, forKey: .inAlarm)
        try c.encode(self.ratio.flatMap { $0.isFinite ? $0 : nil }, forKey: .ratio)
        try c.encode(self.drivers.filter { $0.share.isFinite }, forKey: .drivers)
    }
}

/// One test's hysteresis, on its ratio to its limit: beyond above 1, cleared at `clear`; once
/// cleared it may go beyond at its limit again only after falling to `rearm` (at `clear` or below:
/// at once), or above `escalation` at any time.
private struct TestLatch {
    let clear: Double
    let rearm: Double
    let escalation: Double
    private var beyond = false
    private var armed = true

    init(clear: Double, rearm: Double? = nil, escalation: Double = 1) {
        self.clear = clear
        self.rearm = rearm ?? clear
        self.escalation = escalation
    }

    /// Whether the test is beyond its limit after this ratio.
    mutating func update(_ ratio: Double) -> Bool {
        if self.beyond {
            if ratio <= self.clear {
                self.beyond = false
                self.armed = ratio <= self.rearm
            }
        } else {
            if ratio <= self.rearm { self.armed = true }
            self.beyond = ratio > 1 && (self.armed || ratio > self.escalation)
        }
        return self.beyond
    }
}
