#if canImport(Glibc)
import Glibc
#endif

/// Slow-drift detection: the Mann–Kendall test over a sliding window of block means, with the
/// Theil–Sen slope for the size of the trend, plus Holt's fast trend.
///
/// Samples are averaged in blocks of `blockSize` (which also tames autocorrelation, which
/// Mann–Kendall assumes away); the window holds `windowBlocks` block means. The Mann–Kendall S is
/// updated incrementally in O(windowBlocks) once per block (O(windowBlocks / blockSize) per sample);
/// the O(w²) Theil–Sen median runs only when the test is significant, on a caller-owned scratch
/// buffer, so a quiet tag never pays for it.
package struct TrendDetector: Sendable {
    package struct Result: Sendable, Equatable {
        /// Mann–Kendall S statistic.
        package let s: Int
        /// Two-sided p-value.
        package let pValue: Double
        /// Theil–Sen slope in units per hour (only computed when significant).
        package let slopePerHour: Double?
        /// Its 95 % confidence interval (Sen 1968, from the variance of S), units per hour.
        package var slopeRangePerHour: ClosedRange<Double>? = nil
        /// The Theil–Sen line's value at ``lineTime`` (the newest block's mean time).
        package var lineValue: Double? = nil
        package var lineTime: Double = 0
        /// How much of the block means' variance the line explains (R², 0...1): a ramp is near 1, a
        /// step inside the window (significant, but not a trend to extrapolate) well below.
        package var lineFit: Double = 0
    }

    private var means: [Double]
    private var times: [Double]
    private var head = 0
    private var filled = 0
    private var blockSum = 0.0
    private var blockTime = 0.0
    private var blockCount = 0
    private var s = 0
    /// Pairs of equal block means in the window: the tie correction is needed only when some exist.
    private var equalPairs = 0
    package let blockSize: Int
    package let windowBlocks: Int
    package private(set) var holt = HoltTrend()
    private var lastTime: Int64 = 0
    private var meanInterval = 0.0

    package init(blockSize: Int, windowBlocks: Int) {
        precondition(blockSize >= 1 && windowBlocks >= 4)
        self.blockSize = blockSize
        self.windowBlocks = windowBlocks
        // Grown block by block to `windowBlocks` (nothing held before the first block completes).
        self.means = []
        self.times = []
    }

    /// Holt's trend converted to units per hour, using the mean sampling interval.
    package var fastSlopePerHour: Double {
        self.meanInterval > 0 ? self.holt.trend / self.meanInterval * 3_600_000 : 0
    }

    package var isWarm: Bool { self.filled == self.windowBlocks }

    /// Adds a sample; returns a test result when a block completes and the window is full.
    package mutating func update(_ value: Double, time: Int64, alpha: Double, scratch: inout [Double]) -> Result? {
        self.holt.update(value)
        if self.holt.count > 1 {
            let interval = Double(time &- self.lastTime)
            if interval > 0 {
                self.meanInterval = self.meanInterval == 0 ? interval : 0.99 * self.meanInterval + 0.01 * interval
            }
        }
        self.lastTime = time
        self.blockSum += value
        self.blockTime += Double(time)
        self.blockCount += 1
        guard self.blockCount == self.blockSize else { return nil }
        let mean = self.blockSum / Double(self.blockSize)
        let meanTime = self.blockTime / Double(self.blockSize)
        self.blockSum = 0
        self.blockTime = 0
        self.blockCount = 0
        self.push(mean, time: meanTime)
        guard self.isWarm else { return nil }
        let n = Double(self.windowBlocks)
        // Var(S) with the correction for tied values (Kendall 1975): quantised sensors tie often.
        let variance = (n * (n - 1) * (2 * n + 5) - self.tieCorrection(scratch: &scratch)) / 18
        let z = self.s == 0 ? 0 : (Double(self.s) - (self.s > 0 ? 1 : -1)) / variance.squareRoot()
        let p = erfc(abs(z) / 2.0.squareRoot())
        guard p < alpha else { return Result(s: self.s, pValue: p, slopePerHour: nil) }
        let fit = self.theilSen(variance: variance, scratch: &scratch)
        var result = Result(s: self.s, pValue: p, slopePerHour: fit.slope * 3_600_000)
        result.slopeRangePerHour = fit.lower * 3_600_000...max(fit.lower, fit.upper) * 3_600_000
        // The line through the block means with that slope (median intercept), at the newest block.
        let newest = (self.head + self.windowBlocks - 1) % self.windowBlocks
        let time = self.times[newest]
        scratch.removeAll(keepingCapacity: true)
        for i in 0..<self.windowBlocks { scratch.append(self.means[i] + fit.slope * (time - self.times[i])) }
        scratch.sort()
        let count = scratch.count
        let line = count % 2 == 1 ? scratch[count / 2] : (scratch[count / 2 - 1] + scratch[count / 2]) / 2
        result.lineValue = line
        result.lineTime = time
        var average = 0.0
        for value in self.means { average += value }
        average /= Double(self.windowBlocks)
        var total = 0.0
        var residual = 0.0
        for i in 0..<self.windowBlocks {
            let fitted = line - fit.slope * (time - self.times[i])
            total += (self.means[i] - average) * (self.means[i] - average)
            residual += (self.means[i] - fitted) * (self.means[i] - fitted)
        }
        result.lineFit = total > 0 ? max(0, 1 - residual / total) : 0
        return result
    }

    /// Σ t(t−1)(2t+5) over the groups of equal block means in the window.
    private func tieCorrection(scratch: inout [Double]) -> Double {
        guard self.equalPairs > 0 else { return 0 }
        scratch.removeAll(keepingCapacity: true)
        scratch.append(contentsOf: self.means)
        scratch.sort()
        var correction = 0.0
        var run = 1
        for index in 1...scratch.count {
            if index < scratch.count && scratch[index] == scratch[index - 1] {
                run += 1
            } else {
                if run > 1 {
                    let t = Double(run)
                    correction += t * (t - 1) * (2 * t + 5)
                }
                run = 1
            }
        }
        return correction
    }

    private mutating func push(_ mean: Double, time: Double) {
        if self.filled < self.windowBlocks {
            for old in self.means {
                self.s += Self.sign(mean - old)
                if mean == old { self.equalPairs += 1 }
            }
            self.means.append(mean)
            self.times.append(time)
            self.filled += 1
            return
        }
        // Evict the oldest (at head): remove its comparisons with every later block. Branch-free:
        // the signs of a noisy series are coin flips a branch predictor cannot learn.
        let head = self.head
        let oldest = self.means[head]
        var s = 0
        var equal = 0
        self.means.withUnsafeBufferPointer { means in
            for i in 0..<means.count {
                let other = means[i]
                s += Self.sign(mean - other) - Self.sign(other - oldest)
                equal += (other == mean ? 1 : 0) - (other == oldest ? 1 : 0)
            }
        }
        // Less what the loop counted for the head itself (the oldest block, being replaced).
        s -= Self.sign(mean - oldest) - Self.sign(oldest - oldest)
        equal -= (oldest == mean ? 1 : 0) - (oldest == oldest ? 1 : 0)
        self.s += s
        self.equalPairs += equal
        self.means[head] = mean
        self.times[head] = time
        self.head = (head + 1) % self.windowBlocks
    }

    @inline(__always)
    private static func sign(_ x: Double) -> Int { (x > 0 ? 1 : 0) - (x < 0 ? 1 : 0) }

    /// Median of pairwise slopes, in units per millisecond, with its 95 % confidence interval:
    /// the pairwise slopes of ranks (N − C)/2 and (N + C)/2 + 1, C = 1.96 √Var(S) (Gilbert 1987, §16.5).
    private func theilSen(variance: Double, scratch: inout [Double]) -> (slope: Double, lower: Double, upper: Double) {
        scratch.removeAll(keepingCapacity: true)
        for i in 0..<self.windowBlocks {
            for j in (i + 1)..<self.windowBlocks {
                let dt = self.times[j] - self.times[i]
                if dt != 0 { scratch.append((self.means[j] - self.means[i]) / dt) }
            }
        }
        guard !scratch.isEmpty else { return (0, 0, 0) }
        scratch.sort()
        let n = scratch.count
        let median = n % 2 == 1 ? scratch[n / 2] : (scratch[n / 2 - 1] + scratch[n / 2]) / 2
        let c = 1.96 * max(variance, 0).squareRoot()
        // 1-based ranks, clamped to the list.
        let lowerRank = Int(((Double(n) - c) / 2).rounded())
        let upperRank = Int(((Double(n) + c) / 2).rounded()) + 1
        let lower = scratch[min(max(lowerRank, 1), n) - 1]
        let upper = scratch[min(max(upperRank, 1), n) - 1]
        return (median, lower, upper)
    }
}

/// Percentage moves of a market instrument over a time window, O(1) amortised per sample: a ring of
/// recent samples and a cursor that follows `now − window`.
package struct MarketMoveDetector: Sendable {
    private var values: [Double]
    private var times: [Int64]
    private var start = 0
    private var count = 0
    package let windowMilliseconds: Int64
    /// The instrument's typical absolute move over the window (percent): an exponential average of
    /// the move, sampled once every tenth of a window, over about 50 samples (a 15-minute window
    /// remembers the last hours, a 4-hour one the last days).
    private var typical = 0.0
    private var typicalSamples = 0
    private var lastTypicalUpdate = Int64.min

    /// Samples of the typical move needed before moves are judged against it.
    static let typicalWarmUp = 20

    package init(windowMilliseconds: Int64, capacity: Int = 1024) {
        self.windowMilliseconds = windowMilliseconds
        self.values = [Double](repeating: 0, count: capacity)
        self.times = [Int64](repeating: 0, count: capacity)
    }

    /// Adds a sample; returns the percentage change from the oldest sample within the window
    /// (`nil` until the window spans at least half its length), and how many times the typical
    /// move it is (`nil` while that is being learned).
    package mutating func update(_ value: Double, time: Int64) -> (percent: Double, timesTypical: Double?)? {
        guard let percent = self.move(value, time: time) else { return nil }
        // Judged against what came before, then learned from (slowly: one move does not make itself usual).
        let timesTypical = self.typicalSamples >= Self.typicalWarmUp && self.typical > 0 ? abs(percent) / self.typical : nil
        let step = max(1, self.windowMilliseconds / 10)
        if self.lastTypicalUpdate == .min || time &- self.lastTypicalUpdate >= step {
            self.lastTypicalUpdate = time
            self.typicalSamples += 1
            self.typical += (abs(percent) - self.typical) / Double(min(self.typicalSamples, 50))
        }
        return (percent, timesTypical)
    }

    private mutating func move(_ value: Double, time: Int64) -> Double? {
        let capacity = self.values.count
        // Keep at most `capacity` samples per window: a sample closer than window/capacity to the
        // newest one replaces it, so a fast feed cannot push the window's start out of the ring.
        if self.count > 1 {
            let newest = (self.start + self.count - 1) % capacity
            if time &- self.times[newest] < self.windowMilliseconds / Int64(capacity) {
                self.values[newest] = value
                self.times[newest] = time
                return self.change(value, time: time)
            }
        }
        if self.count == capacity {
            self.start = (self.start + 1) % capacity
            self.count -= 1
        }
        let end = (self.start + self.count) % capacity
        self.values[end] = value
        self.times[end] = time
        self.count += 1
        // Drop samples older than the window, keeping the one at its edge.
        while self.count > 1 {
            let second = (self.start + 1) % capacity
            guard self.times[second] <= time &- self.windowMilliseconds else { break }
            self.start = second
            self.count -= 1
        }
        return self.change(value, time: time)
    }

    private func change(_ value: Double, time: Int64) -> Double? {
        let oldest = self.values[self.start]
        guard time &- self.times[self.start] >= self.windowMilliseconds / 2, oldest != 0 else { return nil }
        return (value - oldest) / abs(oldest) * 100
    }
}
