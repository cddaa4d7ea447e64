import Testing

@testable import DangTools
@testable import OrchestratorCore

/// The two-sided tabular CUSUM on its own, fed standardised values (z-scores). Its defaults are the
/// textbook k = 0.5, h = 5 (Montgomery: in-control ARL ≈ 465, ARL for a 1σ shift ≈ 10.4).
@Suite struct CUSUMTests {
    /// Samples fed from `z` until the score first reaches 1; nil if it does not within `limit`.
    static func runLength(_ cusum: inout CUSUM, limit: Int, _ z: () -> Double) -> Int? {
        for n in 1...limit where cusum.update(z()) >= 1 { return n }
        return nil
    }

    @Test func `a constant one-sigma excess adds z − k per sample and signals on the tenth, up or down`() {
        var up = CUSUM()
        var down = CUSUM()
        var upScores: [Double] = []
        var downScores: [Double] = []
        for _ in 0..<10 {
            upScores.append(up.update(1))
            downScores.append(down.update(-1))
        }
        // S⁺ grows by z − k = 0.5 per sample; the score is S / h.
        #expect(upScores == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
        #expect(downScores == upScores)
        #expect(up.upper == 5 && up.lower == 0)
        #expect(down.lower == 5 && down.upper == 0)
    }

    @Test func `values within the allowance never accumulate`() {
        var cusum = CUSUM()
        for z in [0.5, -0.5, 0.25, 0, -0.5, 0.5, 0.49] {
            let score = cusum.update(z)
            #expect(score == 0)
        }
        #expect(cusum == CUSUM())
    }

    @Test func `each side drains with values on the other side of the allowance`() {
        var cusum = CUSUM()
        _ = cusum.update(-2.5)  // S⁻ = 2
        _ = cusum.update(-2.5)  // S⁻ = 4
        #expect(cusum.lower == 4)
        let score = cusum.update(1)  // S⁻ = 4 − 1 − 0.5
        #expect(cusum.lower == 2.5)
        #expect(cusum.upper == 0.5)
        #expect(score == 0.5)
        _ = cusum.update(3)  // S⁻ floors at 0
        #expect(cusum.lower == 0)
        #expect(cusum.upper == 3)
    }

    @Test func `k and h are honoured: a bigger allowance needs a bigger shift, a bigger interval more samples`() {
        var wide = CUSUM(k: 1, h: 5)
        for _ in 0..<100 { _ = wide.update(1) }
        #expect(wide.upper == 0)
        var tall = CUSUM(k: 0.5, h: 10)
        let run = Self.runLength(&tall, limit: 100) { 1 }
        #expect(run == 20)
    }

    @Test func `the CUSUM does not reset itself: the sums keep growing past a signal until reset is called`() {
        var cusum = CUSUM()
        for _ in 0..<10 { _ = cusum.update(1) }
        let past = cusum.update(1)
        #expect(past == 1.1)
        cusum.reset()
        #expect(cusum == CUSUM())
        let fresh = cusum.update(1)
        #expect(fresh == 0.1)
        // After a reset a new signal takes a full run again.
        cusum.reset()
        let run = Self.runLength(&cusum, limit: 100) { -1 }
        #expect(run == 10)
    }

    @Test func `in-control noise rarely signals: the average run length is near the textbook 465`() {
        var random = SplitMix64(seed: 7)
        var total = 0
        for _ in 0..<100 {
            var cusum = CUSUM()
            let run = Self.runLength(&cusum, limit: 100_000) { random.gaussian() }
            total += run ?? 100_000
        }
        let average = Double(total) / 100
        #expect(average > 300 && average < 700, "average in-control run length \(average)")
    }

    @Test func `with a wider interval, 5,000 in-control samples raise no signal`() {
        var random = SplitMix64(seed: 7)
        var cusum = CUSUM(k: 0.5, h: 10)
        var highest = 0.0
        for _ in 0..<5_000 { highest = max(highest, cusum.update(random.gaussian())) }
        #expect(highest < 1, "highest score \(highest)")
    }

    @Test(arguments: [(1.0, 40), (-1.0, 40), (2.0, 15), (-2.0, 15), (3.0, 10), (-3.0, 10)])
    func `a shift after 200 quiet samples is signalled within a bounded run, on its own side`(shift: Double, bound: Int) throws {
        var random = SplitMix64(seed: 7)
        var cusum = CUSUM()
        var quietSignals = 0
        for _ in 0..<200 where cusum.update(random.gaussian()) >= 1 { quietSignals += 1 }
        #expect(quietSignals == 0)
        let signalled = Self.runLength(&cusum, limit: 1_000) { random.gaussian() + shift }
        let run = try #require(signalled)
        #expect(run <= bound, "run length \(run)")
        if shift > 0 {
            #expect(cusum.upper >= cusum.h && cusum.lower < cusum.h)
        } else {
            #expect(cusum.lower >= cusum.h && cusum.upper < cusum.h)
        }
    }

    @Test(arguments: [1.0, -1.0])
    func `over many runs a one-sigma shift is signalled after about ten samples`(shift: Double) {
        var random = SplitMix64(seed: 7)
        var total = 0
        for _ in 0..<500 {
            var cusum = CUSUM()
            total += Self.runLength(&cusum, limit: 1_000) { random.gaussian() + shift } ?? 1_000
        }
        let average = Double(total) / 500
        #expect(average > 8 && average < 13, "average run length \(average)")
    }

    // Non-finite input is not filtered here (the anomaly detector clamps z to ±10 before it): these
    // pin what the arithmetic does with it.

    @Test func `an infinite value saturates its side until reset`() {
        var cusum = CUSUM()
        let first = cusum.update(.infinity)
        #expect(first == .infinity)
        #expect(cusum.lower == 0)
        let next = cusum.update(-3)  // S⁺: ∞ − 3.5 is still ∞
        #expect(next == .infinity)
        #expect(cusum.lower == 2.5)
        cusum.reset()
        let down = cusum.update(-.infinity)
        #expect(down == .infinity)
        #expect(cusum.lower == .infinity && cusum.upper == 0)
    }

    @Test func `a NaN value clears both sums (max(0, NaN) is 0)`() {
        var cusum = CUSUM()
        for _ in 0..<8 { _ = cusum.update(1) }
        #expect(cusum.upper == 4)
        let score = cusum.update(.nan)
        #expect(score == 0)
        #expect(cusum.upper == 0 && cusum.lower == 0)
        #expect(!score.isNaN)
    }
}
