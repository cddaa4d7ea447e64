import Foundation
import Testing

@testable import DangTools
@testable import OrchestratorCore

@Suite struct BenchToolTests {
    @Test(arguments: [0.0, 100.0, 99.9995, -3.25, 160, 123_456.789])
    func `the load generator's payload is a sample the parser reads back (docs/mqtt-contract.md)`(value: Double) throws {
        var buffer = [UInt8](repeating: 0, count: 64)
        let length = LoadGenerator.format(ts: 1_790_000_123_000, value: value, into: &buffer)
        let parsed = buffer[..<length].withUnsafeBytes { SamplePayloadParser.parse($0) }
        guard case .success(.single(let ts, let v, let quality)) = parsed else {
            Issue.record("not parsed: \(String(decoding: buffer[..<length], as: UTF8.self))")
            return
        }
        #expect(ts == 1_790_000_123_000)
        #expect(abs(v - value) <= 0.0005 + 1e-9)
        #expect(quality == .good)
    }

    @Test func `breach times are found again from the alert's tag and timestamp`() {
        #expect(LoadGenerator.tagNumber("b1/bench/u12/T123") == 123)
        #expect(LoadGenerator.tagNumber("b1/bench/u0/T0") == 0)
        #expect(LoadGenerator.tagNumber("r1/cdu/cdu1/TI-101") == nil)
        #expect(LoadGenerator.topic(57) == "plant/" + LoadGenerator.tagName(57))
    }

    /// The live-path case times samples going through every detector, not refusals (its clock once
    /// stood behind the payloads' timestamps, so every sample was refused as stamped in the future).
    @Test func `the detector benchmark's live path processes its samples`() throws {
        let rows = DetectorBenchmark.run(samples: 20_000, tags: 100, repetitions: 1)
        let live = try #require(rows.last)
        #expect(live.name.hasPrefix("whole live path"))
        #expect(live.refused == 0)
        #expect(rows.allSatisfy { $0.refused == 0 })
    }
}
