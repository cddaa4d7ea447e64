package import Foundation

/// Time as the orchestrator keeps it: milliseconds since 1970-01-01 UTC — the wire's `ts`, every
/// clock given to the detectors, the coordinator and the record (PostgreSQL turns it into
/// `timestamptz` with `to_timestamp(ms / 1000.0)`). `Duration` is for lengths of time, `Date` only
/// at the edges (ISO text, schedules).
package typealias EpochMilliseconds = Int64

extension EpochMilliseconds {
    /// The wall clock now.
    package static func now() -> EpochMilliseconds { EpochMilliseconds(milliseconds: Date()) }

    /// A date, to the nearest millisecond.
    package init(milliseconds date: Date) {
        self = Int64((date.timeIntervalSince1970 * 1000).rounded())
    }

    /// The date of an epoch-milliseconds time.
    package var date: Date { Date(timeIntervalSince1970: Double(self) / 1000) }
}
