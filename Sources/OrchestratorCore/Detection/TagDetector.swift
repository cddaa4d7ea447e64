#if canImport(Glibc)
import Glibc
#endif

/// A condition a detector can hold a tag in; each is raised and cleared on its own.
package enum AlertCondition: UInt8, Sendable, CaseIterable {
    /// The value deviates from the tag's running statistics (EWMA z-score).
    case anomaly
    case limitHigh
    case limitHighHigh
    case limitLow
    case limitLowLow

    package var kind: AlertKind { self == .anomaly ? .anomaly : .limit }
}

/// A condition starting or ending on one sample.
package struct ConditionChange: Sendable, Equatable {
    package let condition: AlertCondition
    package let raised: Bool
    package let value: Double
    /// |z| for anomalies; how far past the limit, in deadbands or units, is not a score, so limits report 1.
    package let zScore: Double
    /// The limit crossed, for limit conditions.
    package let limit: Double?
}

/// The detectors of one tag: EWMA z-score anomaly and engineering limits, each with hysteresis so a
/// condition is raised once and cleared once, never flapping.
///
/// A pure value type: no I/O, no clock, no allocation per sample. Changes are appended to a
/// caller-owned buffer.
package struct TagDetector: Sendable {
    package private(set) var statistics: EWMAStatistics
    package let limits: TagInfo.Limits
    /// Which conditions are currently raised, one bit per ``AlertCondition``.
    package private(set) var active: UInt8 = 0

    package init(settings: DetectionSettings, limits: TagInfo.Limits) {
        self.statistics = EWMAStatistics(alpha: settings.ewmaAlpha)
        self.limits = limits
    }

    package func isActive(_ condition: AlertCondition) -> Bool {
        self.active & (1 << condition.rawValue) != 0
    }

    /// Feeds one good-quality, finite sample; returns its anomaly score in [0, 1].
    @discardableResult
    package mutating func ingest(_ value: Double, settings: DetectionSettings, into changes: inout [ConditionChange]) -> Double {
        var score = 0.0
        // Anomaly: the z-score against the statistics *before* this sample (one-step-ahead).
        if self.statistics.count >= settings.warmupSamples {
            let z = abs(self.statistics.zScore(value, floorFraction: settings.sigmaFloor))
            score = anomalyScore(zScore: z)
            self.update(.anomaly, raise: z >= settings.zRaise, clear: z < settings.zClear, value: value, z: z, limit: nil, into: &changes)
        }
        self.statistics.update(value)

        let deadband = self.limits.deadband
        if let hihi = self.limits.hihi {
            self.update(.limitHighHigh, raise: value > hihi, clear: value <= hihi - deadband, value: value, z: 1, limit: hihi, into: &changes)
        }
        if let hi = self.limits.hi {
            self.update(.limitHigh, raise: value > hi, clear: value <= hi - deadband, value: value, z: 1, limit: hi, into: &changes)
        }
        if let lolo = self.limits.lolo {
            self.update(.limitLowLow, raise: value < lolo, clear: value >= lolo + deadband, value: value, z: 1, limit: lolo, into: &changes)
        }
        if let lo = self.limits.lo {
            self.update(.limitLow, raise: value < lo, clear: value >= lo + deadband, value: value, z: 1, limit: lo, into: &changes)
        }
        return score
    }

    private mutating func update(
        _ condition: AlertCondition, raise: Bool, clear: Bool, value: Double, z: Double, limit: Double?,
        into changes: inout [ConditionChange]
    ) {
        let bit: UInt8 = 1 << condition.rawValue
        if self.active & bit == 0 {
            guard raise else { return }
            self.active |= bit
            changes.append(ConditionChange(condition: condition, raised: true, value: value, zScore: z, limit: limit))
        } else {
            guard clear else { return }
            self.active &= ~bit
            changes.append(ConditionChange(condition: condition, raised: false, value: value, zScore: z, limit: limit))
        }
    }
}

/// Maps |z| to an anomaly score in [0, 1): the two-sided normal probability mass within ±|z|.
package func anomalyScore(zScore z: Double) -> Double {
    erf(abs(z) / 2.0.squareRoot())
}
