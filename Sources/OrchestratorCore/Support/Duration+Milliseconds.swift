/// The two spellings of a `Duration` the code needs: seconds as a `Double` (rates, timeouts handed to
/// C) and whole milliseconds (epoch-millisecond arithmetic).
extension Duration {
    var timeInterval: Double {
        Double(self.components.seconds) + Double(self.components.attoseconds) / 1e18
    }

    var milliseconds: Int64 {
        self.components.seconds * 1000 + self.components.attoseconds / 1_000_000_000_000_000
    }
}

extension Int {
    var isPowerOfTwo: Bool { self > 0 && self & (self - 1) == 0 }

    /// Whether the `self`-th occurrence of something is logged: the first ten, then every power of
    /// two, so a flood cannot flood the log.
    var isWorthLogging: Bool { self <= 10 || self.isPowerOfTwo }
}
