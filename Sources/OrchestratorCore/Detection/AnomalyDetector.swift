#if canImport(Glibc)
import Glibc
#endif

/// The level/shape anomaly detector of one tag, calibrated into one `anomaly_score` in [0, 1].
///
/// Three views of the stream, combined by their maximum:
/// - **spike**: a robust z-score of the sample against the previous `window` values (median, and
///   the interquartile range with 5–95 % and 1–99 % spreads as floors), shaped as z / (z + k);
/// - **pattern novelty**: the sample's value is quantised into `bins` levels over the range seen so
///   far, and 2-, 3- and 4-grams of those codes are looked up in the set seen (``NGramSet``); a never-seen n-gram is
///   novel, weighted by how rare novelty has been lately (an EWMA per order) — this catches a
///   change of shape at a normal level, which no z-score sees;
/// - **drift**: a two-sided CUSUM on the EWMA z-score for small persistent shifts.
/// The raw score (their maximum) also feeds an anomaly likelihood (Ahmad et al. 2017): how
/// unusual the average of the last 10 raw scores is against the long-run distribution of raw
/// scores, which lifts sustained moderate scores on a quiet tag and damps them on a noisy one.
/// After a score of `restLevel` or more, the output is held at 0 for `rest` samples (extended while
/// the raw score stays high), so one event yields one detection instead of a run of them: the
/// behaviour operators and the NAB benchmark both reward.
///
/// Invariant to shift and scale of the input (up to the tiny absolute floors); O(log window) plus
/// one `memmove` per sample; storage that grows with the samples seen, up to the window and 584
/// bytes of n-gram tables (8 bins), then no allocation.
package struct AnomalyDetector: Sendable {
    /// One sample's verdict.
    package struct Verdict: Sendable, Equatable {
        package var score: Double
        /// EWMA z-score of the sample (for messages).
        package var sigmas: Double
        package var raise: Bool
        package var clear: Bool
        /// The CUSUM signalled a small persistent shift on this sample.
        package var shift = false
    }

    package private(set) var ewma: EWMAStatistics
    private var window: RobustWindow
    private var cusum: CUSUM
    private var low = Double.infinity
    private var high = -Double.infinity
    /// The last three codes, newest first: the n-gram indices are built from them by
    /// multiplication, with no division by the configured `bins` per sample.
    private var previousCodes: (UInt32, UInt32, UInt32) = (0, 0, 0)
    /// `sample` modulo `window_stride`, kept as a counter (no division per sample).
    private var strideCount = 0
    private var seen = 0
    /// The 2-, 3- and 4-grams seen, as bit positions of one table after the other.
    private var grams: NGramSet
    private var noveltyRate: (Double, Double, Double)
    private var sample = 0
    private var lastFire = Int.min / 2
    private var spikeGate = PeriodicGate()
    private var finalGate = PeriodicGate()
    private var likelihood = AnomalyLikelihood()
    /// Location and scale of the window, recomputed only when the window changes.
    private var location = 0.0
    private var scale = 0.0

    /// The 2-, 3- and 4-gram tables for `bins` codes, one after the other in one set of bit
    /// positions (each table whole words of 64 bits, the 2-gram table first): where the 3- and
    /// 4-gram tables start, and the bound of the whole.
    @inline(__always)
    private static func gramLayout(bins: Int) -> (offset3: Int, offset4: Int, bound: Int) {
        let words2 = (bins * bins + 63) / 64
        let words3 = (bins * bins * bins + 63) / 64
        let words4 = (bins * bins * bins * bins + 63) / 64
        return (words2 * 64, (words2 + words3) * 64, (words2 + words3 + words4) * 64)
    }

    package init(settings: DetectionSettings) {
        self.ewma = EWMAStatistics(alpha: settings.ewmaAlpha)
        self.window = RobustWindow(capacity: settings.robustWindow)
        self.cusum = CUSUM(k: settings.cusumK, h: settings.cusumH)
        self.grams = NGramSet(bound: Self.gramLayout(bins: settings.anomalyBins).bound)
        let rate = settings.noveltyInitialRate
        self.noveltyRate = (rate, rate, rate)
    }

    /// Restores the running statistics from a snapshot, if this detector has seen nothing yet.
    package mutating func seed(mean: Double, variance: Double, count: Int) {
        guard self.ewma.count == 0, mean.isFinite, variance.isFinite else { return }
        self.ewma = EWMAStatistics(alpha: self.ewma.alpha, mean: mean, variance: variance, count: count)
    }

    /// The tag's typical noise (EWMA standard deviation), for judging the size of other findings.
    package var noiseSigma: Double { self.ewma.standardDeviation }

    package mutating func update(_ value: Double, settings: DetectionSettings) -> Verdict {
        var verdict = Verdict(score: 0, sigmas: 0, raise: false, clear: true)

        // Spike: robust z against the previous values only.
        var spike = 0.0
        var robustZ = 0.0
        if self.window.count >= settings.warmupSamples {
            let z = abs(value - self.location) / self.scale
            robustZ = z
            spike = z / (z + settings.spikeShape)
            if spike >= 0.5 { spike = self.spikeGate.gate(spike, at: self.sample) }
        }

        // Drift: CUSUM on the EWMA z-score.
        var drift = 0.0
        if self.ewma.count >= settings.warmupSamples {
            let z = self.ewma.zScore(value, floorFraction: settings.sigmaFloor)
            verdict.sigmas = z
            drift = self.cusum.update(max(-10, min(10, z)))
            if drift >= 1 {
                self.cusum.reset()
                verdict.shift = true
            }
        }
        self.ewma.update(value)
        // The window takes every `stride`-th sample (all of the first ones), so 256 values span
        // about 1,000 samples: a day of 5-minute data.
        let strideCount = self.strideCount
        self.strideCount = strideCount + 1 >= settings.windowStride ? 0 : strideCount + 1
        if self.window.count < settings.warmupSamples || strideCount == 0 {
            self.window.append(value)
            let median = self.window.median
            let spreads = self.window.spreads((0.25, 0.05, 0.01))
            let iqr = spreads.0 / 1.349
            let spread = spreads.1 / 3.29 / 3
            // Heavy-tailed series (counts, traffic) spike often: widen the scale by their tails.
            let tails = settings.tailWidening > 0 ? spreads.2 / settings.tailWidening : 0
            self.location = median
            self.scale = max(iqr, spread, tails, 1e-9 * (abs(median) + 1))
        }

        // Pattern novelty on quantised codes over the range seen so far.
        let pattern = self.novelty(value, settings: settings)

        let raw = max(spike, pattern, drift >= 1 ? settings.driftScore : 0)
        var final = self.likelihood.update(raw, sample: self.sample)
        if settings.gatePeriodicEvents && final >= settings.anomalyRestLevel { final = self.finalGate.gate(final, at: self.sample) }
        // The rest period grows with the samples seen (a stream that has run long has shown more
        // of its normal variety), up to `anomalyRestMax`.
        let rest = max(settings.anomalyRest, min(settings.anomalyRestMax, Int(settings.anomalyRestGrowth * Double(self.sample))))
        let resting = self.sample - self.lastFire <= rest
        if final >= settings.anomalyRestLevel { self.lastFire = self.sample }
        self.sample += 1
        verdict.score = resting ? 0 : min(1, final)
        // An alert also needs the sample itself to stand out (robust z): the composite score alone
        // would now and then alarm on pure noise.
        // With the gate on, the decision uses the score before the rest period: a large deviation
        // after an early, smaller detection must still raise.
        let decisive = settings.anomalyMinSigmas > 0 ? min(1, final) : verdict.score
        verdict.raise = decisive >= settings.anomalyRaise && robustZ >= settings.anomalyMinSigmas
        // An episode lasts while the samples stay unusual against the window (a sustained step is
        // one alert, cleared once the window has learnt the new level), not just while the score
        // is high (the rest period zeroes it).
        verdict.clear = verdict.score < settings.anomalyClear && robustZ < settings.zClear
        return verdict
    }

    private mutating func novelty(_ value: Double, settings: DetectionSettings) -> Double {
        let bins = UInt32(settings.anomalyBins)
        self.low = min(self.low, value)
        self.high = max(self.high, value)
        let range = self.high - self.low
        let code = range > 0 ? UInt32(min(Double(bins - 1), ((value - self.low) / range * Double(bins)).rounded(.down))) : 0
        let b2 = bins * bins
        let b3 = b2 * bins
        // The 2-, 3- and 4-gram ending with this code, as base-`bins` numbers (codes before the
        // first sample count as 0).
        let gram2 = self.previousCodes.0 &* bins &+ code
        let gram3 = self.previousCodes.1 &* b2 &+ gram2
        let gram4 = self.previousCodes.2 &* b3 &+ gram3
        self.previousCodes = (code, self.previousCodes.0, self.previousCodes.1)
        self.seen += 1
        let alpha = settings.noveltyAdaptation
        let layout = Self.gramLayout(bins: Int(bins))
        var sum = 0.0
        if self.seen >= 2 { sum += Self.lookUp(Int(gram2), in: &self.grams, rate: &self.noveltyRate.0, alpha: alpha) }
        if self.seen >= 3 { sum += Self.lookUp(layout.offset3 + Int(gram3), in: &self.grams, rate: &self.noveltyRate.1, alpha: alpha) }
        if self.seen >= 4 { sum += Self.lookUp(layout.offset4 + Int(gram4), in: &self.grams, rate: &self.noveltyRate.2, alpha: alpha) }
        return sum / 3
    }

    /// Marks an n-gram seen; returns its novelty weighted by how rare novelty has been lately.
    private static func lookUp(_ member: Int, in grams: inout NGramSet, rate: inout Double, alpha: Double) -> Double {
        let novel = grams.insert(member)
        let weighted = novel ? 1 - rate : 0
        rate += alpha * ((novel ? 1 : 0) - rate)
        return weighted
    }
}

/// Numenta's anomaly likelihood (Ahmad, Lavin, Purdy & Agha 2017) in streaming form: the tail
/// probability of the short-term mean of raw scores under an EWMA estimate of their long-run mean
/// and variance, squashed logarithmically into [0, 1].
struct AnomalyLikelihood: Sendable {
    private var recent: (Double, Double, Double, Double, Double, Double, Double, Double, Double, Double) =
        (0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    private var mean = Double.nan
    private var variance = 0.0
    static let learning = 288
    static let rate = 1.0 / 8640
    static let meanFloor = 0.03
    static let varianceFloor = 0.0003

    /// For j = 1…100, the z whose upper tail probability is 10^(−j/10) (scipy's `norm.isf`), less a
    /// margin: a standardized average at most `quietBelow[j − 1]` has p ≥ 10^(−j/10), so its
    /// likelihood is below j / 100.
    static let quietBelow: [Double] = [
        -0.8215316028830921, -0.33438996468698795, -0.0029759577713821916, 0.258249521507514, 0.47827353237616266,
        0.6707539524725243, 0.8433147011358806, 1.0006859987740053, 1.146024336914298, 1.2815515655446004,
        1.408896931793884, 1.5292944337999321, 1.643703577060694, 1.7528868332898155, 1.8574612929324577,
        1.9579342475561634, 2.054728389182805, 2.148200086477733, 2.238652917462301, 2.3263478740408408,
        2.411511181968675, 2.4943403802983397, 2.5750091091119613, 2.653670924185496, 2.7304623686514513,
        2.8055054703197806, 2.878909790025265, 2.950774115378708, 3.0211878718002976, 3.090232306167813,
        3.157981486099138, 3.2245031486237963, 3.28985942495574, 3.3541074626751586, 3.4172999624428955,
        3.4794856431045242, 3.540709646471239, 3.6010138910279674, 3.660437382193955, 3.7190164854556804,
        3.776785167637302, 3.8337752107164556, 3.8900164018927432, 3.945536703040728, 4.00036240220414,
        4.054518249394028, 4.1080275786252445, 4.160912417851022, 4.213193588224677, 4.264890793922825,
        4.316022703599823, 4.366607024403208, 4.416660569360588, 4.4661993188465, 4.515238476750142,
        4.5637925218897015, 4.611875255153919, 4.65949984279533, 4.7066788562508535, 4.753424308822899,
        4.799747689517177, 4.845659994301005, 4.891171755017557, 4.9362930661665985, 4.981033609740275,
        5.025402678283279, 5.069409196329531, 5.113061740352435, 5.156368557352331, 5.1993375821928165,
        5.241976453787, 5.284292530225246, 5.326292902927535, 5.367984409895933, 5.409373648135921,
        5.450466985309184, 5.491270570675018, 5.531790345372523, 5.572032052091368, 5.612001244174789,
        5.651703294194953, 5.691143402037446, 5.730326602528694, 5.769257772637418, 5.807941638278738,
        5.846382780747323, 5.884585642803939, 5.922554534437865, 5.960293638325968, 5.9978070150076865,
        6.0350986077937065, 6.072172247424857, 6.109031656496533, 6.145680453662872, 6.1821221576338985,
        6.218360190977924, 6.254397883740631, 6.290238476891539, 6.325885125607712, 6.361340902404056
    ].map { $0 - 1e-9 }

    /// The larger of `raw` and the likelihood of the recent raw scores. The likelihood
    /// (log p / log 1e−10) is below j / 100 when p ≥ 10^(−j/10); so when the standardized average
    /// is under `quietBelow[j − 1]` for j = ⌊100 × raw⌋ the answer is `raw`, exactly, without erfc
    /// and log — most samples of a quiet tag.
    mutating func update(_ raw: Double, sample: Int) -> Double {
        withUnsafeMutableBytes(of: &self.recent) { buffer in
            buffer.storeBytes(of: raw, toByteOffset: (sample % 10) * 8, as: Double.self)
        }
        let count = min(sample + 1, 10)
        let sum: Double
        if count == 10 {
            // The same additions in the same order as the loop below, unrolled.
            let r = self.recent
            sum = 0.0 + r.0 + r.1 + r.2 + r.3 + r.4 + r.5 + r.6 + r.7 + r.8 + r.9
        } else {
            sum = withUnsafeBytes(of: self.recent) { buffer in
                (0..<count).reduce(0.0) { $0 + buffer.load(fromByteOffset: $1 * 8, as: Double.self) }
            }
        }
        let average = sum / Double(count)
        var p = 0.5
        let center = max(self.mean, Self.meanFloor)
        if sample >= Self.learning, !self.mean.isNaN {
            // At or below the long-run mean the likelihood is under 0.031, far below any alert
            // threshold: skip erfc and log there (half the samples).
            guard average > center else {
                self.learn(average)
                return max(raw, 0)
            }
            let deviation = max(self.variance, Self.varianceFloor).squareRoot()
            let z = (average - center) / deviation
            let j = min(100, Int(max(0, raw) * 100))
            if j >= 1, z <= Self.quietBelow[j - 1] {
                self.learn(average)
                return raw
            }
            p = 0.5 * erfc(z / 2.0.squareRoot())
        }
        self.learn(average)
        return max(raw, log(p + 1e-10) / log(1e-10))
    }

    private mutating func learn(_ average: Double) {
        if self.mean.isNaN {
            self.mean = average
            self.variance = 0
        } else {
            let delta = average - self.mean
            self.mean += Self.rate * delta
            self.variance = (1 - Self.rate) * (self.variance + Self.rate * delta * delta)
        }
    }
}

/// An event (samples above a level, more than 10 samples after the previous such sample) that
/// starts the same gap after the last event as that one did after its predecessor (within 2 % or 3
/// samples) is periodic — a daily batch job, a scheduled purge — and is not scored.
struct PeriodicGate: Sendable {
    private var last = Int.min / 2
    private var previous = Int.min / 2
    private var lastSample = Int.min / 2
    private var periodic = false

    mutating func gate(_ score: Double, at t: Int) -> Double {
        if t - self.lastSample > 10 {
            let gap = self.last - self.previous
            self.periodic = self.previous >= 0 && abs((t - self.last) - gap) <= max(3, gap / 50)
            (self.last, self.previous) = (t, self.last)
        }
        self.lastSample = t
        return self.periodic ? 0 : score
    }
}
