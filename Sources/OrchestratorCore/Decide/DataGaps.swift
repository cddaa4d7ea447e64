/// Data that never arrived: a broker outage, or a tag silent for longer than a `data_gap`
/// trigger's `min_gap` (docs/decisions.md, "Backfilling data gaps").
package struct DataGap: Sendable, Equatable {
    package enum Cause: String, Sendable {
        /// The orchestrator lost the broker: every tag's data for the interval may be missing.
        case brokerOutage = "broker_outage"
        /// Some tags' samples stopped and came back, their times this far apart.
        case tagGap = "tag_gap"
    }

    /// Epoch ms: the last sample before the gap (the disconnection for an outage) …
    package var from: Int64
    /// … and the first after it (the reconnection).
    package var to: Int64
    /// The tags without data, sorted (an outage: every tag known at the time).
    package var tags: [String]
    package var cause: Cause

    package var seconds: Double { (Double(self.to) - Double(self.from)) / 1000 }

    /// The scope of its ETL decision: one per interval, so deduplication and cooldowns keep to it.
    package var scopeKey: String { "gap:\(self.from)-\(self.to)" }

    /// Tags listed in an invocation at most; the count says how many there were.
    static let listedTags = 1000

    /// The `gap` object of the ETL invocation's params.
    package var json: String {
        var json = JSONWriter()
        json.field("from", integer: self.from)
        json.field("to", integer: self.to)
        json.field("seconds", number: self.seconds)
        json.field("cause", string: self.cause.rawValue)
        json.field("tag_count", integer: Int64(self.tags.count))
        json.field("tags", strings: self.tags.prefix(Self.listedTags))
        return String(decoding: json.finish(), as: UTF8.self)
    }
}

/// Collects gaps as they are seen and hands each one over once, after it has settled: the gaps of
/// the tags of one outage (which come back over a few seconds) and the outage itself become one
/// gap, the union of their intervals and tags. A gap inside an interval already handed over (for
/// the same tags, or an outage's) is not handed over again. Pure: the caller brings the clock.
/// A tag's gap joins a pending one in O(1) (the ingest thread calls it): after an outage, every
/// tag of a large plant comes back within seconds.
package struct DataGapCollector: Sendable {
    /// The shortest gap collected (ms).
    package let minimum: Int64
    /// A gap is handed over once nothing has joined it for this long (ms).
    package let settle: Int64

    private struct Pending {
        var from: Int64
        var to: Int64
        var tags: Set<String>
        var outage: Bool
        var touched: Int64

        func overlaps(from: Int64, to: Int64) -> Bool { self.from <= to && from <= self.to }
    }

    private var pending: [Pending] = []
    /// Intervals handed over, newest last: (from, to, tags or nil for every tag).
    private var handedOver: [(from: Int64, to: Int64, tags: Set<String>?)] = []
    static let remembered = 256

    package init(minimum: Int64, settle: Int64 = 10_000) {
        self.minimum = max(1, minimum)
        self.settle = settle
    }

    /// A tag's sample at `to` after its previous one at `from`; collected when the gap is long enough.
    package mutating func tagSample(_ tag: String, previous from: Int64, time to: Int64, now: Int64) {
        // Wire times: compared as Doubles, never subtracted in Int64.
        guard Double(to) - Double(from) >= Double(self.minimum) else { return }
        guard !self.isCovered(from: from, to: to, tags: [tag]) else { return }
        self.add(Pending(from: from, to: to, tags: [tag], outage: false, touched: now))
    }

    /// The broker was away from `from` to `to`; `tags` are every tag known.
    package mutating func outage(from: Int64, to: Int64, tags: [String], now: Int64) {
        guard Double(to) - Double(from) >= Double(self.minimum) else { return }
        guard !self.isCovered(from: from, to: to, tags: nil) else { return }
        self.add(Pending(from: from, to: to, tags: Set(tags), outage: true, touched: now))
    }

    private mutating func add(_ gap: Pending) {
        guard let first = self.pending.firstIndex(where: { $0.overlaps(from: gap.from, to: gap.to) }) else {
            self.pending.append(gap)
            return
        }
        // Joins the first overlapping gap; any other it now overlaps joins too (rare).
        var merged = self.pending[first]
        merged.from = min(merged.from, gap.from)
        merged.to = max(merged.to, gap.to)
        if gap.tags.count == 1, let tag = gap.tags.first { merged.tags.insert(tag) } else { merged.tags.formUnion(gap.tags) }
        merged.outage = merged.outage || gap.outage
        merged.touched = max(merged.touched, gap.touched)
        var index = first + 1
        while index < self.pending.count {
            let other = self.pending[index]
            if other.overlaps(from: merged.from, to: merged.to) {
                merged.from = min(merged.from, other.from)
                merged.to = max(merged.to, other.to)
                merged.tags.formUnion(other.tags)
                merged.outage = merged.outage || other.outage
                merged.touched = max(merged.touched, other.touched)
                self.pending.remove(at: index)
            } else {
                index += 1
            }
        }
        self.pending[first] = merged
    }

    /// Whether an interval already handed over covers this one: an outage's for any tags, a tag
    /// gap's for its own tags (`tags` nil: every tag, which only an outage covers).
    private func isCovered(from: Int64, to: Int64, tags: Set<String>?) -> Bool {
        self.handedOver.contains { done in
            guard done.from <= from && to <= done.to else { return false }
            guard let covered = done.tags else { return true }
            guard let tags else { return false }
            return tags.isSubset(of: covered)
        }
    }

    /// Gaps nothing joined for `settle`, handed over once (oldest first).
    package mutating func settled(now: Int64) -> [DataGap] {
        guard !self.pending.isEmpty else { return [] }
        var ready: [DataGap] = []
        var waiting: [Pending] = []
        for entry in self.pending {
            guard Double(now) - Double(entry.touched) >= Double(self.settle) else {
                waiting.append(entry)
                continue
            }
            ready.append(DataGap(from: entry.from, to: entry.to, tags: entry.tags.sorted(), cause: entry.outage ? .brokerOutage : .tagGap))
            self.handedOver.append((entry.from, entry.to, entry.outage ? nil : entry.tags))
        }
        self.pending = waiting
        if self.handedOver.count > Self.remembered { self.handedOver.removeFirst(self.handedOver.count - Self.remembered) }
        return ready.sorted { $0.from < $1.from }
    }
}
