/// Which shard each process unit belongs to, and the MQTT filters of a set of shards
/// (`sharding.shards`; docs/availability.md, "Sharding").
///
/// A unit of the topic map (the path above its tags, `r1/cdu/cdu1`) goes to shard
/// `FNV-1a(unit) mod N`: every instance computes the same from the same topic map, with no
/// coordination. Units, never single tags: a unit monitor needs all of its tags. Everything else —
/// market data, Sparkplug B, tags outside the topic map, schedules, decisions on no unit — belongs
/// to shard 0, whose holder is also the active instance of the gateway (its status, the Sparkplug
/// host role).
package struct ShardMap: Sendable {
    package let count: Int
    /// The mapped units the sensor pattern can name, by shard.
    package let units: [[String]]
    private let unitShard: [String: Int]
    /// By unit: its sensor filter (`plant/r1/cdu/cdu1/+`), its batch topic, and the named topics of its tags.
    private let filtersOfUnit: [String: [String]]
    /// Shard 0's filters: the topic map's own (wildcards): it ingests what no other shard names.
    private let wildcardFilters: [String]

    package init(count: Int, topicMap: TopicMap) {
        self.count = max(1, count)
        let router = TopicRouter(map: topicMap)
        self.wildcardFilters = router.subscriptions
        var tagsOfUnit: [String: [String]] = [:]
        for tag in topicMap.tags.keys where !tag.hasPrefix("market/") {
            tagsOfUnit[DecisionScope.unit(of: tag), default: []].append(tag)
        }
        var namedOfTag: [String: [String]] = [:]
        for (topic, tag) in topicMap.namedTopics { namedOfTag[tag, default: []].append(topic) }
        var units = [[String]](repeating: [], count: self.count)
        var unitShard: [String: Int] = [:]
        var filtersOfUnit: [String: [String]] = [:]
        for (unit, tags) in tagsOfUnit.sorted(by: { $0.key < $1.key }) {
            guard let filter = Self.unitFilter(unit, pattern: topicMap.sensorPattern) else { continue }
            let shard = Int(Self.hash(unit) % UInt64(self.count))
            units[shard].append(unit)
            unitShard[unit] = shard
            var filters = [filter]
            // Its batch topic, one level up.
            if topicMap.sensorPattern.parent != nil { filters.append(String(filter.dropLast(2))) }
            // A tag's own topic, unless its unit's filter already brings it (the broker would
            // deliver it twice).
            for topic in tags.flatMap({ namedOfTag[$0] ?? [] }).sorted() where !Self.matches(filter, topic) {
                filters.append(topic)
            }
            filtersOfUnit[unit] = filters
        }
        self.units = units
        self.unitShard = unitShard
        self.filtersOfUnit = filtersOfUnit
    }

    /// 64-bit FNV-1a of the unit's UTF-8 bytes: stable across processes, machines and versions
    /// (Swift's `Hasher` is seeded per process).
    package static func hash(_ unit: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in unit.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        return hash
    }

    /// The shard of a tag: its unit's, or 0 (market data, tags outside the topic map).
    package func shard(ofTag tag: String) -> Int {
        guard self.count > 1, !tag.hasPrefix("market/") else { return 0 }
        return self.unitShard[DecisionScope.unit(of: tag)] ?? 0
    }

    /// The shard of a decision scope (``DecisionScope/key``): a unit's, a tag's unit's, else 0
    /// (`market`, `all`, a schedule's named scope).
    package func shard(ofScope key: String) -> Int {
        guard self.count > 1 else { return 0 }
        return self.unitShard[key] ?? self.shard(ofTag: key)
    }

    /// The filters an instance holding `shards` subscribes to: the topic map's wildcards with
    /// shard 0 (the pipeline drops what belongs to shards it does not hold), else each held unit's
    /// own.
    package func filters(for shards: Set<Int>) -> [String] {
        if shards.contains(0) { return self.wildcardFilters }
        return shards.sorted().flatMap { shard in
            shard < self.count ? self.units[shard].flatMap { self.filtersOfUnit[$0] ?? [] } : []
        }
    }

    /// The lease row of a shard: shard 0 is the active role's (`active`), the others `shard/{n}`.
    package static func leaseName(_ shard: Int) -> String { shard == 0 ? "active" : "shard/\(shard)" }

    /// `plant/r1/cdu/cdu1/+` for the unit `r1/cdu/cdu1` and the pattern `plant/{site}/{area}/{unit}/{tag}`;
    /// nil when the pattern cannot name the unit (its levels do not fit the variables).
    static func unitFilter(_ unit: String, pattern: TopicPattern) -> String? {
        guard case .variable = pattern.levels.last else { return nil }
        var parts = unit.split(separator: "/", omittingEmptySubsequences: false)[...]
        var levels: [String] = []
        for level in pattern.levels.dropLast() {
            switch level {
            case .literal(let text): levels.append(text)
            case .variable:
                guard let part = parts.popFirst(), !part.isEmpty, !part.contains(where: { "+#".contains($0) }) else { return nil }
                levels.append(String(part))
            case .rest: return nil
            }
        }
        guard parts.isEmpty else { return nil }
        return (levels + ["+"]).joined(separator: "/")
    }

    /// Whether a filter ending in a single `+` matches a topic.
    private static func matches(_ filter: String, _ topic: String) -> Bool {
        let prefix = filter.dropLast()
        return topic.hasPrefix(prefix) && !topic.dropFirst(prefix.count).contains("/") && topic.count > prefix.count
    }
}
