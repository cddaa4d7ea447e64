import Foundation
import OrchestratorCore
import Testing

/// Sharded scale-out (`sharding.shards`; docs/availability.md, "Sharding"): six units, three
/// instances on one broker and one database, in one process (``Orchestrator/haltAsIfKilled()``
/// stands for SIGKILL).
@Suite(.serialized) struct ShardingTests {
    static let lease: Duration = .seconds(4)
    static let shards = 3

    /// Six units, two of each shard (found by their hash, so that every instance has some), each
    /// with a temperature (HI 100) and a pressure (HI 10).
    static let units: [String] = {
        var byShard = [[String]](repeating: [], count: shards)
        for index in 0..<1000 where byShard.contains(where: { $0.count < 2 }) {
            let unit = "s1/a/u\(index)"
            let shard = Int(ShardMap.hash(unit) % UInt64(shards))
            if byShard[shard].count < 2 { byShard[shard].append(unit) }
        }
        return byShard.flatMap { $0 }
    }()

    static func map(prefix: String) -> TopicMap {
        var map = TopicMap(sensorPattern: TopicPattern("\(prefix)-in/{site}/{area}/{unit}/{tag}")!)
        for unit in Self.units {
            map.tags["\(unit)/TI"] = TagInfo(unit: "degC", criticality: .high, limits: .init(hi: 100, deadband: 1))
            map.tags["\(unit)/PI"] = TagInfo(unit: "barg", criticality: .high, limits: .init(hi: 10, deadband: 0.5))
        }
        return map
    }

    static func config(_ instance: String, prefix: String, database: String) -> OrchestratorConfig {
        var config = DecisionLoopTests.config(prefix: prefix, database: database, map: Self.map(prefix: prefix))
        config.modules[.forecasting]?.timeout = .seconds(6)
        config.availability.enabled = true
        config.availability.instanceID = instance
        config.availability.lease = Self.lease
        config.availability.shards = Self.shards
        config.mqtt.clientID = "dang-it-\(prefix)-\(instance)"
        return config
    }

    /// 30 normal samples of each unit's `tag`, then `last`.
    static func stream(_ publisher: TestPublisher, prefix: String, units: [String], tag: String, normal: Double, last: Double, start: Int64) throws {
        for unit in units {
            for i in 0..<30 {
                try publisher.publish("\(prefix)-in/\(unit)/\(tag)", #"{"ts":\#(start + Int64(i) * 1000),"v":\#(normal + Double(i % 3) * 0.1)}"#)
            }
            try publisher.publish("\(prefix)-in/\(unit)/\(tag)", #"{"ts":\#(start + 30_000),"v":\#(last)}"#)
        }
    }

    @Test func `six units on three instances: each subscribes to its own, a killed instance's units move and their alerts go on under the same ids`() async throws {
        let prefix = "it-shard-\(UUID().uuidString.prefix(6).lowercased())"
        let database = try await TestServices.freshDatabase()
        let instances = try ["a", "b", "c"].map { try Orchestrator(config: Self.config($0, prefix: prefix, database: database), logger: testLogger) }
        let (a, b, c) = (instances[0], instances[1], instances[2])
        let watch = try TestSubscriber(filters: ["\(prefix)/alert/#", "\(prefix)/cmd/#"])
        let publisher = try TestPublisher()
        try await watch.waitUntilConnected()
        try await publisher.waitUntilConnected()
        let map = ShardMap(count: Self.shards, topicMap: Self.map(prefix: prefix))
        @Sendable func alerts(_ state: String, tag: String) -> [[String: any Sendable]] {
            AvailabilityTests.messages(watch) { topic, json in
                topic.hasPrefix("\(prefix)/alert/") && json["state"] as? String == state && json["kind"] as? String == "limit"
                    && (json["tag"] as? String)?.hasSuffix(tag) == true
            }
        }
        try await withRunningOrchestrator(a) {
            try await withRunningOrchestrator(b) {
                try await withRunningOrchestrator(c) {
                    // One shard each, once the statuses are known (the first to start took them all).
                    try await eventually("one shard each", timeout: .seconds(60)) {
                        instances.allSatisfy { $0.heldShards?.count == 1 && $0.connectionStatus.connected }
                    }
                    try await Task.sleep(for: .milliseconds(500))
                    let start: Int64 = 1_790_000_000_000
                    try Self.stream(publisher, prefix: prefix, units: Self.units, tag: "TI", normal: 50, last: 105, start: start)
                    try await eventually("six raises, six invocations", timeout: .seconds(20)) {
                        alerts("raised", tag: "/TI").count >= 6
                            && AvailabilityTests.messages(watch) { topic, _ in topic.hasPrefix("\(prefix)/cmd/") }.count >= 6
                    }
                    // Each instance took in its own units' samples only: a non-zero shard's holder
                    // is subscribed to its units' topics alone; shard 0's holder takes the wildcard
                    // and drops the others'.
                    for instance in instances {
                        let shard = try #require(instance.heldShards?.first)
                        let own = map.units[shard].count
                        try await eventually("instance holding shard \(shard) processed its units") {
                            instance.pipeline.counters.samples == 31 * own
                        }
                        #expect(instance.pipeline.counters.otherShard == (shard == 0 ? 31 * (6 - own) : 0))
                    }
                    try await Task.sleep(for: .milliseconds(300))
                    let raised = alerts("raised", tag: "/TI")
                    #expect(raised.count == 6, "\(raised.map { "\($0["tag"] ?? "") \($0["alert_id"] ?? "")" })")
                    let ids = Dictionary(raised.compactMap { json in
                        (json["tag"] as? String).flatMap { tag in (json["alert_id"] as? String).map { (tag, $0) } }
                    }, uniquingKeysWith: { first, _ in first })
                    #expect(ids.count == 6)
                    try await eventually("the six recorded") {
                        (try? DecisionLoopTests.rows(database, "SELECT count(*) FROM alerts WHERE kind = 'limit'").first?.first) == "6"
                    }

                    // The holder of a shard other than 0 dies, its alerts open and invocations pending.
                    let victim = try #require(instances.first { $0.heldShards != [0] })
                    let moved = try #require(victim.heldShards?.first)
                    let survivors = instances.filter { $0 !== victim }
                    let takeoversBefore = Dictionary(uniqueKeysWithValues: survivors.map { (ObjectIdentifier($0), $0.shardTakeovers) })
                    let before = AvailabilityTests.messages(watch) { topic, _ in topic.hasPrefix("\(prefix)/cmd/") }.count
                    victim.haltAsIfKilled()
                    try await eventually("its shard taken over", timeout: Self.lease * 6) {
                        survivors.contains { $0.heldShards?.contains(moved) == true }
                    }
                    let heir = try #require(survivors.first { $0.heldShards?.contains(moved) == true })
                    // (Its episodes waiting for the units' first samples, which it is now subscribed to.)
                    try await eventually("the heir's takeover done", timeout: .seconds(20)) {
                        heir.shardTakeovers > takeoversBefore[ObjectIdentifier(heir)]! && heir.pipeline.adoption.waiting >= map.units[moved].count
                    }
                    try await Task.sleep(for: .milliseconds(300))
                    // Its pending invocations re-armed once by the heir: no attempt published twice.
                    try await eventually("re-armed", timeout: .seconds(20)) {
                        AvailabilityTests.messages(watch) { topic, _ in topic.hasPrefix("\(prefix)/cmd/") }.count >= before + map.units[moved].count
                    }
                    let attempts = AvailabilityTests.messages(watch) { topic, _ in topic.hasPrefix("\(prefix)/cmd/") }
                        .compactMap { json in (json["invocation_id"] as? String).flatMap { id in (json["attempt"] as? Int).map { "\(id)#\($0)" } } }
                    #expect(Set(attempts).count == attempts.count, "an attempt published twice: \(attempts)")

                    // Back to normal everywhere: every episode is cleared under its own id, the moved
                    // units' by their new holder.
                    try Self.stream(publisher, prefix: prefix, units: Self.units, tag: "TI", normal: 50, last: 50, start: start + 60_000)
                    do {
                        try await eventually("six clears", timeout: .seconds(20)) { alerts("cleared", tag: "/TI").count >= 6 }
                    } catch {
                        let cleared = Set(alerts("cleared", tag: "/TI").compactMap { $0["tag"] as? String })
                        let states = instances.map { instance in
                            "\(instance === victim ? "victim" : instance === heir ? "heir" : "other") shards \(instance.heldShards ?? []) "
                                + "samples \(instance.pipeline.counters.samples) other \(instance.pipeline.counters.otherShard) adoption \(instance.pipeline.adoption)"
                        }
                        Issue.record("not cleared: \(Set(ids.keys).subtracting(cleared).sorted()) (moved: \(map.units[moved])); \(states)")
                        throw error
                    }
                    let cleared = Set(alerts("cleared", tag: "/TI").compactMap { $0["alert_id"] as? String })
                    #expect(cleared == Set(ids.values))
                    #expect(alerts("raised", tag: "/TI").count == 6, "nothing raised twice")
                    // And the moved units alert on: a new breach, raised and invoked by the heir.
                    try Self.stream(publisher, prefix: prefix, units: map.units[moved], tag: "PI", normal: 5, last: 12, start: start + 120_000)
                    try await eventually("the moved units alert on", timeout: .seconds(20)) { alerts("raised", tag: "/PI").count == map.units[moved].count }
                    #expect(heir.pipeline.counters.alertsRaised >= map.units[moved].count)
                    try await eventually("all in the record, the first six closed") {
                        (try? DecisionLoopTests.rows(
                            database, "SELECT count(*), count(*) FILTER (WHERE state = 'cleared') FROM alerts WHERE kind = 'limit'").first)
                            == ["\(6 + map.units[moved].count)", "6"]
                    }
                    #expect(try DecisionLoopTests.rows(database, "SELECT count(DISTINCT instance) FROM decisions").first?.first == "3")
                }
            }
        }
    }
}
