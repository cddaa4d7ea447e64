import Foundation
package import OrchestratorCore

/// A small refinery simulator: every tag of the topic map that has limits gets a noisy value near
/// the middle of its band, market instruments random-walk, one tag suffers an upset (a step past
/// its HI limit) for a while, and another may drift (a ramp from its normal value to past HIHI).
/// Deterministic for a given seed.
package struct PlantSimulator: Sendable {
    package struct Scenario: Sendable {
        /// Samples per second per tag.
        package var rate: Double = 5
        /// Seconds after start when the upset begins.
        package var upsetAfter: Double = 20
        /// How long the upset lasts, in seconds.
        package var upsetDuration: Double = 20
        /// Repeat the upset this often, in seconds (0: once).
        package var upsetEvery: Double = 0
        /// The tag that is upset.
        package var upsetTag = "r1/cdu/cdu1/TI-101"
        package var seed: UInt64 = 1
        /// A slow drift of another tag: from its normal value, a ramp to the upset level (past HIHI).
        package var drift: Drift?

        package init() {}
    }

    package struct Drift: Sendable {
        package var tag: String
        /// Seconds after start when the ramp begins.
        package var after: Double
        /// Seconds the ramp takes to reach the upset level; it stays there afterwards.
        package var duration: Double

        package init(tag: String, after: Double, duration: Double) {
            self.tag = tag
            self.after = after
            self.duration = max(1, duration)
        }

        /// How far along the ramp (0...1) at `elapsed` seconds.
        package func progress(at elapsed: Double) -> Double {
            min(1, max(0, (elapsed - self.after) / self.duration))
        }
    }

    /// One message to publish.
    package struct Message: Sendable, Equatable {
        package let topic: String
        package let payload: String
    }

    private struct Channel {
        let tag: String
        let topic: String
        let nominal: Double
        let noise: Double
        let upsetLevel: Double
        var value: Double
        let isMarket: Bool
    }

    private var channels: [Channel] = []
    private var random: SplitMix64
    package let scenario: Scenario

    package init(map: TopicMap, scenario: Scenario) {
        self.scenario = scenario
        self.random = SplitMix64(seed: scenario.seed)
        let topicsByTag = Dictionary(map.namedTopics.map { ($0.value, $0.key) }, uniquingKeysWith: { a, _ in a })
        for tag in map.tags.keys.sorted() {
            let limits = map.tags[tag]!.limits
            let isMarket = tag.hasPrefix("market/")
            let topic = topicsByTag[tag] ?? (isMarket ? tag : "plant/\(tag)")
            let levels = Self.levels(limits)
            self.channels.append(
                Channel(
                    tag: tag, topic: topic, nominal: levels.nominal, noise: levels.span * 0.01, upsetLevel: levels.upset,
                    value: levels.nominal, isMarket: isMarket))
        }
    }

    /// A tag's simulated normal value (the middle of its lo–hi band), the band's span (its noise is
    /// 1 % of it), and the upset level (15 % of the span past HIHI, or HI without one).
    package static func levels(_ limits: TagInfo.Limits) -> (nominal: Double, span: Double, upset: Double) {
        let lo = limits.lo ?? limits.lolo
        let hi = limits.hi ?? limits.hihi
        let nominal: Double
        let span: Double
        switch (lo, hi) {
        case (let lo?, let hi?):
            nominal = (lo + hi) / 2
            span = hi - lo
        case (let lo?, nil):
            nominal = lo * 1.2 + 1
            span = abs(lo) * 0.4 + 1
        case (nil, let hi?):
            nominal = hi * 0.8
            span = abs(hi) * 0.4 + 1
        case (nil, nil):
            nominal = 100
            span = 20
        }
        return (nominal, span, (limits.hihi ?? hi ?? nominal + span) + span * 0.15)
    }

    package var tagCount: Int { self.channels.count }

    /// The messages of one tick at `elapsed` seconds since start, stamped `epochMilliseconds`.
    package mutating func tick(elapsed: Double, epochMilliseconds: Int64) -> [Message] {
        var messages: [Message] = []
        messages.reserveCapacity(self.channels.count)
        let upset = self.scenario.isUpset(at: elapsed)
        for index in self.channels.indices {
            var channel = self.channels[index]
            let noise = self.random.gaussian() * channel.noise
            if channel.isMarket {
                channel.value = max(0.01, channel.value + noise * 0.5 + (channel.nominal - channel.value) * 0.01)
            } else if upset && channel.tag == self.scenario.upsetTag {
                channel.value = channel.upsetLevel + noise
            } else if let drift = self.scenario.drift, drift.tag == channel.tag {
                channel.value = channel.nominal + (channel.upsetLevel - channel.nominal) * drift.progress(at: elapsed) + noise
            } else {
                channel.value = channel.nominal + noise
            }
            self.channels[index] = channel
            let value = (channel.value * 1000).rounded() / 1000
            messages.append(Message(topic: channel.topic, payload: "{\"ts\":\(epochMilliseconds),\"v\":\(value),\"q\":\"good\"}"))
        }
        return messages
    }
}

extension PlantSimulator.Scenario {
    /// Whether the upset is on at `elapsed` seconds.
    package func isUpset(at elapsed: Double) -> Bool {
        guard elapsed >= self.upsetAfter else { return false }
        var since = elapsed - self.upsetAfter
        if self.upsetEvery > 0 { since = since.truncatingRemainder(dividingBy: self.upsetEvery) }
        return since < self.upsetDuration
    }
}

/// SplitMix64: a tiny, fast, seedable generator (Steele, Lea & Flood 2014).
package struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    package init(seed: UInt64) { self.state = seed }

    package mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A standard normal draw (Box–Muller).
    package mutating func gaussian() -> Double {
        let u1 = Double.random(in: Double.ulpOfOne..<1, using: &self)
        let u2 = Double.random(in: 0..<1, using: &self)
        return (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
    }
}
