/// The level/shape anomaly detector of one tag: an EWMA z-score, a robust median/MAD z-score and a
/// two-sided CUSUM, combined into one calibrated `anomaly_score` in [0, 1].
package struct AnomalyDetector: Sendable {
    /// One sample's verdict.
    package struct Verdict: Sendable, Equatable {
        package var score: Double
        package var sigmas: Double
        package var raise: Bool
        package var clear: Bool
    }

    package private(set) var ewma: EWMAStatistics
    private var robust: RobustWindow
    private var cusum: CUSUM

    package init(settings: DetectionSettings) {
        self.ewma = EWMAStatistics(alpha: settings.ewmaAlpha)
        self.robust = RobustWindow(capacity: settings.robustWindow)
        self.cusum = CUSUM(k: settings.cusumK, h: settings.cusumH)
    }

    /// The tag's typical noise (EWMA standard deviation), for judging the size of other findings.
    package var noiseSigma: Double { self.ewma.standardDeviation }

    package mutating func update(_ value: Double, settings: DetectionSettings) -> Verdict {
        var verdict = Verdict(score: 0, sigmas: 0, raise: false, clear: true)
        if self.ewma.count >= settings.warmupSamples {
            let z = self.ewma.zScore(value, floorFraction: settings.sigmaFloor)
            let mad = self.robust.medianAbsoluteDeviation * 1.4826
            let floor = max(settings.sigmaFloor * abs(self.robust.median), 1e-12)
            let robustZ = (value - self.robust.median) / max(mad, floor)
            // The robust z must agree, so one outlier in the EWMA variance does not hide the next.
            let sigmas = abs(z) < abs(robustZ) ? z : (abs(robustZ) < abs(z) ? robustZ : z)
            let drift = self.cusum.update(max(-10, min(10, z)))
            verdict.sigmas = sigmas
            verdict.score = max(anomalyScore(zScore: sigmas), drift >= 1 ? 0.9 : 0)
            verdict.raise = abs(sigmas) >= settings.zRaise
            verdict.clear = abs(sigmas) < settings.zClear
            if drift >= 1 { self.cusum.reset() }
        }
        self.ewma.update(value)
        self.robust.append(value)
        return verdict
    }
}
