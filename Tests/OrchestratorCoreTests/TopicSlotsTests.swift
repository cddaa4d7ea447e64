import Testing

@testable import OrchestratorCore

/// The ingest hot path's topic cache (``TopicSlots``): the bytes of a topic to its tag slot.
@Suite struct TopicSlotsTests {
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
