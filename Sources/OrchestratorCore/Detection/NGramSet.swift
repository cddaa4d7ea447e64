/// The set of n-grams a tag has shown (the anomaly detector's pattern view): integers below a
/// fixed bound, kept as a sorted list while few and as a bit table once the list would be larger.
///
/// A tag that has sent nothing holds nothing, one just started holds a few dozen bytes, and a
/// smooth or slow signal that visits few patterns never needs the whole table (616 bytes with 8
/// bins), while a noisy one ends with exactly the table it had before (issue 19, part 5).
package struct NGramSet: Sendable, Equatable {
    /// Members in ascending order while the set is sparse; empty once it is a bit table.
    private var sorted: [UInt32] = []
    /// The bit table, once the sorted list would take more room than it (empty until then).
    private var bits: [UInt64] = []
    /// Words of the bit table: members are below `words * 64`.
    private let words: Int

    /// A set of integers in `0 ..< bound` (at most `UInt32.max`).
    package init(bound: Int) {
        self.words = (max(1, min(bound, Int(UInt32.max))) + 63) / 64
    }

    /// Members, in either form.
    package var count: Int {
        self.bits.isEmpty ? self.sorted.count : self.bits.reduce(0) { $0 + $1.nonzeroBitCount }
    }

    /// Whether the set has become a bit table.
    package var isDense: Bool { !self.bits.isEmpty }

    /// Bytes of member storage (not counting the arrays' headers).
    package var storageBytes: Int { self.sorted.capacity * 4 + self.bits.capacity * 8 }

    /// Adds `member`; returns whether it is new. `member` must be below the bound.
    package mutating func insert(_ member: Int) -> Bool {
        if !self.bits.isEmpty {
            let word = member >> 6
            let bit = UInt64(1) << UInt64(member & 63)
            let novel = self.bits[word] & bit == 0
            self.bits[word] |= bit
            return novel
        }
        let key = UInt32(truncatingIfNeeded: member)
        let low = self.position(of: key)
        if low < self.sorted.count, self.sorted[low] == key { return false }
        // Four bytes a member against eight a word: past `2 * words` members the table is smaller.
        if self.sorted.count + 1 > 2 * self.words {
            var bits = [UInt64](repeating: 0, count: self.words)
            for old in self.sorted { bits[Int(old >> 6)] |= UInt64(1) << UInt64(old & 63) }
            bits[member >> 6] |= UInt64(1) << UInt64(member & 63)
            self.bits = bits
            self.sorted = []
            return true
        }
        // Grown by doubling up to the switch, never past it (a list may not outgrow the table).
        if self.sorted.count == self.sorted.capacity {
            self.sorted.reserveCapacity(min(2 * self.words, max(8, 2 * self.sorted.count)))
        }
        self.sorted.insert(key, at: low)
        return true
    }

    /// Whether `member` is in the set.
    package func contains(_ member: Int) -> Bool {
        if !self.bits.isEmpty { return self.bits[member >> 6] & (UInt64(1) << UInt64(member & 63)) != 0 }
        let key = UInt32(truncatingIfNeeded: member)
        let low = self.position(of: key)
        return low < self.sorted.count && self.sorted[low] == key
    }

    /// Where `key` is or would go in the sorted list: the first member not below it.
    private func position(of key: UInt32) -> Int {
        var low = 0
        var high = self.sorted.count
        while low < high {
            let middle = (low + high) >> 1
            if self.sorted[middle] < key { low = middle + 1 } else { high = middle }
        }
        return low
    }
}
