/// Two-sided tabular CUSUM (Page 1954) on standardised values: accumulates small persistent shifts
/// that a per-sample z-score misses. `k` is the allowance (half the shift to detect, in σ), `h`
/// the decision interval.
package struct CUSUM: Sendable, Equatable {
    package private(set) var upper = 0.0
    package private(set) var lower = 0.0
    package let k: Double
    package let h: Double

    package init(k: Double = 0.5, h: Double = 5) {
        self.k = k
        self.h = h
    }

    /// Adds one standardised value; returns max(S⁺, S⁻) / h (≥ 1 means the shift is significant).
    package mutating func update(_ z: Double) -> Double {
        self.upper = max(0, self.upper + z - self.k)
        self.lower = max(0, self.lower - z - self.k)
        return max(self.upper, self.lower) / self.h
    }

    /// Restarts accumulation (after an alarm, so one shift is reported once).
    package mutating func reset() {
        self.upper = 0
        self.lower = 0
    }
}

/// Holt's linear (double exponential) smoothing: a fast level and trend estimate per sample.
package struct HoltTrend: Sendable, Equatable {
    package private(set) var level = 0.0
    /// Trend in units per sample.
    package private(set) var trend = 0.0
    package private(set) var count = 0
    package let alpha: Double
    package let beta: Double

    package init(alpha: Double = 0.1, beta: Double = 0.02) {
        self.alpha = alpha
        self.beta = beta
    }

    package mutating func update(_ x: Double) {
        switch self.count {
        case 0:
            self.level = x
        case 1:
            self.trend = x - self.level
            self.level = x
        default:
            let previous = self.level
            self.level = self.alpha * x + (1 - self.alpha) * (self.level + self.trend)
            self.trend = self.beta * (self.level - previous) + (1 - self.beta) * self.trend
        }
        self.count &+= 1
    }
}
