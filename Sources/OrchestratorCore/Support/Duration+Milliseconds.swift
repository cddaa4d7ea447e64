/// The two spellings of a `Duration` the code needs: seconds as a `Double` (rates, timeouts handed to
/// C) and whole milliseconds (epoch-millisecond arithmetic).
extension Duration {
    package var timeInterval: Double {
        Double(self.components.seconds) + Double(self.components.attoseconds) / 1e18
    }

    package var milliseconds: Int64 {
        self.components.seconds * 1000 + self.components.attoseconds / 1_000_000_000_000_000
    }
}
