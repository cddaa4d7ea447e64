import Foundation
import Yams
package import Mosquitto

/// `ingest`: the rules every input format (JSON, batches, Sparkplug) is held to.
package struct IngestSettings: Sendable, Equatable {
    /// A sample stamped more than this ahead of the wall clock is refused (a mis-set source clock
    /// would otherwise pin its tag's clock in the future and blind it).
    package var maxFutureSkew: Duration {
        get { .milliseconds(self.maxFutureSkewMilliseconds) }
        set { self.maxFutureSkewMilliseconds = newValue.milliseconds }
    }
    /// The same in milliseconds, as the per-sample check reads it (no `Duration` arithmetic per sample).
    private var maxFutureSkewMilliseconds: Int64 = 300_000
    /// Longest tag identifier accepted, in UTF-8 bytes (a topic level can be 64 KiB; PostgreSQL's
    /// btree index refuses keys past about 2.7 KB).
    package var maxTagBytes = 512
    /// A tag not in the topic map that got no sample for this long is forgotten (its state kept in
    /// `tag_state`), so junk topics cannot fill `detection.max_tags` for good; zero: never.
    package var evictIdleAfter: Duration = .seconds(86_400)

    /// Whether a sample time is acceptable at `now` (epoch ms): not beyond the skew, and inside
    /// what PostgreSQL's `timestamptz` holds.
    package func accepts(sampleTime: Int64, now: Int64) -> Bool {
        let time = Double(sampleTime)
        return RFC3339.storableRange.contains(time) && time <= Double(now) + Double(self.maxFutureSkewMilliseconds)
    }
}
