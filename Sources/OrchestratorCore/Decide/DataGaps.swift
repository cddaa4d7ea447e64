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
package struct DataGapCollector: Sendable {
    /// The shortest gap collected (ms).
    package let minimum: Int64
    /// A gap is handed over once nothing has joined it for this long (ms).
    package let settle: Int64

    private var pending: [(gap: DataGap, touched: Int64)] = []
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
        self.add(DataGap(from: from, to: to, tags: [tag], cause: .tagGap), now: now)
    }

    /// The broker was away from `from` to `to`; `tags` are every tag known.
    package mutating func outage(from: Int64, to: Int64, tags: [String], now: Int64) {
        guard Double(to) - Double(from) >= Double(self.minimum) else { return }
        self.add(DataGap(from: from, to: to, tags: tags.sorted(), cause: .brokerOutage), now: now)
    }

    private mutating func add(_ gap: DataGap, now: Int64) {
        if self.isCovered(gap) { return }
        var merged = gap
        var index = 0
        while index < self.pending.count {
            let other = self.pending[index].gap
            if other.from <= merged.to && merged.from <= other.to {
                merged.from = min(merged.from, other.from)
                merged.to = max(merged.to, other.to)
                merged.tags = Array(Set(merged.tags).union(other.tags)).sorted()
                if other.cause == .brokerOutage { merged.cause = .brokerOutage }
                self.pending.remove(at: index)
            } else {
                index += 1
            }
        }
        self.pending.append((merged, now))
    }

    private func isCovered(_ gap: DataGap) -> Bool {
        self.handedOver.contains { done in
            done.from <= gap.from && gap.to <= done.to && (done.tags.map { Set(gap.tags).isSubset(of: $0) } ?? true)
        }
    }

    /// Gaps nothing joined for `settle`, handed over once (oldest first).
    package mutating func settled(now: Int64) -> [DataGap] {
        guard !self.pending.isEmpty else { return [] }
        var ready: [DataGap] = []
        self.pending.removeAll { entry in
            guard Double(now) - Double(entry.touched) >= Double(self.settle) else { return false }
            ready.append(entry.gap)
            return true
        }
        for gap in ready {
            self.handedOver.append((gap.from, gap.to, gap.cause == .brokerOutage ? nil : Set(gap.tags)))
        }
        if self.handedOver.count > Self.remembered { self.handedOver.removeFirst(self.handedOver.count - Self.remembered) }
        return ready.sorted { $0.from < $1.from }
    }
}
