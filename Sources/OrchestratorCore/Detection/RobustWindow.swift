/// The last `capacity` values of a stream, kept both in arrival order and sorted, for the median
/// and other quantiles (the anomaly detector's robust location and scale).
///
/// Cost per sample: two binary searches and one `memmove` of at most `capacity` doubles; median is
/// and every quantile O(1). Storage is allocated once.
package struct RobustWindow: Sendable {
    private var ring: [Double]
    private var sorted: [Double]
    private var next = 0
    package let capacity: Int

    package init(capacity: Int) {
        precondition(capacity >= 3, "a robust window needs at least 3 values")
        self.capacity = capacity
        self.ring = []
        self.sorted = []
        self.ring.reserveCapacity(capacity)
        self.sorted.reserveCapacity(capacity)
    }

    package var count: Int { self.sorted.count }
    package var isFull: Bool { self.sorted.count == self.capacity }

    package mutating func append(_ value: Double) {
        guard self.ring.count == self.capacity else {
            self.ring.append(value)
            self.sorted.insert(value, at: self.lowerBound(value))
            return
        }
        let old = self.ring[self.next]
        self.ring[self.next] = value
        self.next = self.next + 1 == self.capacity ? 0 : self.next + 1
        // Replace `old` by `value` in the sorted array with one shift of the values between them.
        let removed = self.lowerBound(old)
        var position = self.lowerBound(value)
        self.sorted.withUnsafeMutableBufferPointer { buffer in
            let base = buffer.baseAddress!
            if position > removed {
                position -= 1  // the slot freed by `old` sits before the insertion point
                (base + removed).update(from: base + removed + 1, count: position - removed)
            } else if position < removed {
                (base + position + 1).update(from: base + position, count: removed - position)
            }
            base[position] = value
        }
    }

    /// The first position whose value is not below `value`: a branch-free binary search (the
    /// comparisons of a noisy signal are coin flips, which a branch predictor cannot learn).
    private func lowerBound(_ value: Double) -> Int {
        self.sorted.withUnsafeBufferPointer { buffer in
            var length = buffer.count
            guard length > 0 else { return 0 }
            var base = 0
            while length > 1 {
                let half = length / 2
                base = buffer[base + half - 1] < value ? base + half : base
                length -= half
            }
            return buffer[base] < value ? base + 1 : base
        }
    }

    /// The `p`-quantile (0…1) with linear interpolation between order statistics.
    package func quantile(_ p: Double) -> Double {
        self.sorted.withUnsafeBufferPointer { Self.quantile(p, of: $0) }
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
    private static func quantile(_ p: Double, of buffer: UnsafeBufferPointer<Double>) -> Double {
        let n = buffer.count
        guard n > 0 else { return 0 }
        let position = p * Double(n - 1)
        let low = Int(position)
        let high = min(low + 1, n - 1)
        let fraction = position - Double(low)
        return buffer[low] * (1 - fraction) + buffer[high] * fraction
    }

    package var median: Double {
        let n = self.sorted.count
        guard n > 0 else { return 0 }
        return n % 2 == 1 ? self.sorted[n / 2] : (self.sorted[n / 2 - 1] + self.sorted[n / 2]) / 2
    }
}
