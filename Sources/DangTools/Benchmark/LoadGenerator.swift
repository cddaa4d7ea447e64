import Dispatch
import Mosquitto
import Synchronization
#if canImport(Glibc)
import Glibc
package import OrchestratorCore
#endif

/// `dang bench`'s load: sensor messages (docs/mqtt-contract.md, "Inputs") (`{"ts":…,"v":…}` on
/// `plant/b1/bench/u{unit}/T{n}`) over N tags, round after round, at a set rate or as fast as the
/// broker takes them, from one thread with a publish-only client.
///
/// Every tag's timestamps advance one second per round (a 1 Hz plant played faster), so the
/// detectors see a well-formed stream at any rate. Every `breachEvery`-th message puts its tag
/// above its HI limit for one sample: the limit alert that follows (and the module invocation its
/// trigger makes) is matched to that sample's publish time by tag and timestamp; a copy of it on
/// `bench/wire/{tag}` gives the latency of the wire alone.
package final class LoadGenerator: Sendable {
    package struct Plan: Sendable {
        package var tags: Int
        /// Messages per second; 0: as fast as the broker takes them.
        package var rate: Double
        package var seconds: Double
        package var qos: Int32
        /// A breach every this many messages (0: none).
        package var breachEvery: Int
        /// Rounds before the first breach (detectors warm up).
        package var quietRounds = 12

        package init(tags: Int, rate: Double, seconds: Double, qos: Int32, breachEvery: Int = 0) {
            self.tags = tags
            self.rate = rate
            self.seconds = seconds
            self.qos = qos
            self.breachEvery = breachEvery
        }
    }

    package struct Report: Sendable {
        package var published = 0
        /// QoS 1: messages the broker acknowledged.
        package var acknowledged = 0
        package var seconds = 0.0
        package var breaches = 0
        package var rate: Double { self.seconds > 0 ? Double(self.published) / self.seconds : 0 }
    }

    /// The first round's timestamp (ms since the epoch).
    package static let epoch: Int64 = 1_790_000_000_000
    package static let hiLimit = 150.0

    /// Publish times (monotonic ns) of breaching samples, by `round × tags + tag`.
    private let breachTimes = Mutex<[Int: UInt64]>([:])
    /// Rounds already used by earlier runs in this process: an orchestrator that stays up from
    /// one phase to the next sees timestamps that keep rising.
    private static let roundCursor = Atomic<Int>(0)
    private let stopFlag = Atomic<Bool>(false)
    package let plan: Plan

    package init(plan: Plan) {
        self.plan = plan
    }

    package static func topic(_ tag: Int) -> String { "plant/b1/bench/u\(tag / 10)/T\(tag)" }
    package static func tagName(_ tag: Int) -> String { "b1/bench/u\(tag / 10)/T\(tag)" }

    /// The tag number of a tag name made by ``tagName(_:)``.
    package static func tagNumber(_ name: Substring) -> Int? {
        guard let marker = name.lastIndex(of: "T") else { return nil }
        return Int(name[name.index(after: marker)...])
    }

    /// When the breaching sample of `tag` with timestamp `ts` was published (monotonic ns).
    package func breachTime(tag: String, ts: Int64) -> UInt64? {
        guard let number = Self.tagNumber(tag[...]), ts >= Self.epoch else { return nil }
        let round = Int((ts - Self.epoch) / 1000)
        return self.breachTimes.withLock { $0[round * self.plan.tags + number] }
    }

    package func stop() { self.stopFlag.store(true, ordering: .relaxed) }

    /// Publishes the plan; blocks until it is done.
    package func run(port: Int) throws -> Report {
        let client = try MosquittoPublisher(host: "127.0.0.1", port: port, clientID: "dang-bench-load-\(getpid())")
        let tags = max(1, self.plan.tags)
        let topics: [[CChar]] = (0..<tags).map { Array(Self.topic($0).utf8CString) }
        var payload = [UInt8](repeating: 0, count: 64)
        var report = Report()
        var random: UInt64 = 0x9E37_79B9_7F4A_7C15
        let start = monotonicNanoseconds()
        let end = start + UInt64(self.plan.seconds * 1e9)
        var index = 0
        let firstRound = Self.roundCursor.load(ordering: .relaxed)
        defer { Self.roundCursor.store(firstRound + index / tags + 1, ordering: .relaxed) }
        while !self.stopFlag.load(ordering: .relaxed) {
            let now = monotonicNanoseconds()
            if now >= end { break }
            if self.plan.rate > 0 {
                let due = Int(Double(now - start) / 1e9 * self.plan.rate)
                if index >= due {
                    try client.service(milliseconds: 0)
                    usleep(100)
                    continue
                }
            }
            let tag = index % tags
            let round = firstRound + index / tags
            random = random &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            let noise = Double(random >> 40) / Double(1 << 24) - 0.5
            var value = 100 + 3 * sin(Double(round) * 0.1 + Double(tag)) + noise
            let breach = self.plan.breachEvery > 0 && index / tags >= self.plan.quietRounds && index % self.plan.breachEvery == 0
            if breach {
                value = Self.hiLimit + 10
                let key = round * tags + tag
                let time = monotonicNanoseconds()
                self.breachTimes.withLock { $0[key] = time }
                report.breaches += 1
            }
            let length = Self.format(ts: Self.epoch + Int64(round) * 1000, value: value, into: &payload)
            try topics[tag].withUnsafeBufferPointer { topic in
                try payload.withUnsafeBytes { bytes in
                    try client.publish(topic: topic.baseAddress!, payload: UnsafeRawBufferPointer(rebasing: bytes[0..<length]), qos: self.plan.qos)
                }
            }
            if breach {
                // The same sample on a topic only the benchmark reads: the wire's own latency
                // (generator → broker → subscriber), measured at the same moments.
                try Array(("bench/wire/" + Self.tagName(tag)).utf8CString).withUnsafeBufferPointer { topic in
                    try payload.withUnsafeBytes { bytes in
                        try client.publish(topic: topic.baseAddress!, payload: UnsafeRawBufferPointer(rebasing: bytes[0..<length]), qos: 0)
                    }
                }
            }
            index += 1
            if index & 255 == 0 { try client.service(milliseconds: 0) }
        }
        report.seconds = Double(monotonicNanoseconds() - start) / 1e9
        report.published = index
        // QoS 1: wait (up to 5 s) for the broker's last acknowledgements.
        if self.plan.qos > 0 {
            for _ in 0..<500 where client.acknowledged < index { try client.service(milliseconds: 10) }
        }
        report.acknowledged = client.acknowledged
        return report
    }

    /// `{"ts":<ts>,"v":<value with 3 decimals>}` into `buffer`; returns the length.
    static func format(ts: Int64, value: Double, into buffer: inout [UInt8]) -> Int {
        var n = 0
        func put(_ text: StaticString) {
            text.withUTF8Buffer { for byte in $0 { buffer[n] = byte; n += 1 } }
        }
        func put(_ number: UInt64, minimumDigits: Int = 1) {
            var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
                (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
            var count = 0
            var rest = number
            withUnsafeMutableBytes(of: &digits) { digits in
                repeat {
                    digits[count] = UInt8(48 + rest % 10)
                    rest /= 10
                    count += 1
                } while rest > 0 || count < minimumDigits
                for i in stride(from: count - 1, through: 0, by: -1) {
                    buffer[n] = digits[i]
                    n += 1
                }
            }
        }
        put("{\"ts\":")
        put(UInt64(ts))
        put(",\"v\":")
        var scaled = (value * 1000).rounded()
        if scaled < 0 {
            put("-")
            scaled = -scaled
        }
        let whole = UInt64(scaled)
        put(whole / 1000)
        put(".")
        put(whole % 1000, minimumDigits: 3)
        put("}")
        return n
    }
}

/// CLOCK_MONOTONIC in nanoseconds (Dispatch's uptime clock on Linux).
package func monotonicNanoseconds() -> UInt64 {
    DispatchTime.now().uptimeNanoseconds
}
