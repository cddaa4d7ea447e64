extension Array where Element: Comparable {
    /// The `q`-quantile (0...1) of the values: the sorted value at index round(q × (count − 1));
    /// nil when there are none. For reports and benchmarks (it sorts a copy), not for a hot path.
    package func quantile(_ q: Double) -> Element? {
        guard !self.isEmpty else { return nil }
        let sorted = self.sorted()
        let index = Int((Swift.min(Swift.max(q, 0), 1) * Double(sorted.count - 1)).rounded())
        return sorted[index]
    }
}
