import Testing

@testable import OrchestratorCore

/// Rate of change, flatline, staleness, data quality and market moves: each raised once, cleared once.
@Suite struct EngineeringCheckTests {
    var settings: DetectionSettings = {
        var settings = DetectionSettings()
        settings.trendEnabled = false
        settings.shiftAlerts = false
        settings.warmupSamples = 1_000_000  // keep the anomaly view out of these tests
        return settings
    }()

    /// Feeds (seconds, value, quality) samples; returns the changes in order.
    func run(_ detector: inout TagDetector, _ samples: [(Double, Double, SampleQuality)]) -> [ConditionChange] {
        var all: [ConditionChange] = []
        var changes: [ConditionChange] = []
        var scratch: [Double] = []
        for (seconds, value, quality) in samples {
            changes.removeAll()
            detector.ingest(value, time: Int64(seconds * 1000), quality: quality, settings: self.settings, scratch: &scratch, into: &changes)
            all += changes
        }
        return all
    }

    func summary(_ changes: [ConditionChange]) -> [String] {
        changes.map { "\($0.condition) \($0.raised ? "raised" : "cleared")" }
    }

    @Test func `a rate of change beyond the tag's limit raises once and clears when it slows`() {
        var info = TagInfo()
        info.maxRatePerMinute = 6  // 0.1 per second
        var detector = TagDetector(settings: self.settings, info: info, isMarket: false)
        let samples = (0..<20).map { i -> (Double, Double, SampleQuality) in
            let value = i < 5 ? 100.0 : (i < 10 ? 100 + Double(i - 4) * 2 : 110)
            return (Double(i), value, .good)
        }
        #expect(summary(run(&detector, samples)) == ["rateOfChange raised", "rateOfChange cleared"])
    }

    @Test func `a stuck value raises a flatline after N samples and clears when it moves`() {
        var info = TagInfo()
        info.flatline = .init(tolerance: 0.01, samples: 30)
        var detector = TagDetector(settings: self.settings, info: info, isMarket: false)
        var samples = (0..<10).map { (Double($0), 50 + Double($0 % 2), SampleQuality.good) }
        samples += (10..<60).map { (Double($0), 50.004, .good) }
        samples.append((60, 51, .good))
        let changes = run(&detector, samples)
        #expect(summary(changes) == ["flatline raised", "flatline cleared"])
    }

    @Test func `a stuck value raises a flatline after T seconds too`() {
        var info = TagInfo()
        info.flatline = .init(tolerance: 0, duration: .seconds(300))
        var detector = TagDetector(settings: self.settings, info: info, isMarket: false)
        let samples: [(Double, Double, SampleQuality)] = [(0, 1, .good), (100, 1, .good), (299, 1, .good), (301, 1, .good), (400, 2, .good)]
        #expect(summary(run(&detector, samples)) == ["flatline raised", "flatline cleared"])
    }

    @Test func `silence raises stale from the timer, and the next sample clears it`() {
        var info = TagInfo()
        info.expectedPeriod = .seconds(1)
        info.staleAfter = 3
        var detector = TagDetector(settings: self.settings, info: info, isMarket: false)
        _ = run(&detector, [(0, 1, .good), (1, 1, .good)])
        var changes: [ConditionChange] = []
        detector.checkStale(now: 3_500, lastReceipt: 1000, policy: self.settings.policy, into: &changes)
        #expect(changes.isEmpty)
        detector.checkStale(now: 4_500, lastReceipt: 1000, policy: self.settings.policy, into: &changes)
        detector.checkStale(now: 9_000, lastReceipt: 1000, policy: self.settings.policy, into: &changes)
        #expect(summary(changes) == ["stale raised"])
        #expect(summary(run(&detector, [(10, 1, .good)])) == ["stale cleared"])
    }

    @Test(arguments: [
        ([(0.0, 1.0, SampleQuality.good), (1, 1, .bad)], DataQualityIssue.badQuality),
        ([(0.0, 1.0, SampleQuality.good), (1, 1, .uncertain)], .uncertainQuality),
        ([(0.0, 1.0, SampleQuality.good), (1, .nan, .good)], .nonFinite),
        ([(0.0, 1.0, SampleQuality.good), (2, 1, .good), (1, 1, .good)], .outOfOrder),
        ([(0.0, 1.0, SampleQuality.good), (1, 1, .good), (1, 2, .good)], .duplicateTimestamp),
        ([(0.0, 1.0, SampleQuality.good), (1, 1, .good), (2, 1, .good), (100, 1, .good)], .gap),
    ])
    func `data-quality problems raise one alert that clears after clean samples`(samples: [(Double, Double, SampleQuality)], issue: DataQualityIssue) {
        var detector = TagDetector(settings: self.settings, info: TagInfo(), isMarket: false)
        let last = samples.map(\.0).max()!
        let clean = (1...12).map { (last + Double($0), 1.0, SampleQuality.good) }
        let changes = run(&detector, samples + clean)
        #expect(summary(changes) == ["dataQuality raised", "dataQuality cleared"])
        #expect(changes.first?.detail == .dataQuality(issue))
    }

    @Test func `a market move beyond its threshold within the window raises once`() {
        var settings = self.settings
        settings.marketMoves = [.init(window: .seconds(600), thresholdPercent: 2)]
        var detector = TagDetector(settings: settings, info: TagInfo(), isMarket: true)
        var samples = (0..<20).map { (Double($0 * 60), 80.0, SampleQuality.good) }
        samples += (20..<30).map { (Double($0 * 60), 80.0 + Double($0 - 19) * 0.4, .good) }  // +5% over 10 min
        var all: [ConditionChange] = []
        var changes: [ConditionChange] = []
        var scratch: [Double] = []
        for (seconds, value, quality) in samples {
            changes.removeAll()
            detector.ingest(value, time: Int64(seconds * 1000), quality: quality, settings: settings, scratch: &scratch, into: &changes)
            all += changes
        }
        let moves = all.filter { $0.condition == .marketMove }
        #expect(moves.map(\.raised) == [true])
        if case .marketMove(let percent, let window, _)? = moves.first?.detail {
            #expect(percent >= 2 && window == 600)
        } else {
            Issue.record("no market detail")
        }
    }
}
