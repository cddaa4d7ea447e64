import Foundation
import Testing

@testable import OrchestratorCore

@Suite struct BenchToolTests {
    @Test(arguments: [0.0, 100.0, 99.9995, -3.25, 160, 123_456.789])
    func `the load generator's payload is a SPEC §3 sample the parser reads back`(value: Double) throws {
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

    @Test func `the topic cache finds every topic by its bytes, through growth, and never confuses two`() {
        var slots = TopicSlots()
        // Topics that share long prefixes and differ only near the end, one a prefix of another
        // (".../cdu1/T1" is among the generated ones), and the empty topic.
        let topics = ["", "plant/r1/cdu/cdu1/T1x"] + (0..<5_000).map { "plant/r1/cdu/cdu\($0 % 7)/T\($0)" }
        for (index, topic) in topics.enumerated() {
            let bytes = Array(topic.utf8)
            bytes.withUnsafeBytes { slots.insert($0, hash: TopicSlots.hash($0), slot: Int32(index)) }
            // Inserting again changes nothing.
            bytes.withUnsafeBytes { slots.insert($0, hash: TopicSlots.hash($0), slot: -5) }
        }
        for (index, topic) in topics.enumerated() {
            let found = Array(topic.utf8).withUnsafeBytes { slots.find($0, hash: TopicSlots.hash($0)) }
            #expect(found?.slot == Int32(index), "\(topic)")
            #expect(found.map { slots.topic($0.entry) } == topic)
        }
        for missing in ["plant/r1/cdu/cdu1/T", "plant/r1/cdu/cdu0/T5001", "plant/r1/cdu/cdu1/T1y"] {
            #expect(Array(missing.utf8).withUnsafeBytes { slots.find($0, hash: TopicSlots.hash($0)) } == nil)
        }
        // Same hash, other bytes: a collision is told apart by the bytes.
        let known = Array("plant/r1/cdu/cdu1/T1".utf8)
        let hash = known.withUnsafeBytes { TopicSlots.hash($0) }
        #expect(Array("plant/r1/cdu/cdu1/T2".utf8).withUnsafeBytes { slots.find($0, hash: hash) } == nil)
    }
}
