import Foundation
import Logging
import Synchronization
import Testing

@testable import OrchestratorCore

/// `sharding.shards` without a broker or a database: which shard a unit, a tag or a scope is in,
/// the filters of a set of shards, the configuration, and what the pipeline lets go with a shard
/// (docs/availability.md, "Sharding").
@Suite struct ShardTests {
    static let shipped = try! TopicMap.load(
        file: ConfigurationTests.repositoryRoot.appendingPathComponent("topics/refinery.yaml").path, environment: [:])

    @Test func `a unit's shard is FNV-1a of its name: the same in every process, machine and version`() {
        // (Pinned: instances of different builds sharing a database must agree.)
        #expect(ShardMap.hash("") == 0xcbf2_9ce4_8422_2325)
        #expect(ShardMap.hash("r1/cdu/cdu1") == 0x9f93_060a_f8e2_63fb)
        let map = ShardMap(count: 5, topicMap: Self.shipped)
        #expect(map.shard(ofTag: "r1/cdu/cdu1/TI-101") == 1)
        #expect(map.shard(ofTag: "r1/fcc/fcc1/TI-201") == 0)
        // Market data, tags outside the map, and scopes of no unit: shard 0.
        #expect(map.shard(ofTag: "market/brent") == 0)
        #expect(map.shard(ofTag: "r9/x/y/TI-1") == 0)
        #expect(map.shard(ofScope: "r1/cdu/cdu1") == 1)
        #expect(map.shard(ofScope: "r1/cdu/cdu1/TI-101") == 1)
        #expect(map.shard(ofScope: "market") == 0)
        #expect(map.shard(ofScope: "all") == 0)
        #expect(map.units.flatMap { $0 }.sorted() == ["r1/cdu/cdu1", "r1/fcc/fcc1"])
        // One shard: everything is shard 0.
        #expect(ShardMap(count: 1, topicMap: Self.shipped).shard(ofTag: "r1/cdu/cdu1/TI-101") == 0)
    }

    @Test func `a shard's filters are its units' topics; shard 0 takes the topic map's wildcards`() {
        var map = Self.shipped
        map.namedTopics["legacy/cdu1/bottoms-level"] = "r1/cdu/cdu1/LI-101"
        let shards = ShardMap(count: 5, topicMap: map)
        #expect(shards.filters(for: [1]) == ["plant/r1/cdu/cdu1/+", "plant/r1/cdu/cdu1", "legacy/cdu1/bottoms-level"])
        #expect(shards.filters(for: [2, 3]) == [])
        #expect(shards.filters(for: [0, 1]) == TopicRouter(map: map).subscriptions)
        #expect(ShardMap.leaseName(0) == "active" && ShardMap.leaseName(3) == "shard/3")
        // A unit the sensor pattern cannot name (levels that do not fit) is shard 0's.
        #expect(ShardMap.unitFilter("r1/cdu", pattern: map.sensorPattern) == nil)
        #expect(ShardMap.unitFilter("r1/cdu/cdu1/extra", pattern: map.sensorPattern) == nil)
        #expect(ShardMap.unitFilter("r1/cdu/cdu1", pattern: map.sensorPattern) == "plant/r1/cdu/cdu1/+")
    }

    @Test func `sharding.shards needs ha, and 1 to 64`() throws {
        let tests = ConfigurationTests()
        #expect(try tests.load("ha:\n  enabled: true\nsharding:\n  shards: 4\n").availability.shards == 4)
        #expect(try tests.load("ha:\n  enabled: true\nsharding:\n  shards: 4\n").availability.isSharded)
        #expect(try tests.load("ha:\n  enabled: true\n").availability.isSharded == false)
        let alone = tests.issues("sharding:\n  shards: 4\n")
        #expect(alone.map { "\($0.line) \($0.key)" } == ["2 sharding.shards"])
        #expect(alone.first?.message.contains("ha.enabled") == true)
        for bad in ["0", "65", "many"] {
            #expect(tests.issues("ha:\n  enabled: true\nsharding:\n  shards: \(bad)\n").map(\.key) == ["sharding.shards"], "\(bad)")
        }
    }

    @Test func `a shard count that leaves the units together is warned about`() throws {
        let tests = ConfigurationTests()
        let map = ConfigurationTests.repositoryRoot.appendingPathComponent("topics/refinery.yaml").path
        func warnings(_ shards: Int) throws -> [ConfigIssue] {
            try tests.load("topics:\n  map: \(map)\nha:\n  enabled: true\nsharding:\n  shards: \(shards)\n").warnings.filter { $0.key == "sharding.shards" }
        }
        // The shipped map's two units: both on shard 0 with 3 shards, on 1 and 0 with 5.
        #expect(try warnings(3).first?.message.hasPrefix("the topic map's 2 units land on shard(s) 0 of 3") == true)
        #expect(try warnings(5).isEmpty)
    }

    func sharded() -> (IngestPipeline, CollectingSink) {
        var config = OrchestratorConfig.defaults(topicMap: Self.shipped)
        config.availability.enabled = true
        config.availability.shards = 5
        let sink = CollectingSink()
        return (IngestPipeline(config: config, sinks: [sink], logger: Logger(label: "test")), sink)
    }

    @Test func `the pipeline takes in its shards' tags only, and lets a lost shard's go without a word`() {
        let (pipeline, sink) = self.sharded()
        let tests = PipelineTests()
        let start: Int64 = 1_790_000_000_000
        func stream(_ tag: String, _ value: Double, from second: Int64, count: Int64 = 1) {
            for s in second..<(second + count) {
                tests.publish(pipeline, "plant/\(tag)", #"{"ts":\#(start + s * 1000),"v":\#(value + Double(s % 3) * 0.1)}"#, at: start + s * 1000)
            }
        }
        // Holding nothing: nothing is taken in.
        stream("r1/cdu/cdu1/TI-101", 358, from: 0)
        #expect(pipeline.counters.samples == 0 && pipeline.counters.otherShard == 1)
        // Shard 1 (the CDU): its tags only; the FCC's (shard 0) are dropped, not refused.
        pipeline.takeShard(1)
        stream("r1/cdu/cdu1/TI-101", 358, from: 1, count: 30)
        stream("r1/fcc/fcc1/TI-201", 525, from: 1, count: 5)
        #expect(pipeline.counters.samples == 30 && pipeline.counters.otherShard == 6 && pipeline.counters.totalRejected == 0)
        stream("r1/cdu/cdu1/TI-101", 375, from: 31)
        #expect(sink.events.withLock { $0 }.contains { $0.kind == .limit && $0.state == .raised })
        let delivered = sink.events.withLock { $0.count }
        // The shard moves away: its open episodes go with it (no clear: the new holder carries them
        // on), its samples are dropped again, and its silence is no staleness.
        let released = pipeline.releaseShard(1)
        #expect(released.episodes >= 1 && released.tags >= 9)
        stream("r1/cdu/cdu1/TI-101", 358, from: 32)
        pipeline.tick(now: start + 3_600_000)
        #expect(sink.events.withLock { $0.count } == delivered, "\(sink.events.withLock { $0.suffix(3) })")
        #expect(pipeline.counters.samples == 31)
        // Taken again: a fresh start (no open condition left over), the breach raised anew.
        pipeline.takeShard(1)
        stream("r1/cdu/cdu1/TI-101", 358, from: 100, count: 30)
        stream("r1/cdu/cdu1/TI-101", 376, from: 130)
        #expect(sink.events.withLock { $0.dropFirst(delivered) }.contains { $0.kind == .limit && $0.state == .raised })
    }
}
