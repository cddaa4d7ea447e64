extension Int {
    var isPowerOfTwo: Bool { self > 0 && self & (self - 1) == 0 }

    /// Whether the `self`-th occurrence of something is logged: the first ten, then every power of
    /// two, so a flood cannot flood the log.
    var isWorthLogging: Bool { self <= 10 || self.isPowerOfTwo }
}
