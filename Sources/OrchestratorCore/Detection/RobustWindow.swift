/// The last `capacity` values of a stream, kept sorted, for the median and other quantiles (the
/// anomaly detector's robust location and scale).
///
/// Each sorted value carries the ring slot it arrived in, so no second copy in arrival order is
/// kept: the value to evict is the one whose slot comes round again, found by a scan of the slots
/// (two bytes each, 16 at a time). Values are held as `Float` offsets from an origin near the
/// window's median: 6 bytes per value, 1.5 KB for the default 256 (a `Double` beside a ring of
/// values took 4 KB, a `Double` with its slot 2.5 KB) — per tag, so 10 MB less for 10,000 tags than
/// `Double`s. When the median has moved more than 4,096 interquartile ranges from the origin (a
/// level change, a counter that climbs), the origin moves to the median and the offsets are
/// rewritten, so a value's rounding stays below about 2.5e-4 of the window's interquartile range
/// (after a step of more than 4,096 of them, once the values that arrived before the move have
/// left): the quantiles the detector reads are those of the `Double`s to that precision.
///
/// Cost per sample: one binary search, one scan of at most `capacity` slots and one `memmove` of
/// each array; median and every quantile O(1). Storage grows to `capacity` while the window fills,
/// then is never allocated again.
package struct RobustWindow: Sendable {
    /// The largest capacity: slots are `UInt16`.
    package static let maximumCapacity = 65_536

    /// Offsets from `origin`, ascending.
    private var sorted: [Float]
    /// What the offsets are measured from: the first value, then the median when it moves away.
    private var origin = 0.0
    /// The arrival slot (0..<capacity, cycling) of each value of `sorted`.
    private var slots: [UInt16]
    /// The slot the next value arrives in; once full, also the slot of the oldest value.
    private var next = 0
    package let capacity: Int

    package init(capacity: Int) {
        precondition((3...Self.maximumCapacity).contains(capacity), "a robust window holds 3 to 65,536 values")
        self.capacity = capacity
        // Storage grows with the values seen (to `capacity` once the window is full): a tag that
        // has sent a few samples holds a few values, not a full window.
        self.sorted = []
        self.slots = []
    }

    package var count: Int { self.sorted.count }
    /// The values held, in ascending order.
    package var values: [Double] { self.sorted.map { self.origin + Double($0) } }
    package var isFull: Bool { self.sorted.count == self.capacity }

    package mutating func append(_ value: Double) {
        if self.sorted.isEmpty { self.origin = value }
        let offset = Self.offset(value - self.origin)
        let slot = UInt16(truncatingIfNeeded: self.next)
        self.next = self.next + 1 == self.capacity ? 0 : self.next + 1
        if self.sorted.count < self.capacity {
            let position = self.lowerBound(offset)
            self.sorted.insert(offset, at: position)
            self.slots.insert(slot, at: position)
        } else {
            // Replace the oldest value by `value` with one shift of the entries between them.
            let removed = self.slots.withUnsafeBufferPointer { Self.index(of: slot, in: $0) }
            var position = self.lowerBound(offset)
            if position > removed { position -= 1 }  // the entry freed by the oldest sits before the insertion point
            Self.move(&self.sorted, from: removed, to: position, offset)
            Self.move(&self.slots, from: removed, to: position, slot)
        }
        self.keepOriginNearMedian()
    }

    /// A `Double` difference as a `Float` offset (finite: a difference beyond `Float`'s range, only
    /// from absurd inputs, is held at its largest value).
    @inline(__always)
    private static func offset(_ difference: Double) -> Float {
        Float(max(-Double(Float.greatestFiniteMagnitude), min(Double(Float.greatestFiniteMagnitude), difference)))
    }

    /// Moves the origin to the median once the median is more than 4,096 interquartile ranges away
    /// from it (rare: a level change or a climbing counter), rewriting the offsets. The new origin
    /// is the old one plus the median's offset, so every held value is shifted exactly (two
    /// nearby `Float`s differ exactly) and the window reads the same values as before, only
    /// finer from now on. Values that arrived while the origin was far keep their rounding (about
    /// 6e-8 of their distance) until they leave; after a step of many orders of magnitude their
    /// median can call for a second move, so the window is exact again within two of its spans.
    @inline(__always)
    private mutating func keepOriginNearMedian() {
        let n = self.sorted.count
        let median = self.sorted[n / 2]
        let iqr = self.sorted[(3 * (n - 1)) / 4] - self.sorted[(n - 1) / 4]
        guard abs(median) > 4096 * max(iqr, 1e-30) else { return }
        for index in 0..<n { self.sorted[index] = Self.offset(Double(self.sorted[index]) - Double(median)) }
        self.origin += Double(median)
    }

    /// Where `slot` is (it is there): 16 slots per comparison, then one by one within the 16.
    @inline(__always)
    private static func index(of slot: UInt16, in slots: UnsafeBufferPointer<UInt16>) -> Int {
        let raw = UnsafeRawPointer(slots.baseAddress!)
        let wanted = SIMD16<UInt16>(repeating: slot)
        var index = 0
        while index + 16 <= slots.count {
            if any(raw.loadUnaligned(fromByteOffset: index * 2, as: SIMD16<UInt16>.self) .== wanted) { break }
            index += 16
        }
        while slots[index] != slot { index += 1 }
        return index
    }

    /// Drops the entry at `removed` and puts `value` at `position` (an index after the drop),
    /// shifting the entries between them by one.
    @inline(__always)
    private static func move<T>(_ array: inout [T], from removed: Int, to position: Int, _ value: T) {
        array.withUnsafeMutableBufferPointer { buffer in
            let base = buffer.baseAddress!
            if position > removed {
                (base + removed).update(from: base + removed + 1, count: position - removed)
            } else if position < removed {
                (base + position + 1).update(from: base + position, count: removed - position)
            }
            base[position] = value
        }
    }

    /// The first position whose value is not below `value` (among equal values, a 0 may go
    /// either side of a −0: the quantiles are the same): a branch-free binary search (the
    /// comparisons of a noisy signal are coin flips, which a branch predictor cannot learn).
    ///
    /// "Below" is read from the sign of the difference rather than from a comparison: the
    /// compiler turns a comparison's select inside a loop back into a branch (seen in `perf
    /// annotate`), which mispredicted half of the steps. Values are finite, so the difference
    /// is never NaN, and it is negative exactly when the held value is below, or it is −0 − 0.
    private func lowerBound(_ value: Float) -> Int {
        self.sorted.withUnsafeBufferPointer { buffer in
            var length = buffer.count
            guard length > 0 else { return 0 }
            var base = 0
            while length > 1 {
                let half = length / 2
                let below = Int(truncatingIfNeeded: (buffer[base + half - 1] - value).bitPattern >> 31)
                base += half & (0 &- below)
                length -= half
            }
            return buffer[base] < value ? base + 1 : base
        }
    }

    /// The `p`-quantile (0…1) with linear interpolation between order statistics.
    package func quantile(_ p: Double) -> Double {
        self.origin + self.sorted.withUnsafeBufferPointer { Self.quantile(p, of: $0) }
    }

    /// The spreads between the symmetric quantiles `p` and 1 − `p`, for each of `ps`, in one pass
    /// over the storage.
    package func spreads(_ ps: (Double, Double, Double)) -> (Double, Double, Double) {
        self.sorted.withUnsafeBufferPointer { buffer in
            (Self.quantile(1 - ps.0, of: buffer) - Self.quantile(ps.0, of: buffer),
             Self.quantile(1 - ps.1, of: buffer) - Self.quantile(ps.1, of: buffer),
             Self.quantile(1 - ps.2, of: buffer) - Self.quantile(ps.2, of: buffer))
        }
    }

    @inline(__always)
    private static func quantile(_ p: Double, of buffer: UnsafeBufferPointer<Float>) -> Double {
        let n = buffer.count
        guard n > 0 else { return 0 }
        let position = p * Double(n - 1)
        let low = Int(position)
        let high = min(low + 1, n - 1)
        let fraction = position - Double(low)
        return Double(buffer[low]) * (1 - fraction) + Double(buffer[high]) * fraction
    }

    package var median: Double {
        let n = self.sorted.count
        guard n > 0 else { return 0 }
        return self.origin + (n % 2 == 1 ? Double(self.sorted[n / 2]) : (Double(self.sorted[n / 2 - 1]) + Double(self.sorted[n / 2])) / 2)
    }
}
