import Testing

@testable import OrchestratorCore

@Suite struct EWMAStatisticsTests {
    @Test func `mean and variance converge to the stream's`() {
        var stats = EWMAStatistics(alpha: 0.01)
        var random = SplitMix64(seed: 7)
        for _ in 0..<20_000 { stats.update(100 + 2 * random.gaussian()) }
        #expect(abs(stats.mean - 100) < 0.5)
        #expect(abs(stats.standardDeviation - 2) < 0.3)
    }

    @Test func `the sigma floor keeps a constant stream from dividing by zero`() {
        var stats = EWMAStatistics(alpha: 0.05)
        for _ in 0..<100 { stats.update(350) }
        #expect(stats.zScore(350.35, floorFraction: 0.001) == 1.0000000000000324 || abs(stats.zScore(350.35, floorFraction: 0.001) - 1) < 1e-9)
    }
}

@Suite struct TagDetectorTests {
    let settings = DetectionSettings()

    /// Feeds values and returns every change.
    func run(_ detector: inout TagDetector, _ values: [Double]) -> [ConditionChange] {
        var all: [ConditionChange] = []
        var changes: [ConditionChange] = []
        for value in values {
            changes.removeAll()
            detector.ingest(value, settings: self.settings, into: &changes)
            all += changes
        }
        return all
    }

    func noisy(_ level: Double, count: Int, seed: UInt64) -> [Double] {
        var random = SplitMix64(seed: seed)
        return (0..<count).map { _ in level + 0.2 * random.gaussian() }
    }

    @Test func `a step raises one anomaly and clears it once`() {
        var detector = TagDetector(settings: self.settings, limits: .init())
        let changes = run(&detector, noisy(350, count: 200, seed: 1) + noisy(365, count: 400, seed: 2))
        #expect(changes.map(\.condition) == [.anomaly, .anomaly])
        #expect(changes.map(\.raised) == [true, false])
        #expect(changes[0].value > 360)
        #expect(changes[0].zScore >= self.settings.zRaise)
    }

    @Test func `no anomaly is raised during warm-up`() {
        var detector = TagDetector(settings: self.settings, limits: .init())
        let values = [350.0] + Array(repeating: 500.0, count: self.settings.warmupSamples - 1)
        #expect(run(&detector, values).isEmpty)
    }

    @Test func `noise alone raises nothing`() {
        var detector = TagDetector(settings: self.settings, limits: .init())
        #expect(run(&detector, noisy(350, count: 50_000, seed: 3)).isEmpty)
    }

    @Test func `a value dithering around a limit raises once and clears once, thanks to the deadband`() {
        let limits = TagInfo.Limits(hi: 372, deadband: 1)
        var detector = TagDetector(settings: DetectionSettings(warmupSamples: 1_000_000), limits: limits)
        let dither = (0..<100).map { 372 + ($0 % 2 == 0 ? 0.4 : -0.4) }
        let changes = run(&detector, [360] + dither + [370.5])
        #expect(changes.map(\.condition) == [.limitHigh, .limitHigh])
        #expect(changes.map(\.raised) == [true, false])
        #expect(changes[0].limit == 372)
    }

    @Test func `crossing HIHI raises both HI and HIHI, and low limits work the same way`() {
        let limits = TagInfo.Limits(lolo: 0, lo: 10, hi: 90, hihi: 100, deadband: 2)
        var detector = TagDetector(settings: DetectionSettings(warmupSamples: 1_000_000), limits: limits)
        let changes = run(&detector, [50, 105, 95, 50, 5, -1, 50])
        #expect(changes.map(\.condition) == [.limitHighHigh, .limitHigh, .limitHighHigh, .limitHigh, .limitLow, .limitLowLow, .limitLowLow, .limitLow])
        #expect(changes.map(\.raised) == [true, true, false, false, true, true, false, false])
    }
}

@Suite struct AlertBookTests {
    @Test func `raise and clear share one alert id and the raise time`() {
        var book = AlertBook()
        let raise = ConditionChange(condition: .anomaly, raised: true, value: 380, zScore: 8, limit: nil)
        let clear = ConditionChange(condition: .anomaly, raised: false, value: 351, zScore: 1, limit: nil)
        let info = TagInfo(unit: "degC", criticality: .medium)
        let raised = book.event(for: raise, slot: 0, tag: "r1/cdu/cdu1/TI-101", info: info, topic: "plant/r1/cdu/cdu1/TI-101", sampleTime: 10, now: 11)!
        #expect(book.openCount == 1)
        let cleared = book.event(for: clear, slot: 0, tag: "r1/cdu/cdu1/TI-101", info: info, topic: "plant/r1/cdu/cdu1/TI-101", sampleTime: 20, now: 21)!
        #expect(raised.alertID == cleared.alertID)
        #expect(raised.state == .raised && cleared.state == .cleared)
        #expect(cleared.raisedAt == 11 && cleared.clearedAt == 21 && cleared.timestamp == 20)
        #expect(raised.severity == .warning && raised.kind == .anomaly)
        #expect(raised.score > 0.99 && raised.score <= 1)
        #expect(book.openCount == 0)
    }

    @Test func `severity follows the limit level and the tag's criticality`() {
        #expect(AlertBook.severity(.limitHighHigh, criticality: .low) == .critical)
        #expect(AlertBook.severity(.limitLow, criticality: .high) == .warning)
        #expect(AlertBook.severity(.anomaly, criticality: .high) == .critical)
        #expect(AlertBook.severity(.anomaly, criticality: .low) == .warning)
    }

    @Test func `a clear without an open episode emits nothing`() {
        var book = AlertBook()
        let clear = ConditionChange(condition: .limitHigh, raised: false, value: 1, zScore: 1, limit: 2)
        #expect(book.event(for: clear, slot: 3, tag: "t", info: nil, topic: "t", sampleTime: 0, now: 0) == nil)
    }
}
