/// Exponentially weighted mean and variance of one stream, updated in O(1) per sample.
///
/// Uses the incremental form (Finch, "Incremental calculation of weighted mean and variance"):
/// `δ = x − μ; μ += αδ; σ² = (1 − α)(σ² + αδ²)`.
package struct EWMAStatistics: Sendable, Equatable {
    package private(set) var mean: Double = 0
    package private(set) var variance: Double = 0
    package private(set) var count: Int = 0
    package let alpha: Double

    package init(alpha: Double) {
        precondition(alpha > 0 && alpha <= 1, "EWMA alpha must be in (0, 1]")
        self.alpha = alpha
    }

    /// Statistics restored from a snapshot (a restart warms up from `tag_state`).
    package init(alpha: Double, mean: Double, variance: Double, count: Int) {
        self.init(alpha: alpha)
        self.mean = mean
        self.variance = max(0, variance)
        self.count = max(0, count)
    }

    package mutating func update(_ x: Double) {
        if self.count == 0 {
            self.mean = x
            self.variance = 0
        } else {
            let delta = x - self.mean
            let increment = self.alpha * delta
            let variance = (1 - self.alpha) * (self.variance + delta * increment)
            // An absurd value (|δ| beyond ~1e154) would make the variance infinite for good: skip it.
            guard variance.isFinite, (self.mean + increment).isFinite else { return }
            self.mean += increment
            self.variance = variance
        }
        self.count &+= 1
    }

    package var standardDeviation: Double { self.variance.squareRoot() }

    /// How many standard deviations `x` lies from the mean, with the deviation floored at
    /// `floorFraction × |mean|` (and a tiny absolute floor) so a quiet tag does not divide by ~0.
    package func zScore(_ x: Double, floorFraction: Double) -> Double {
        let sigma = max(self.standardDeviation, floorFraction * abs(self.mean), 1e-12)
        return (x - self.mean) / sigma
    }
}
