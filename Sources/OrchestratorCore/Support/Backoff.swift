/// Exponential backoff, the one policy of every retry: the record writer's reconnects, the LLM
/// client's transient failures and module invocations whose delivery failed.
///
/// Attempt n (from 1) waits `base` × 2^(n − 1), at most `cap`; with `jitter`, a delay drawn from
/// the upper half of that, so clients that failed together do not retry together.
struct Backoff: Sendable {
    var base: Duration
    var cap: Duration
    var jitter: Bool
    /// Attempts so far, for ``next()``.
    private(set) var attempt = 0

    init(base: Duration, cap: Duration, jitter: Bool) {
        self.base = base
        self.cap = cap
        self.jitter = jitter
    }

    /// The record writer's reconnects: 0.25 s doubling to 30 s, jittered.
    static var reconnect: Backoff { Backoff(base: .milliseconds(250), cap: .seconds(30), jitter: true) }

    /// The delay before attempt `attempt` (from 1).
    func delay(attempt: Int) -> Duration {
        // Past 2^20 steps every useful cap is reached; the shift stays far from overflow.
        let ceiling = min(self.base * (1 << min(max(attempt - 1, 0), 20)), self.cap)
        return self.jitter ? ceiling * Double.random(in: 0.5...1) : ceiling
    }

    /// The delay before the next attempt, counting it.
    mutating func next() -> Duration {
        self.attempt += 1
        return self.delay(attempt: self.attempt)
    }

    mutating func reset() { self.attempt = 0 }
}
