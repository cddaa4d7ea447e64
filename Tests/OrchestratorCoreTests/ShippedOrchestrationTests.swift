import Foundation
import Testing

@testable import DangTools
@testable import OrchestratorCore

/// Predictive orchestration with the shipped files: a trend projected across a limit is an advisory
/// before the alarm, and the shipped `predicted-limit` trigger forecasts the tag.
@Suite struct ShippedPredictionTests {
    static let temperature = "r1/cdu/cdu1/TI-101"  // high criticality; HI 372, HIHI 380 degC

    /// TI-101 at 360 °C (σ 0.3) for `quiet` seconds, then rising `perHour` °C/h for `rising` seconds.
    func furnace(quiet: Int = 600, perHour: Double, rising: Int, seed: UInt64 = 3) throws -> DecisionHarness {
        let h = DecisionHarness(config: try ShippedDecisionTests.shipped())
        var noise = SplitMix64(seed: seed)
        for _ in 0..<quiet { h.sample(Self.temperature, 360 + noise.gaussian() * 0.3) }
        for second in 0..<rising { h.sample(Self.temperature, 360 + perHour * Double(second) / 3600 + noise.gaussian() * 0.3) }
        return h
    }

    @Test func `a furnace outlet drifting towards HI is predicted well before the alarm, and forecast once`() throws {
        // 36 °C/h from 360: HI (372) after 20 minutes.
        let h = try self.furnace(perHour: 36, rising: 1500)
        let alerts = h.alertsRaised
        let prediction = try #require(alerts.first { $0.kind == .predictedLimit })
        let alarm = try #require(alerts.first { $0.kind == .limit && $0.tag == Self.temperature })
        #expect(prediction.severity == .info)
        #expect(prediction.message.contains("predicted above HI 372 degC in ~"))
        let leadMinutes = Double(alarm.timestamp - prediction.timestamp) / 60_000
        #expect(leadMinutes > 10, "predicted only \(leadMinutes) min ahead")
        let payload = try #require(JSONSerialization.jsonObject(with: Data(prediction.jsonPayload())) as? [String: Any])
        let detail = try #require(payload["prediction"] as? [String: Any])
        #expect(detail["limit"] as? String == "hi")
        #expect(((detail["minutes"] as? Double) ?? 0) > 0)
        #expect(((detail["earliest_minutes"] as? Double) ?? 99) <= ((detail["minutes"] as? Double) ?? 0))
        // The tag is forecast once, before the alarm: on the drift's first anomaly alert or on the
        // prediction (the shipped predicted-limit trigger), whichever comes first; the other is deduplicated.
        let forecast = try #require(h.decisions("forecasting", action: "invoke").first)
        #expect(forecast.ts < alarm.raisedAt)
        #expect(Set(h.invocations("forecasting").compactMap { $0["invocation_id"] as? String }).count == 1)
        let predicted = try #require(h.decisions("forecasting").first { $0.trigger.contains("\"alert_kind\":\"predicted_limit\"") })
        #expect(predicted.trigger.contains("\"name\":\"predicted-limit\""))
    }

    @Test func `on a quiet tag the prediction alone asks for the forecast`() throws {
        // A slow drift (9 °C/h from 365: HI in 47 min) that the anomaly detectors do not call.
        let h = DecisionHarness(config: try ShippedDecisionTests.shipped())
        var noise = SplitMix64(seed: 21)
        for _ in 0..<600 { h.sample(Self.temperature, 365 + noise.gaussian() * 0.3) }
        for second in 0..<2400 { h.sample(Self.temperature, 365 + 9 * Double(second) / 3600 + noise.gaussian() * 0.3) }
        let prediction = try #require(h.alertsRaised.first { $0.kind == .predictedLimit })
        let forecast = try #require(h.decisions("forecasting", action: "invoke").first)
        #expect(forecast.trigger.contains("\"alert_id\":\"\(prediction.id)\""))
        #expect(h.alertsRaised.filter { $0.kind == .limit }.isEmpty)
    }

    @Test func `a projection hovering near the horizon does not chatter`() throws {
        // 24 °C/h from 360: the crossing is 30 minutes away as it becomes significant, then nears.
        let h = try self.furnace(perHour: 24, rising: 1800)
        let predictions = h.alertsRaised.filter { $0.kind == .predictedLimit }
        #expect(predictions.count == 1)
    }

    @Test(arguments: [UInt64(1), 2, 3, 4])
    func `hours of normal operation raise no prediction`(seed: UInt64) throws {
        let h = try self.furnace(quiet: 4 * 3600, perHour: 0, rising: 0, seed: seed)
        #expect(h.alertsRaised.filter { $0.kind == .predictedLimit }.isEmpty)
    }

    @Test func `upsets that step past HIHI and back every 10 minutes are alarms, never predictions`() throws {
        // The step down after each upset is significant to Mann–Kendall, but a line through a step
        // explains little of the window: not extrapolated (without that rule: three predictions of LO).
        let h = DecisionHarness(config: try ShippedDecisionTests.shipped())
        var noise = SplitMix64(seed: 12)
        for second in 0..<3600 {
            let upset = second >= 600 && (second - 600) % 600 < 200
            h.sample(Self.temperature, (upset ? 384 : 360) + noise.gaussian() * 0.3)
        }
        #expect(!h.alertsRaised.filter { $0.kind == .limit }.isEmpty)
        #expect(h.alertsRaised.filter { $0.kind == .predictedLimit }.isEmpty)
    }

    @Test func `a drift that levels off below the limit withdraws its advisory`() throws {
        let h = DecisionHarness(config: try ShippedDecisionTests.shipped())
        var noise = SplitMix64(seed: 9)
        for _ in 0..<600 { h.sample(Self.temperature, 360 + noise.gaussian() * 0.3) }
        for second in 0..<600 { h.sample(Self.temperature, 360 + 36 * Double(second) / 3600 + noise.gaussian() * 0.3) }
        for _ in 0..<1200 { h.sample(Self.temperature, 366 + noise.gaussian() * 0.3) }
        let episodes = h.alerts.filter { $0.kind == .predictedLimit }
        #expect(episodes.first?.state == .raised)
        #expect(episodes.last?.state == .cleared)
        #expect(h.alertsRaised.filter { $0.kind == .limit }.isEmpty)
    }
}

/// Chained modules with the shipped files: a forecast that crosses a limit is followed by an
/// optimisation of the unit, with the forecast attached and the parent decision recorded.
@Suite struct ShippedChainTests {
    /// TI-101 drifting up until it is forecast; the invocation answered at once by the reference worker.
    func forecastAndAnswer() throws -> (h: DecisionHarness, decision: String, result: [String: Any]) {
        let h = DecisionHarness(config: try ShippedDecisionTests.shipped())
        var noise = SplitMix64(seed: 3)
        for _ in 0..<600 { h.sample(ShippedPredictionTests.temperature, 360 + noise.gaussian() * 0.3) }
        var second = 0.0
        while h.invocations("forecasting").isEmpty && second < 1200 {
            h.sample(ShippedPredictionTests.temperature, 360 + 36 * second / 3600 + noise.gaussian() * 0.3)
            second += 1
        }
        let invocation = try #require(h.invocations("forecasting").first)
        let message = try JSONSerialization.data(withJSONObject: invocation)
        let reply = ReferenceWorker.forecasting.answer(Array(message))
        h.coordinator.handle(topic: "apos/result/forecasting", payload: reply)
        let result = try #require(JSONSerialization.jsonObject(with: Data(reply)) as? [String: Any])
        return (h, invocation["decision_id"] as? String ?? "", result)
    }

    @Test func `a forecast that crosses HI leads to one optimisation of the unit with the forecast attached`() throws {
        let (h, parent, result) = try self.forecastAndAnswer()
        #expect(((result["output"] as? [String: Any])?["forecasts"] as? [String: Any])?[ShippedPredictionTests.temperature] != nil)
        let optimisations = h.invocations("optimization")
        #expect(optimisations.count == 1)
        let invocation = try #require(optimisations.first)
        let params = try #require(invocation["params"] as? [String: Any])
        #expect(params["scope"] as? String == "r1/cdu/cdu1")
        let objective = try #require(params["objective"] as? [String: Any])
        #expect(objective["tag"] as? String == ShippedPredictionTests.temperature)
        #expect(objective["direction"] as? String == "down")
        let attached = try #require(params["parent"] as? [String: Any])
        #expect(attached["decision_id"] as? String == parent)
        let evidence = try #require(attached["evidence"] as? [String: Any])
        #expect(evidence["limit"] as? String == "hi")
        #expect((evidence["mean"] as? [Any])?.isEmpty == false)
        let trigger = try #require(invocation["trigger"] as? [String: Any])
        #expect(trigger["kind"] as? String == "chained")
        #expect(trigger["parent_decision_id"] as? String == parent)
        #expect(trigger["depth"] as? Int == 1)
        let decision = try #require(h.decisions("optimization", action: "invoke").first)
        #expect(decision.parentDecisionID?.uuidString.lowercased() == parent)
    }

    @Test func `a forecast inside the limits chains nothing`() throws {
        let h = DecisionHarness(config: try ShippedDecisionTests.shipped())
        var noise = SplitMix64(seed: 3)
        for _ in 0..<100 { h.sample(ShippedPredictionTests.temperature, 360 + noise.gaussian() * 0.3) }
        _ = h.coordinator.request(module: .forecasting, scope: ShippedPredictionTests.temperature, by: "test", params: nil)
        let invocation = try #require(h.invocations("forecasting").first)
        let id = invocation["invocation_id"] as? String ?? ""
        let flat = #"{"invocation_id":"\#(id)","status":"ok","output":{"forecasts":{"r1/cdu/cdu1/TI-101":{"mean":[364,364.5,365]}}},"metrics":{"benefit":0.2}}"#
        h.coordinator.handle(topic: "apos/result/forecasting", payload: Array(flat.utf8))
        #expect(h.invocations("optimization").isEmpty)
        #expect(h.decisions("optimization").isEmpty)
    }

    @Test func `a large crude move found by the analysis re-optimises the crude unit`() throws {
        let h = DecisionHarness(config: try ShippedDecisionTests.shipped())
        var noise = SplitMix64(seed: 8)
        for _ in 0..<60 {
            h.sample("market/brent", 80 + noise.gaussian() * 0.05)
            h.sample("r1/cdu/cdu1/FI-101", 600 + noise.gaussian())
            h.sample("r1/cdu/cdu1/TI-101", 360 + noise.gaussian() * 0.3)
        }
        _ = h.coordinator.request(module: .analysis, scope: nil, by: "test", params: nil)
        let invocation = try #require(h.invocations("analysis").first)
        let id = invocation["invocation_id"] as? String ?? ""
        let reply = #"{"invocation_id":"\#(id)","status":"ok","output":{"instruments":{"market/brent":{"move_percent":-7.5}}},"metrics":{"benefit":1.5}}"#
        h.coordinator.handle(topic: "apos/result/analysis", payload: Array(reply.utf8))
        let optimisation = try #require(h.invocations("optimization").first)
        let params = try #require(optimisation["params"] as? [String: Any])
        #expect(params["scope"] as? String == "r1/cdu/cdu1")
        #expect(((params["parent"] as? [String: Any])?["evidence"] as? [String: Any])?["move_percent"] != nil)
    }

    @Test func `chains stop at max_chain_depth`() throws {
        var config = try ShippedDecisionTests.shipped()
        // A loop: an optimisation's benefit asks for another optimisation of the same unit.
        var loop = TriggerRule(name: "loop", kind: .chained, module: .optimization)
        var chain = ChainRule(after: .optimization, when: .benefit)
        chain.minBenefit = 0
        chain.units = ["r1/cdu/cdu1", "r1/fcc/fcc1"]
        loop.chain = chain
        config.triggers.append(loop)
        config.modules[.optimization]?.cooldown = .zero
        config.modules[.optimization]?.maxInFlight = 10
        let h = DecisionHarness(config: config)
        var noise = SplitMix64(seed: 1)
        for _ in 0..<60 { for tag in ["r1/cdu/cdu1/TI-101", "r1/fcc/fcc1/TI-201"] { h.sample(tag, 360 + noise.gaussian()) } }
        _ = h.coordinator.request(module: .optimization, scope: "r1/cdu/cdu1", by: "test", params: nil)
        var answered: Set<String> = []
        for _ in 0..<10 {
            for invocation in h.invocations("optimization") {
                guard let id = invocation["invocation_id"] as? String, answered.insert(id).inserted else { continue }
                h.answer(invocation, module: "optimization", benefit: 1)
            }
        }
        // The request (depth 0), the two units at depth 1, then depth 2 (less what is already
        // pending for its unit); none at depth 3.
        let depths = Set(h.invocations("optimization").map { (($0["trigger"] as? [String: Any])?["depth"] as? Int) ?? 0 })
        #expect(depths == [0, 1, 2])
        #expect(h.decisions("optimization").allSatisfy { !$0.trigger.contains("\"depth\":3") })
    }
}

/// Backfilling data gaps with the shipped files: `etl` with the interval and the tags, once per gap.
@Suite struct ShippedDataGapTests {
    /// Three CDU tags at their normal values.
    static let normal = ["r1/cdu/cdu1/TI-101": 360.0, "r1/cdu/cdu1/PI-101": 1.2, "r1/cdu/cdu1/FI-101": 600]
    static let tags = normal.keys.sorted()

    func plant(seconds: Int, tags: [String] = Self.tags, h: DecisionHarness, noise: inout SplitMix64) {
        for _ in 0..<seconds {
            for tag in tags { h.sample(tag, Self.normal[tag, default: 0] * (1 + noise.gaussian() * 0.001)) }
            h.tickPipeline()
        }
    }

    func silence(seconds: Int, h: DecisionHarness) {
        for _ in 0..<(seconds / 10) {
            h.advance(seconds: 10)
            h.tickPipeline()
        }
    }

    @Test func `a tag silent for ten minutes is backfilled once, with its interval`() throws {
        let h = DecisionHarness(config: try ShippedDecisionTests.shipped())
        var noise = SplitMix64(seed: 2)
        self.plant(seconds: 60, h: h, noise: &noise)
        let before = h.time
        self.silence(seconds: 600, h: h)
        self.plant(seconds: 30, tags: ["r1/cdu/cdu1/TI-101"], h: h, noise: &noise)
        self.silence(seconds: 30, h: h)
        let invocations = h.invocations("etl")
        #expect(invocations.count == 1)
        let params = try #require(invocations.first?["params"] as? [String: Any])
        let gap = try #require(params["gap"] as? [String: Any])
        #expect(gap["cause"] as? String == "tag_gap")
        #expect(gap["tags"] as? [String] == ["r1/cdu/cdu1/TI-101"])
        let from = try #require(gap["from"] as? Int64)
        #expect(from <= before && from > before - 2000)
        #expect(((gap["seconds"] as? Double) ?? 0) >= 600)
    }

    @Test func `a broker outage and the gaps of its tags are one backfill`() throws {
        let h = DecisionHarness(config: try ShippedDecisionTests.shipped())
        var noise = SplitMix64(seed: 4)
        h.pipeline.brokerConnection(connected: true, at: h.time)
        self.plant(seconds: 60, h: h, noise: &noise)
        let lost = h.time
        h.pipeline.brokerConnection(connected: false, at: lost)
        self.silence(seconds: 900, h: h)
        h.pipeline.brokerConnection(connected: true, at: h.time)
        self.plant(seconds: 5, h: h, noise: &noise)
        self.silence(seconds: 60, h: h)
        let invocations = h.invocations("etl")
        #expect(invocations.count == 1)
        let gap = try #require((invocations.first?["params"] as? [String: Any])?["gap"] as? [String: Any])
        #expect(gap["cause"] as? String == "broker_outage")
        #expect(Set(gap["tags"] as? [String] ?? []) == Set(Self.tags))
        // The same outage reported again is not backfilled twice.
        h.pipeline.brokerOutage(from: lost, to: lost + 900_000)
        self.silence(seconds: 60, h: h)
        #expect(h.invocations("etl").count == 1)
    }

    @Test func `a gap shorter than min_gap is not backfilled`() throws {
        let h = DecisionHarness(config: try ShippedDecisionTests.shipped())
        var noise = SplitMix64(seed: 6)
        self.plant(seconds: 60, h: h, noise: &noise)
        self.silence(seconds: 120, h: h)
        self.plant(seconds: 30, h: h, noise: &noise)
        self.silence(seconds: 30, h: h)
        #expect(h.invocations("etl").isEmpty)
    }
}

@Suite struct DataGapCollectorTests {
    @Test func `an outage and its 10,000 tags' gaps settle into one gap, handed over once`() {
        var gaps = DataGapCollector(minimum: 300_000, settle: 10_000)
        let lost: Int64 = 1_000_000
        let back: Int64 = 2_000_000
        gaps.outage(from: lost, to: back, tags: ["u/A", "u/B"], now: back)
        for index in 0..<10_000 {
            gaps.tagSample("u/T\(index)", previous: lost - Int64(index % 1000), time: back + Int64(index % 5000), now: back + Int64(index / 2))
        }
        #expect(gaps.settled(now: back + 10_000).isEmpty)  // still joined by late tags
        let settled = gaps.settled(now: back + 20_000)
        #expect(settled.count == 1)
        let gap = settled[0]
        #expect(gap.cause == .brokerOutage)
        #expect(gap.tags.count == 10_002)
        #expect(gap.from == lost - 999 && gap.to == back + 4999)
        // Late reports inside the interval, or the outage again, are not handed over a second time.
        gaps.tagSample("u/T1", previous: lost, time: back, now: back + 30_000)
        gaps.outage(from: lost, to: back, tags: ["u/A"], now: back + 30_000)
        #expect(gaps.settled(now: back + 60_000).isEmpty)
        // A tag's later gap is a new one.
        gaps.tagSample("u/T1", previous: back + 400_000, time: back + 800_000, now: back + 800_000)
        let later = gaps.settled(now: back + 900_000)
        #expect(later.map(\.tags) == [["u/T1"]])
        #expect(later.first?.cause == .tagGap)
        // Hostile times never trap: a gap from the far past to the far future is just long.
        gaps.tagSample("u/X", previous: .min, time: .max, now: back + 1_000_000)
        #expect(gaps.settled(now: back + 2_000_000).count == 1)
    }
}
