/// The last `depth` usable samples (good quality, finite, in time order) of every tag, in one
/// contiguous block: the windows a module invocation carries (`params.tags`, docs/decisions.md,
/// "Invocations").
///
/// A slot's samples live in `depth` consecutive cells used as a ring; appending is O(1) and
/// allocates only when a new tag appears. 16 bytes per sample: 120 samples of 10,000 tags take
/// about 19 MB.
package struct SampleHistory: Sendable {
    package let depth: Int
    private var times: [Int64] = []
    private var values: [Double] = []
    /// Per slot: index of the oldest sample and how many there are.
    private var heads: [Int32] = []
    private var counts: [Int32] = []

    package init(depth: Int) {
        self.depth = max(0, depth)
    }

    /// Makes room for `slots` tags in all, without growing by doubling.
    package mutating func reserveCapacity(slots: Int) {
        let slots = max(0, slots)
        self.heads.reserveCapacity(slots)
        self.counts.reserveCapacity(slots)
        let (cells, overflow) = slots.multipliedReportingOverflow(by: self.depth)
        guard !overflow else { return }
        self.times.reserveCapacity(cells)
        self.values.reserveCapacity(cells)
    }

    /// Makes room for one more tag.
    package mutating func addSlot() {
        self.heads.append(0)
        self.counts.append(0)
        self.times.append(contentsOf: repeatElement(0, count: self.depth))
        self.values.append(contentsOf: repeatElement(0, count: self.depth))
    }

    /// Forgets a slot's samples (the slot is about to hold another tag).
    package mutating func clear(slot: Int32) {
        self.heads[Int(slot)] = 0
        self.counts[Int(slot)] = 0
    }

    package mutating func append(slot: Int32, time: Int64, value: Double) {
        guard self.depth > 0 else { return }
        let index = Int(slot)
        let base = index * self.depth
        let count = Int(self.counts[index])
        if count < self.depth {
            let cell = (Int(self.heads[index]) + count) % self.depth
            self.times[base + cell] = time
            self.values[base + cell] = value
            self.counts[index] += 1
        } else {
            let cell = Int(self.heads[index])
            self.times[base + cell] = time
            self.values[base + cell] = value
            self.heads[index] = Int32((cell + 1) % self.depth)
        }
    }

    /// Puts a sample from the past (Sparkplug `is_historical`) in its place by time. One older than
    /// every sample of a full window is dropped; one with a time already held is not added again.
    /// Returns whether it was kept.
    @discardableResult
    package mutating func insert(slot: Int32, time: Int64, value: Double) -> Bool {
        guard self.depth > 0 else { return false }
        let index = Int(slot)
        let count = Int(self.counts[index])
        let base = index * self.depth
        let head = Int(self.heads[index])
        let depth = self.depth
        let cell = { (offset: Int) in base + (head + offset) % depth }
        // Where it goes: after every sample older than it.
        var position = count
        while position > 0, self.times[cell(position - 1)] >= time {
            if self.times[cell(position - 1)] == time { return false }
            position -= 1
        }
        if count == self.depth {
            // Full: the oldest goes, unless the newcomer would be the oldest.
            guard position > 0 else { return false }
            for offset in 0..<(position - 1) {
                self.times[cell(offset)] = self.times[cell(offset + 1)]
                self.values[cell(offset)] = self.values[cell(offset + 1)]
            }
            self.times[cell(position - 1)] = time
            self.values[cell(position - 1)] = value
            return true
        }
        var offset = count
        while offset > position {
            self.times[cell(offset)] = self.times[cell(offset - 1)]
            self.values[cell(offset)] = self.values[cell(offset - 1)]
            offset -= 1
        }
        self.times[cell(position)] = time
        self.values[cell(position)] = value
        self.counts[index] += 1
        return true
    }

    /// Samples held for a slot.
    package func count(slot: Int32) -> Int { Int(self.counts[Int(slot)]) }

    /// Whether a slot holds a sample with exactly this time and value (bit for bit): how a QoS 1
    /// redelivery is told from a new sample. Searches newest first and stops at older times, so a
    /// redelivery of a recent sample costs a few comparisons.
    package func contains(slot: Int32, time: Int64, value: Double) -> Bool {
        let index = Int(slot)
        let count = Int(self.counts[index])
        let base = index * self.depth
        let head = Int(self.heads[index])
        var offset = count - 1
        while offset >= 0 {
            let cell = base + (head + offset) % self.depth
            let held = self.times[cell]
            if held < time { return false }
            if held == time && self.values[cell].bitPattern == value.bitPattern { return true }
            offset -= 1
        }
        return false
    }

    /// The newest `limit` samples of a slot, oldest first.
    package func window(slot: Int32, limit: Int) -> (times: [Int64], values: [Double]) {
        let index = Int(slot)
        let count = Int(self.counts[index])
        let take = min(count, max(0, limit))
        var times: [Int64] = []
        var values: [Double] = []
        times.reserveCapacity(take)
        values.reserveCapacity(take)
        let base = index * self.depth
        let head = Int(self.heads[index])
        for offset in (count - take)..<count {
            let cell = (head + offset) % self.depth
            times.append(self.times[base + cell])
            values.append(self.values[base + cell])
        }
        return (times, values)
    }

    /// The longest run of exactly equal consecutive values among the newest `limit` samples of a
    /// slot: its value, length and time span, with the number of runs in those samples and the
    /// mean length of the others (nil without samples).
    package func longestRun(slot: Int32, limit: Int) -> (value: Double, samples: Int, milliseconds: Int64, runs: Int, othersMean: Double)? {
        let index = Int(slot)
        let count = Int(self.counts[index])
        let take = min(count, max(0, limit))
        guard take > 0 else { return nil }
        let base = index * self.depth
        // One pass over the ring, oldest of the `take` newest first, without a division per sample.
        var cell = (Int(self.heads[index]) + count - take) % self.depth
        var previous = self.values[base + cell]
        var runStart = cell
        var length = 0
        var best = (start: cell, length: 0)
        var runs = 1
        for _ in 0..<take {
            let value = self.values[base + cell]
            if value != previous {
                if length > best.length { best = (runStart, length) }
                runs += 1
                runStart = cell
                length = 0
                previous = value
            }
            length += 1
            cell += 1
            if cell == self.depth { cell = 0 }
        }
        if length > best.length { best = (runStart, length) }
        let end = (best.start + best.length - 1) % self.depth
        let span = self.times[base + end] &- self.times[base + best.start]
        let othersMean = runs > 1 ? Double(take - best.length) / Double(runs - 1) : 0
        return (self.values[base + best.start], best.length, span, runs, othersMean)
    }

    /// The time of the oldest of the newest `limit` samples of a slot.
    package func oldestTime(slot: Int32, limit: Int) -> Int64? {
        let index = Int(slot)
        let count = Int(self.counts[index])
        let take = min(count, max(0, limit))
        guard take > 0 else { return nil }
        return self.times[index * self.depth + (Int(self.heads[index]) + count - take) % self.depth]
    }
}
