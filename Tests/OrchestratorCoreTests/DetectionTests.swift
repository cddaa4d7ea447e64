import Testing

@testable import DangTools
@testable import OrchestratorCore

@Suite struct EWMAStatisticsTests {
    @Test func `mean and variance converge to the stream's`() {
        var stats = EWMAStatistics(alpha: 0.01)
        var random = SplitMix64(seed: 7)
        for _ in 0..<20_000 { stats.update(100 + 2 * random.gaussian()) }
        #expect(abs(stats.mean - 100) < 0.5)
        #expect(abs(stats.standardDeviation - 2) < 0.3)
    }

    @Test func `one absurd value cannot poison the statistics for good`() {
        var stats = EWMAStatistics(alpha: 0.05)
        for x in [1.0, 2, 1, 2, 1e200, 1, 2] { stats.update(x) }
        #expect(stats.variance.isFinite && stats.mean.isFinite)
        #expect(stats.mean < 10)
    }

    @Test func `the sigma floor keeps a constant stream from dividing by zero`() {
        var stats = EWMAStatistics(alpha: 0.05)
        for _ in 0..<100 { stats.update(350) }
        #expect(stats.zScore(350.35, floorFraction: 0.001) == 1.0000000000000324 || abs(stats.zScore(350.35, floorFraction: 0.001) - 1) < 1e-9)
    }
}

@Suite struct RobustWindowTests {
    @Test(arguments: [3, 7, 256])
    func `holds exactly the last values, sorted, with ties evicted by age`(capacity: Int) {
        var window = RobustWindow(capacity: capacity)
        var random = SplitMix64(seed: UInt64(capacity))
        var stream: [Double] = []
        for step in 0..<(capacity * 6) {
            // Few distinct values, so ties are common (a quantised sensor); now and then a long run.
            let value = step % 97 < 20 ? 5 : (random.gaussian() * 3).rounded()
            stream.append(value)
            window.append(value)
            let expected = stream.suffix(capacity).sorted()
            #expect(window.values == expected, "after \(step + 1) values")
            #expect(window.median == (expected.count % 2 == 1
                ? expected[expected.count / 2] : (expected[expected.count / 2 - 1] + expected[expected.count / 2]) / 2))
        }
        #expect(window.isFull && window.count == capacity)
    }

    /// Values are held as `Float` offsets from an origin that follows the median: the quantiles the
    /// detector reads stay those of the `Double`s to a small fraction of the spread, for a level
    /// far from zero, a step of twelve orders of magnitude and a counter that climbs for ever.
    @Test(arguments: ["offset", "step", "counter"])
    func `quantiles keep their precision far from the first value`(stream: String) {
        var window = RobustWindow(capacity: 256)
        var random = SplitMix64(seed: 7)
        var held: [Double] = []
        for step in 0..<5_000 {
            let noise = random.gaussian() * 1e-3
            let value = switch stream {
            case "offset": 101_325 + noise
            case "step": (step < 1_000 ? 0 : 1e12) + noise
            default: 1e9 + Double(step) * 0.01 + noise
            }
            held.append(value)
            window.append(value)
            // A step of 15 orders of magnitude over the noise: exact again within two spans.
            guard step >= (stream == "step" ? 1_000 + 2 * 256 + 256 : 1_500), step % 97 == 0 else { continue }
            // The reference in offsets from one held value (exact differences of nearby
            // `Double`s): interpolating between values near 1e12 would itself round to 1e-4.
            let base = held[step - 128]
            let exact = held.suffix(256).sorted().map { $0 - base }
            let quantile = { (p: Double) -> Double in
                let position = p * 255
                let low = Int(position)
                return exact[low] + (exact[min(low + 1, 255)] - exact[low]) * (position - Double(low))
            }
            let iqr = quantile(0.75) - quantile(0.25)
            let spreads = window.spreads((0.25, 0.05, 0.01))
            #expect(abs((window.median - base) - (exact[127] + exact[128]) / 2) <= 1e-3 * iqr + base.ulp, "median at \(step)")
            #expect(abs(spreads.0 - iqr) <= 1e-3 * iqr, "IQR at \(step): \(spreads.0) against \(iqr)")
            #expect(abs(spreads.2 - (quantile(0.99) - quantile(0.01))) <= 1e-3 * iqr)
        }
    }

    @Test func `a value beyond Float's range is held at its largest, never as infinity`() {
        var window = RobustWindow(capacity: 8)
        for value in [0.0, 1, 2, 1e300, -1e300, 3] { window.append(value) }
        #expect(window.values.allSatisfy { $0.isFinite })
        #expect(window.spreads((0.25, 0.05, 0.01)).2.isFinite)
        #expect(window.median.isFinite)
    }
}

@Suite struct NGramSetTests {
    /// Inserts the same random members into an `NGramSet` and a `Set`: every answer agrees, the
    /// set turns into a table exactly when the list would outgrow it, and nothing is lost on the way.
    @Test(arguments: [(bound: 4_672, draws: 40), (bound: 4_672, draws: 3_000), (bound: 69_904, draws: 20_000), (bound: 70, draws: 500)])
    func `agrees with a set, sparse and dense`(bound: Int, draws: Int) {
        var grams = NGramSet(bound: bound)
        var reference = Set<Int>()
        var random = SplitMix64(seed: UInt64(bound &* 31 &+ draws))
        let words = (bound + 63) / 64
        for _ in 0..<draws {
            // Skewed toward small members, as real n-gram codes are (a few patterns recur).
            let member = Int(random.next() % UInt64(random.next() % 2 == 0 ? min(bound, 97) : bound))
            #expect(grams.insert(member) == reference.insert(member).inserted)
            #expect(grams.isDense == (reference.count > 2 * words))
        }
        #expect(grams.count == reference.count)
        for member in 0..<bound where member % 7 == 0 || member < 200 { #expect(grams.contains(member) == reference.contains(member)) }
        #expect(grams.storageBytes <= max(words * 8, 2 * words * 4 + 64))
    }

    @Test func `an empty set holds no storage`() {
        let grams = NGramSet(bound: 4_672)
        #expect(grams.storageBytes == 0)
        #expect(grams.count == 0)
        #expect(!grams.contains(0))
    }
}

@Suite struct TagDetectorTests {
    let settings: DetectionSettings = {
        var settings = DetectionSettings()
        settings.trendEnabled = false
        return settings
    }()

    /// Feeds values one second apart and returns every change.
    func run(_ detector: inout TagDetector, _ values: [Double], settings: DetectionSettings? = nil, start: Int = 0) -> [ConditionChange] {
        var all: [ConditionChange] = []
        var changes: [ConditionChange] = []
        var scratch: [Double] = []
        for (i, value) in values.enumerated() {
            changes.removeAll()
            detector.ingest(value, time: Int64(start + i) * 1000, quality: .good, settings: settings ?? self.settings, scratch: &scratch, into: &changes)
            all += changes
        }
        return all
    }

    func noisy(_ level: Double, count: Int, seed: UInt64) -> [Double] {
        var random = SplitMix64(seed: seed)
        return (0..<count).map { _ in level + 0.2 * random.gaussian() }
    }

    func detector(_ limits: TagInfo.Limits = .init()) -> TagDetector {
        TagDetector(settings: self.settings, info: TagInfo(limits: limits), isMarket: false)
    }

    @Test func `a step raises one anomaly and clears it once`() {
        var detector = self.detector()
        let changes = run(&detector, noisy(350, count: 200, seed: 1) + noisy(365, count: 400, seed: 2))
        #expect(changes.map(\.condition) == [.anomaly, .anomaly])
        #expect(changes.map(\.raised) == [true, false])
        #expect(changes[0].value > 360)
    }

    @Test func `no anomaly is raised during warm-up`() {
        var detector = self.detector()
        let values = [350.0] + Array(repeating: 500.0, count: self.settings.warmupSamples - 1)
        #expect(run(&detector, values).isEmpty)
    }

    @Test func `noise alone raises nothing`() {
        var detector = self.detector()
        #expect(run(&detector, noisy(350, count: 50_000, seed: 3)).isEmpty)
    }

    @Test func `a value dithering around a limit raises once and clears once, thanks to the deadband`() {
        var settings = self.settings
        settings.warmupSamples = 1_000_000
        var detector = TagDetector(settings: settings, info: TagInfo(limits: .init(hi: 372, deadband: 1)), isMarket: false)
        let dither = (0..<100).map { 372 + ($0 % 2 == 0 ? 0.4 : -0.4) }
        let changes = run(&detector, [360] + dither + [370.5], settings: settings)
        #expect(changes.map(\.condition) == [.limitHigh, .limitHigh])
        #expect(changes.map(\.raised) == [true, false])
        #expect(changes[0].detail == .limit(372))
    }

    @Test func `crossing HIHI raises both HI and HIHI, and low limits work the same way`() {
        var settings = self.settings
        settings.warmupSamples = 1_000_000
        var detector = TagDetector(settings: settings, info: TagInfo(limits: .init(lolo: 0, lo: 10, hi: 90, hihi: 100, deadband: 2)), isMarket: false)
        let changes = run(&detector, [50, 105, 95, 50, 5, -1, 50], settings: settings)
        #expect(changes.map(\.condition) == [.limitHighHigh, .limitHigh, .limitHighHigh, .limitHigh, .limitLow, .limitLowLow, .limitLowLow, .limitLow])
        #expect(changes.map(\.raised) == [true, true, false, false, true, true, false, false])
    }
}

@Suite struct AlarmLatchTests {
    @Test func `on and off delays need consecutive evaluations`() {
        var latch = AlarmLatch()
        let policy = AlertPolicy(onDelay: 3, offDelay: 2)
        let raises = [true, true, false, true, true, true, true]
        let results = raises.enumerated().map { latch.update(raise: $1, clear: !$1, time: Int64($0), policy: policy) }
        #expect(results == [nil, nil, nil, nil, nil, true, nil])
        #expect(latch.update(raise: false, clear: true, time: 10, policy: policy) == nil)
        #expect(latch.update(raise: true, clear: false, time: 11, policy: policy) == nil)
        #expect(latch.update(raise: false, clear: true, time: 12, policy: policy) == nil)
        #expect(latch.update(raise: false, clear: true, time: 13, policy: policy) == false)
    }

    @Test func `the cooldown holds back a new episode`() {
        var latch = AlarmLatch()
        let policy = AlertPolicy(cooldownMilliseconds: 1000)
        #expect(latch.update(raise: true, clear: false, time: 0, policy: policy) == true)
        #expect(latch.update(raise: false, clear: true, time: 100, policy: policy) == false)
        #expect(latch.update(raise: true, clear: false, time: 500, policy: policy) == nil)
        #expect(latch.update(raise: true, clear: false, time: 1100, policy: policy) == true)
    }
}

@Suite struct AlarmLatchesTests {
    @Test func `every condition has a bit`() {
        #expect(AlertCondition.allCases.count <= 16)
        #expect(AlertCondition.allCases.allSatisfy { Int($0.rawValue) < 16 })
    }

    /// The sparse latches answer exactly as 16 plain latches do, whatever the order of conditions,
    /// the delays, the cooldown, and times that go back (two clocks feed `dataQuality`).
    @Test(arguments: [(1, 1, 0), (1, 1, 5), (2, 3, 0), (3, 2, 7)])
    func `behave exactly as one latch per condition`(onDelay: Int, offDelay: Int, cooldown: Int) {
        let policy = AlertPolicy(onDelay: onDelay, offDelay: offDelay, cooldownMilliseconds: Int64(cooldown))
        var sparse = AlarmLatches()
        var plain = [AlarmLatch](repeating: AlarmLatch(), count: 16)
        var random = SplitMix64(seed: UInt64(onDelay * 100 + offDelay * 10 + cooldown))
        var time: Int64 = 0
        for _ in 0..<20_000 {
            // A few conditions are busy, the rest rarely asked to raise.
            let index = random.next() % 4 == 0 ? Int(random.next() % 16) : Int(random.next() % 3)
            let raise = random.next() % 3 == 0
            let clear = random.next() % 2 == 0
            time += Int64(random.next() % 5) - (random.next() % 10 == 0 ? 6 : 0)
            let expected = plain[index].update(raise: raise, clear: clear, time: time, policy: policy)
            let answer = sparse.update(index, raise: raise, clear: clear, time: time, policy: policy)
            let same = answer == expected && (0..<16).allSatisfy { sparse.isActive($0) == plain[$0].active }
            #expect(same, "condition \(index) at \(time): \(String(describing: answer)) for \(String(describing: expected))")
            if !same { return }
        }
    }
}

@Suite struct AlertBookTests {
    @Test func `raise and clear share one alert id and the raise time`() {
        var book = AlertBook()
        let raise = ConditionChange(condition: .anomaly, raised: true, value: 380, score: 0.999, detail: .deviation(sigmas: 8))
        let clear = ConditionChange(condition: .anomaly, raised: false, value: 351, score: 0.1, detail: .deviation(sigmas: 1))
        let info = TagInfo(unit: "degC", criticality: .medium)
        let raised = book.event(for: raise, slot: 0, tag: "r1/cdu/cdu1/TI-101", info: info, topic: "plant/r1/cdu/cdu1/TI-101", sampleTime: 10, now: 11)!
        #expect(book.openCount == 1)
        let cleared = book.event(for: clear, slot: 0, tag: "r1/cdu/cdu1/TI-101", info: info, topic: "plant/r1/cdu/cdu1/TI-101", sampleTime: 20, now: 21)!
        #expect(raised.alertID == cleared.alertID)
        #expect(raised.state == .raised && cleared.state == .cleared)
        #expect(cleared.raisedAt == 11 && cleared.clearedAt == 21 && cleared.timestamp == 20)
        #expect(raised.severity == .warning && raised.kind == .anomaly)
        #expect(raised.score == 0.999)
        #expect(raised.message == "r1/cdu/cdu1/TI-101 = 380 degC deviates 8σ from its recent behaviour")
        #expect(book.openCount == 0)
    }

    @Test func `severity follows the condition and the tag's criticality`() {
        #expect(AlertBook.severity(.limitHighHigh, criticality: .low) == .critical)
        #expect(AlertBook.severity(.limitLow, criticality: .high) == .warning)
        #expect(AlertBook.severity(.anomaly, criticality: .high) == .critical)
        #expect(AlertBook.severity(.anomaly, criticality: .medium) == .warning)
        #expect(AlertBook.severity(.anomaly, criticality: .low) == .info)
        #expect(AlertBook.severity(.trendUp, criticality: .high) == .warning)
        #expect(AlertBook.severity(.dataQuality, criticality: .medium) == .info)
    }

    @Test func `a clear without an open episode emits nothing`() {
        var book = AlertBook()
        let clear = ConditionChange(condition: .limitHigh, raised: false, value: 1, score: 1, detail: .limit(2))
        #expect(book.event(for: clear, slot: 3, tag: "t", info: nil, topic: "t", sampleTime: 0, now: 0) == nil)
    }
}
