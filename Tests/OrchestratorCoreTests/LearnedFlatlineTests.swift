import Foundation
import Testing

@testable import DangTools
@testable import OrchestratorCore

/// The learned flatline: every tag without a topic-map `flatline` is judged against its own habit
/// of repeating values (docs/detection.md, "Frozen sensors").
@Suite struct LearnedFlatlineTests {
    /// Feeds `values` one a second to tag `tag`; returns the sample index of each flatline raise.
    func flatlines(_ values: [Double], tag: String = "u/T", settings: DetectionSettings = DetectionSettings()) -> [Int] {
        var engine = DetectionEngine(settings: settings, topicMap: TopicMap())
        guard let slot = engine.slot(for: tag) else { return [] }
        var raised: [Int] = []
        var conditions: [ConditionEvent] = []
        for (index, value) in values.enumerated() {
            let time = 1_700_000_000_000 + Int64(index) * 1000
            _ = engine.ingest(slot: slot, value: value, quality: .good, sampleTime: time, topic: tag, now: time, into: &conditions)
            for event in conditions where event.change.condition == .flatline && event.change.raised { raised.append(index) }
            conditions.removeAll()
        }
        return raised
    }

    func noise(_ count: Int, seed: UInt64, around mean: Double = 50, step: Double? = nil) -> [Double] {
        var random = SplitMix64(seed: seed)
        return (0..<count).map { _ in
            let value = mean + random.gaussian()
            return step.map { ($0 * (value / $0).rounded()) } ?? value
        }
    }

    @Test func `a live analog transmitter stuck at its last reading is flagged within ten samples`() {
        var values = self.noise(300, seed: 1)
        let stuck = values.last!
        values += [Double](repeating: stuck, count: 60)
        #expect(self.flatlines(values) == [308])  // the run began at 299: ten equal readings
    }

    @Test func `a quantised tag repeating its steps is left alone, and flagged at four times its longest run`() {
        // Values quantised to 1.0 around 50 (σ 1): runs of equal readings are its habit.
        let quantised = self.noise(2000, seed: 2, step: 1)
        #expect(self.flatlines(quantised).isEmpty)
        var longest = 1
        var run = 1
        for index in 1..<quantised.count {
            run = quantised[index] == quantised[index - 1] ? run + 1 : 1
            longest = max(longest, run)
        }
        let frozen = quantised + [Double](repeating: quantised.last!, count: 4 * longest + 10)
        let raised = self.flatlines(frozen)
        #expect(raised.count == 1)
        #expect((raised.first ?? 0) - quantised.count < 4 * longest)
    }

    @Test(arguments: [
        ("a setpoint that never changes", [Double](repeating: 7, count: 1000)),
        ("a valve moved only a few times", (0..<1000).map { Double($0 / 100) }),
    ])
    func `tags that rarely change are not flagged`(_ name: String, values: [Double]) {
        #expect(self.flatlines(values).isEmpty, "\(name)")
    }

    @Test func `market quotes that do not trade are not flatlines`() {
        var values = self.noise(300, seed: 3, around: 80)
        values += [Double](repeating: values.last!, count: 200)
        #expect(self.flatlines(values, tag: "market/brent").isEmpty)
    }

    @Test func `detection.flatline.learn false turns it off`() {
        var settings = DetectionSettings()
        settings.flatlineLearn = false
        var values = self.noise(300, seed: 4)
        values += [Double](repeating: values.last!, count: 60)
        #expect(self.flatlines(values, settings: settings).isEmpty)
    }

    @Test func `a topic-map flatline replaces the learned one`() {
        var map = TopicMap()
        var info = TagInfo()
        info.flatline = TagInfo.Flatline(tolerance: 0, samples: 40)
        map.tags["u/T"] = info
        var engine = DetectionEngine(settings: DetectionSettings(), topicMap: map)
        let slot = engine.slot(for: "u/T")!
        var values = self.noise(300, seed: 5)
        values += [Double](repeating: values.last!, count: 60)
        var raisedAt: [Int] = []
        var conditions: [ConditionEvent] = []
        for (index, value) in values.enumerated() {
            let time = Int64(index) * 1000
            _ = engine.ingest(slot: slot, value: value, quality: .good, sampleTime: time, topic: "u/T", now: time, into: &conditions)
            if conditions.contains(where: { $0.change.condition == .flatline && $0.change.raised }) { raisedAt.append(index) }
            conditions.removeAll()
        }
        #expect(raisedAt == [338])  // 40 equal samples, as configured
    }
}
