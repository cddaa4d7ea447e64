import Foundation
import Testing

@testable import DangTools
@testable import OrchestratorCore

/// Decisions with the shipped `config/orchestrator.yaml` and `topics/refinery.yaml`, not a test
/// configuration (docs/decisions.md).
@Suite struct ShippedDecisionTests {
    static func shipped() throws -> OrchestratorConfig {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return try OrchestratorConfig.load(file: root.appendingPathComponent("config/orchestrator.yaml").path, environment: [:])
    }

    static let level = "r1/cdu/cdu1/LI-101"  // high criticality, HI 75, HIHI 90

    /// A level that varies around 50 %, then (`frozen`) reads exactly 50.0 for 400 s, then jumps
    /// past HI: the equipment trigger fires on the limit alert either way.
    func breach(frozen: Bool, learnedFlatline: Bool = true) throws -> DecisionHarness {
        var config = try Self.shipped()
        config.detection.flatlineLearn = learnedFlatline
        let h = DecisionHarness(config: config)
        var noise = SplitMix64(seed: 5)
        for _ in 0..<200 { h.sample(Self.level, 50 + noise.gaussian() * 0.4) }
        for _ in 0..<400 { h.sample(Self.level, frozen ? 50 : 50 + noise.gaussian() * 0.4) }
        h.sample(Self.level, 80)
        return h
    }

    @Test func `a level past HI after a frozen stretch is not forecast on frozen data`() throws {
        // The learned flatline (on by default) flags the stuck transmitter; its episode ends with
        // the jump, inside the window.
        let h = try self.breach(frozen: true)
        #expect(h.alertsRaised.contains { $0.kind == .flatline && $0.tag == Self.level })
        let decisions = h.decisions("forecasting")
        #expect(!decisions.isEmpty)  // the jump raised alerts the equipment trigger took up
        for decision in decisions {
            #expect(decision.action == "skip")
            #expect(DecisionHarness.reasons(decision)["data_quality"] == "skip")
            #expect(decision.reasons.contains("a stale, flatline or data-quality episode ended inside its window"))
        }
        #expect(h.invocations("forecasting").isEmpty)
    }

    @Test func `without the learned flatline, the frozen stretch in the window is refused by itself`() throws {
        let h = try self.breach(frozen: true, learnedFlatline: false)
        #expect(!h.alertsRaised.contains { $0.kind == .flatline })
        let decisions = h.decisions("forecasting")
        #expect(!decisions.isEmpty)
        for decision in decisions {
            #expect(decision.action == "skip")
            #expect(decision.reasons.contains("read exactly 50 for 118 s (119 samples) in its window"))
        }
        #expect(h.invocations("forecasting").isEmpty)
    }

    @Test func `the same breach on live data is forecast, once`() throws {
        let h = try self.breach(frozen: false)
        let first = try #require(h.decisions("forecasting").first)
        #expect(first.action == "invoke")
        #expect(DecisionHarness.reasons(first)["data_quality"] == "pass")
        #expect(h.invocations("forecasting").count == 1)  // the limit alert after the anomaly one is deduplicated
    }

    enum Signal: String, CaseIterable, Sendable {
        case stuckFor400Seconds, nineEqualReadings, coarseStepsOf8, constant

        func value(_ i: Int) -> Double {
            switch self {
            case .stuckFor400Seconds: i >= 100 && i < 500 ? 50 : 50 + Double(i % 7) * 0.1
            case .nineEqualReadings: (490..<499).contains(i) ? 7 : Double(i)
            case .coarseStepsOf8: Double(i / 8)
            case .constant: 3  // the flatline detector's to judge (a setpoint, a switch)
            }
        }
    }

    @Test(arguments: Signal.allCases)
    func `frozen stretches are told from short repeats, quantised signals and constant tags`(signal: Signal) throws {
        var engine = DetectionEngine(settings: DetectionSettings(), topicMap: TopicMap())
        let found = engine.slot(for: "u/T")
        let slot = try #require(found)
        for i in 0..<501 {
            _ = engine.detect(slot: slot, value: signal.value(i), quality: .good, sampleTime: Int64(i) * 1000, now: Int64(i) * 1000)
        }
        let view = try #require(engine.view(of: "u/T", window: 120, openKinds: { _ in [] }))
        #expect((view.frozen != nil) == (signal == .stuckFor400Seconds))
    }
}

/// Market moves with the shipped configuration: judged against the instrument's own volatility.
@Suite struct ShippedMarketMoveTests {
    /// Brent, one quote a second: `minutes` of a random walk whose steps have this size (percent),
    /// then a steady move of `move` percent over 15 minutes.
    func brent(stepPercent: Double, minutes: Int, move: Double) throws -> DecisionHarness {
        let h = DecisionHarness(config: try ShippedDecisionTests.shipped())
        var random = SplitMix64(seed: 11)
        var price = 80.0
        for _ in 0..<(minutes * 60) {
            price *= 1 + random.gaussian() * stepPercent / 100
            h.sample("market/brent", price)
        }
        let start = price
        for second in 1...900 { h.sample("market/brent", start * (1 + move / 100 * Double(second) / 900)) }
        return h
    }

    @Test func `a 7.5 % crude move in 15 minutes on a quiet market is analysed`() throws {
        let h = try self.brent(stepPercent: 0.02, minutes: 60, move: 7.5)
        let decision = try #require(h.decisions("analysis").first)
        #expect(decision.action == "invoke")
        #expect(decision.trigger.contains(#""severity":"warning""#) || decision.trigger.contains(#""severity":"critical""#))
        // One invocation (the module does not answer here, so its attempts are sent again).
        #expect(Set(h.invocations("analysis").compactMap { $0["invocation_id"] as? String }).count == 1)
    }

    @Test func `the same threshold crossed by a market that always moves that much is only noted`() throws {
        // Steps of 0.08 % a second: 15-minute moves of about 2 % are this instrument's normal.
        let h = try self.brent(stepPercent: 0.08, minutes: 60, move: 2.5)
        #expect(h.invocations("analysis").isEmpty)
    }

    @Test func `a move is judged against what came before, and only after the typical move is known`() {
        var detector = MarketMoveDetector(windowMilliseconds: 900_000)
        var time: Int64 = 0
        var first: (percent: Double, timesTypical: Double?)? = nil
        for _ in 0..<3_000 {
            time += 1_000
            let value = 100 + Double(time / 1_000 % 10) * 0.01  // a small, regular wiggle
            if let move = detector.update(value, time: time), first == nil { first = move }
        }
        #expect(first?.timesTypical == nil)  // not known at first
        var last: (percent: Double, timesTypical: Double?)? = nil
        for second in 1...900 { last = detector.update(100 * (1 + 0.05 * Double(second) / 900), time: time + Int64(second) * 1_000) }
        #expect((last?.timesTypical ?? 0) >= 6)
    }
}

/// The shipped performance trigger: a furnace efficiency sliding down is optimised.
@Suite struct ShippedPerformanceTests {
    @Test func `a furnace efficiency sliding 3 points in 10 minutes, inside its limits, is optimised once`() throws {
        let h = DecisionHarness(config: try ShippedDecisionTests.shipped())
        let tag = "r1/cdu/cdu1/EFF-101"  // limits 82–96 %
        var noise = SplitMix64(seed: 3)
        for _ in 0..<600 { h.sample(tag, 90 + noise.gaussian() * 0.1) }
        for second in 1...600 { h.sample(tag, 90 - 3 * Double(second) / 600 + noise.gaussian() * 0.1) }
        let decision = try #require(h.decisions("optimization").first)
        #expect(decision.trigger.contains(#""name":"performance-degradation""#))
        #expect(decision.action == "invoke")
        #expect(Set(h.invocations("optimization").compactMap { $0["invocation_id"] as? String }).count == 1)
        // Against the way it went: the objective is to bring the efficiency back up.
        let params = h.invocations("optimization").first?["params"] as? [String: Any]
        #expect((params?["objective"] as? [String: String])?["direction"] == "up")
    }
}

/// A window that holds a recent data-quality episode is not a module's input.
@Suite struct ShippedRecentEpisodeTests {
    /// LI-101 on live data; a sample stamped an hour ahead (refused: a data-quality episode, cleared
    /// by the clean samples after it) `samplesBefore` samples before a jump past HI.
    func breach(samplesBefore: Int) throws -> DecisionHarness {
        let h = DecisionHarness(config: try ShippedDecisionTests.shipped())
        let tag = ShippedDecisionTests.level
        var noise = SplitMix64(seed: 8)
        for _ in 0..<300 { h.sample(tag, 50 + noise.gaussian() * 0.4) }
        let ahead = h.time + 3_600_000
        var topic = "plant/\(tag)"
        var payload = "{\"ts\":\(ahead),\"v\":50}"
        topic.withUTF8 { t in payload.withUTF8 { p in h.pipeline.handle(topic: UnsafeRawBufferPointer(t), payload: UnsafeRawBufferPointer(p), receivedAt: h.time) } }
        h.pipeline.deliverAfterMessage()
        for _ in 0..<samplesBefore { h.sample(tag, 50 + noise.gaussian() * 0.4) }
        h.sample(tag, 80)
        return h
    }

    @Test func `an episode that ended inside the window keeps the tag out`() throws {
        let h = try self.breach(samplesBefore: 40)  // cleared after 10 clean samples, 30 before the jump
        let decision = try #require(h.decisions("forecasting").first)
        #expect(decision.action == "skip")
        #expect(decision.reasons.contains("episode ended inside its window"))
    }

    @Test func `an episode older than the window does not`() throws {
        let h = try self.breach(samplesBefore: 200)  // the window is the newest 120 samples
        let decision = try #require(h.decisions("forecasting").first)
        #expect(decision.action == "invoke")
    }
}
