import Foundation
import Yams

/// Which topics carry which tags, and what is known about each tag (`topics/*.yaml`).
///
/// ```yaml
/// sensors:
///   pattern: "plant/{site}/{area}/{unit}/{tag}"   # batch payloads arrive one level up
/// market:
///   pattern: "market/{instrument...}"
/// tags:
///   r1/cdu/cdu1/TI-101:
///     description: CDU furnace outlet temperature
///     unit: degC
///     criticality: high            # low | medium | high
///     limits: {lolo: 330, lo: 340, hi: 372, hihi: 380, deadband: 1.0}
///     topic: plant/r1/cdu/cdu1/TI-101   # optional: another topic that carries this tag
/// ```
package struct TopicMap: Sendable {
    package var sensorPattern: TopicPattern
    package var marketPattern: TopicPattern
    /// Tag metadata by tag identifier.
    package var tags: [String: TagInfo]
    /// Explicit topic → tag identifier names from the map (`topic:` entries).
    package var namedTopics: [String: String]
    /// `suppress_when` rules by the tag they suppress.
    package var suppressions: [String: SuppressWhen] = [:]
    package var warnings: [ConfigIssue] = []

    package init(
        sensorPattern: TopicPattern = TopicPattern("plant/{site}/{area}/{unit}/{tag}")!,
        marketPattern: TopicPattern = TopicPattern("market/{instrument...}")!,
        tags: [String: TagInfo] = [:], namedTopics: [String: String] = [:]
    ) {
        self.sensorPattern = sensorPattern
        self.marketPattern = marketPattern
        self.tags = tags
        self.namedTopics = namedTopics
    }

    /// Process units: plant tags grouped by the path above the tag (`r1/cdu/cdu1`), in name order,
    /// for the units with at least two tags. Market instruments form no unit.
    package var units: [(name: String, tags: [String])] {
        var groups: [String: [String]] = [:]
        for tag in self.tags.keys where !tag.hasPrefix("market/") {
            guard let slash = tag.lastIndex(of: "/") else { continue }
            groups[String(tag[..<slash]), default: []].append(tag)
        }
        return groups.filter { $0.value.count >= 2 }.map { ($0.key, $0.value.sorted()) }.sorted { $0.name < $1.name }
    }

    package static func load(
        file path: String, environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(ConfigError) -> TopicMap {
        let diagnostics = ConfigDiagnostics(file: path, environment: environment)
        guard let text = OrchestratorConfig.readFile(path, diagnostics: diagnostics),
            let root = diagnostics.parseRoot(text)
        else {
            throw ConfigError(issues: diagnostics.issues)
        }
        var map = TopicMap()
        if let sensors = root.section("sensors") {
            map.sensorPattern = Self.pattern(sensors, default: map.sensorPattern)
            if map.sensorPattern.isMultiLevel {
                sensors.diagnostics.report(
                    .error, sensors.keyPath("pattern"), at: sensors.markOf("pattern"),
                    "the sensor pattern must end in a single-level {tag}, not {name...}")
            }
            sensors.finish()
        }
        if let market = root.section("market") {
            map.marketPattern = Self.pattern(market, default: map.marketPattern)
            market.finish()
        }
        var suppressions: [(key: String, tag: String, rule: SuppressWhen, mark: Mark?)] = []
        if let tags = root.section("tags") {
            for (tag, mark) in tags.keys {
                guard let entry = tags.section(tag) else { continue }
                if tag.isEmpty || tag.contains(where: { "+#".contains($0) }) || tag.utf8.count > 1024 {
                    diagnostics.report(.error, entry.path, at: mark, "a tag identifier must be 1–1024 bytes without + or #")
                }
                let info = TagInfo(reading: entry)
                if let rule = SuppressWhen.read(entry) {
                    map.suppressions[tag] = rule
                    suppressions.append((entry.keyPath("suppress_when.tag"), tag, rule, entry.markOf("suppress_when")))
                }
                if let topic = entry.optionalString("topic") {
                    if topic.contains(where: { "+#".contains($0) }) || topic.hasPrefix("$") || topic.isEmpty {
                        diagnostics.report(
                            .error, entry.keyPath("topic"), at: entry.markOf("topic"),
                            "a tag's topic must be a plain topic name, without + or # wildcards")
                    } else if let other = map.namedTopics[topic] {
                        diagnostics.report(
                            .error, entry.keyPath("topic"), at: entry.markOf("topic"), "topic already names tag \(other)")
                    } else {
                        map.namedTopics[topic] = tag
                    }
                }
                entry.finish()
                map.tags[tag] = info
            }
        }
        root.finish()
        // A suppression names a tag of this map, and not the tag itself.
        for (key, tag, rule, mark) in suppressions where map.tags[rule.tag] == nil || rule.tag == tag {
            diagnostics.report(
                .error, key, at: mark, rule.tag == tag ? "a tag cannot suppress itself" : "\(rule.tag) is not a tag of this topic map")
        }
        if diagnostics.hasErrors {
            throw ConfigError(issues: diagnostics.issues)
        }
        map.warnings = diagnostics.issues
        return map
    }

    private static func pattern(_ section: YAMLSection, default value: TopicPattern) -> TopicPattern {
        guard let text = section.text("pattern") else { return value }
        guard let pattern = TopicPattern(text) else {
            section.diagnostics.report(
                .error, section.keyPath("pattern"), at: section.markOf("pattern"),
                "\"\(text)\" is not a topic pattern: use literal levels and {name}, with an optional final {name...}")
            return value
        }
        return pattern
    }
}

/// What the topic map says about one tag.
///
/// A reference to one immutable record of the entry, copied on write: the topic map and every
/// tag's detector share it (8 bytes each instead of a 224-byte copy, about 3 MB with 10,000 tags;
/// issue 19, part 5).
package struct TagInfo: Sendable, Equatable {
    package enum Criticality: String, Sendable, CaseIterable {
        case low
        case medium
        case high
    }

    /// The entry's settings, as the topic map gives them.
    package struct Fields: Sendable, Equatable {
        package var description: String?
        package var unit: String?
        package var criticality: Criticality = .medium
        package var limits = Limits()
        package var maxRatePerMinute: Double?
        package var flatline: Flatline?
        package var expectedPeriod: Duration?
        package var staleAfter: Double = 3
        package var minTrendPerHour: Double?
    }

    private final class Storage: Sendable {
        let fields: Fields
        init(_ fields: Fields) { self.fields = fields }
    }

    private var storage: Storage

    /// The entry's settings in one value (what a change to several of them goes through).
    package var fields: Fields {
        get { self.storage.fields }
        set { self.storage = Storage(newValue) }
    }

    package var description: String? {
        get { self.storage.fields.description }
        set { self.fields.description = newValue }
    }
    package var unit: String? {
        get { self.storage.fields.unit }
        set { self.fields.unit = newValue }
    }
    package var criticality: Criticality {
        get { self.storage.fields.criticality }
        set { self.fields.criticality = newValue }
    }
    package var limits: Limits {
        get { self.storage.fields.limits }
        set { self.fields.limits = newValue }
    }
    /// Largest credible change per minute, in engineering units (`rate_of_change`).
    package var maxRatePerMinute: Double? {
        get { self.storage.fields.maxRatePerMinute }
        set { self.fields.maxRatePerMinute = newValue }
    }
    /// Stuck-value check (`flatline`).
    package var flatline: Flatline? {
        get { self.storage.fields.flatline }
        set { self.fields.flatline = newValue }
    }
    /// Expected sampling period (`period`); with it, silence for `stale_after` periods raises `stale`.
    package var expectedPeriod: Duration? {
        get { self.storage.fields.expectedPeriod }
        set { self.fields.expectedPeriod = newValue }
    }
    /// Periods of silence before `stale` (`stale_after`, default 3).
    package var staleAfter: Double {
        get { self.storage.fields.staleAfter }
        set { self.fields.staleAfter = newValue }
    }
    /// Smallest trend worth an alert, in engineering units per hour (`min_trend`).
    package var minTrendPerHour: Double? {
        get { self.storage.fields.minTrendPerHour }
        set { self.fields.minTrendPerHour = newValue }
    }

    package static func == (lhs: TagInfo, rhs: TagInfo) -> Bool {
        lhs.storage === rhs.storage || lhs.storage.fields == rhs.storage.fields
    }

    /// No change beyond `tolerance` for `samples` consecutive samples, or for `duration`.
    package struct Flatline: Sendable, Equatable {
        package var tolerance: Double = 0
        package var samples: Int?
        package var duration: Duration?

        package init(tolerance: Double = 0, samples: Int? = nil, duration: Duration? = nil) {
            self.tolerance = tolerance
            self.samples = samples
            self.duration = duration
        }
    }

    /// Engineering limits; any may be absent. Alerts clear `deadband` inside the limit.
    package struct Limits: Sendable, Equatable {
        package var lolo: Double?
        package var lo: Double?
        package var hi: Double?
        package var hihi: Double?
        package var deadband: Double = 0

        package init(lolo: Double? = nil, lo: Double? = nil, hi: Double? = nil, hihi: Double? = nil, deadband: Double = 0) {
            self.lolo = lolo
            self.lo = lo
            self.hi = hi
            self.hihi = hihi
            self.deadband = deadband
        }
    }

    package init(
        description: String? = nil, unit: String? = nil, criticality: Criticality = .medium, limits: Limits = Limits()
    ) {
        self.storage = Storage(Fields(description: description, unit: unit, criticality: criticality, limits: limits))
    }

    init(reading entry: YAMLSection) {
        var info = Fields()
        info.description = entry.optionalString("description")
        info.unit = entry.optionalString("unit")
        info.criticality = entry.choice("criticality", default: .medium)
        if let limits = entry.section("limits") {
            info.limits.lolo = limits.optionalDouble("lolo")
            info.limits.lo = limits.optionalDouble("lo")
            info.limits.hi = limits.optionalDouble("hi")
            info.limits.hihi = limits.optionalDouble("hihi")
            let ordered = [info.limits.lolo, info.limits.lo, info.limits.hi, info.limits.hihi].compactMap { $0 }
            // Without a deadband a value dithering on a limit would raise and clear on every
            // crossing; the default is 0.5% of the band between the outermost limits (or of the limit).
            let span = (ordered.last ?? 0) - (ordered.first ?? 0)
            let fallback = max(span > 0 ? span * 0.005 : abs(ordered.first ?? 0) * 0.005, 1e-9)
            info.limits.deadband = limits.double("deadband", default: fallback, in: 1e-12...Double.greatestFiniteMagnitude)
            if ordered != ordered.sorted() {
                limits.diagnostics.report(.error, limits.path, at: limits.mark, "limits must satisfy lolo ≤ lo ≤ hi ≤ hihi")
            }
            limits.finish()
        }
        info.maxRatePerMinute = entry.optionalDouble("rate_of_change")
        if let flatline = entry.section("flatline") {
            var settings = Flatline()
            settings.tolerance = flatline.double("tolerance", default: 0, in: 0...Double.greatestFiniteMagnitude)
            if flatline.node("samples") != nil { settings.samples = flatline.int("samples", default: 60, in: 2...10_000_000) }
            if flatline.node("duration") != nil { settings.duration = flatline.duration("duration", default: .seconds(300)) }
            if settings.samples == nil && settings.duration == nil {
                flatline.diagnostics.report(.error, flatline.path, at: flatline.mark, "give samples, duration or both")
            }
            flatline.finish()
            info.flatline = settings
        }
        if entry.node("period") != nil { info.expectedPeriod = entry.duration("period", default: .seconds(1)) }
        info.staleAfter = entry.double("stale_after", default: 3, in: 1...1_000_000)
        info.minTrendPerHour = entry.optionalDouble("min_trend")
        self.storage = Storage(info)
    }
}

/// Suppressed by design (`suppress_when: {tag: T, below|above|equals: x}` on a tag of the topic
/// map): while another tag's latest value passes the test, the tag's raises are recorded but not
/// annunciated (a low-flow alarm while its pump is stopped). Kept in ``TopicMap/suppressions``,
/// not in ``TagInfo``: the detectors hold a tag's info and do not need it.
package struct SuppressWhen: Sendable, Equatable {
    package enum Test: Sendable, Equatable {
        case below(Double)
        case above(Double)
        case equals(Double)
    }

    package var tag: String
    package var test: Test

    package init(tag: String, test: Test) {
        self.tag = tag
        self.test = test
    }

    /// Whether `value` (the other tag's latest) suppresses.
    package func holds(_ value: Double) -> Bool {
        switch self.test {
        case .below(let limit): value < limit
        case .above(let limit): value > limit
        case .equals(let target): value == target
        }
    }
}

extension SuppressWhen {
    /// `suppress_when` of a tag entry, if it has one (a malformed one is reported).
    static func read(_ entry: YAMLSection) -> Self? {
        guard let suppress = entry.section("suppress_when") else { return nil }
        defer { suppress.finish() }
        let makers: [(String, (Double) -> Test)] = [("below", { .below($0) }), ("above", { .above($0) }), ("equals", { .equals($0) })]
        let tests = makers.compactMap { key, make in suppress.optionalDouble(key).map(make) }
        guard let tag = suppress.optionalString("tag"), tests.count == 1 else {
            suppress.diagnostics.report(
                .error, suppress.path, at: suppress.mark, "expected {tag: <another tag>, below: x} (or above: x, or equals: x; one test)")
            return nil
        }
        return Self(tag: tag, test: tests[0])
    }
}

/// A topic pattern such as `plant/{site}/{area}/{unit}/{tag}` or `market/{instrument...}`: literal
/// levels, single-level variables, and an optional final multi-level variable.
package struct TopicPattern: Sendable, Equatable, CustomStringConvertible {
    package enum Level: Sendable, Equatable {
        case literal(String)
        case variable(String)
        case rest(String)
    }

    package let levels: [Level]
    package let description: String

    package init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        var levels: [Level] = []
        for (index, part) in parts.enumerated() {
            if part.hasPrefix("{") && part.hasSuffix("}") {
                let name = part.dropFirst().dropLast()
                if name.hasSuffix("...") {
                    guard index == parts.count - 1, name.count > 3 else { return nil }
                    levels.append(.rest(String(name.dropLast(3))))
                } else {
                    guard !name.isEmpty else { return nil }
                    levels.append(.variable(String(name)))
                }
            } else {
                guard !part.isEmpty, !part.contains(where: { "+#{}".contains($0) }) else { return nil }
                levels.append(.literal(String(part)))
            }
        }
        guard !levels.isEmpty else { return nil }
        self.levels = levels
        self.description = text
    }

    package var isMultiLevel: Bool {
        if case .rest = self.levels.last { return true }
        return false
    }

    /// The MQTT subscription filter: `{x}` → `+`, `{x...}` → `#`.
    package var filter: String {
        self.levels.map { level in
            switch level {
            case .literal(let text): text
            case .variable: "+"
            case .rest: "#"
            }
        }.joined(separator: "/")
    }

    /// The pattern without its last level (sensor batches arrive one level up), if that leaves a
    /// level to match.
    package var parent: TopicPattern? {
        guard self.levels.count > 1 else { return nil }
        return TopicPattern(levels: Array(self.levels.dropLast()))
    }

    private init(levels: [Level]) {
        self.levels = levels
        self.description = levels.map { level in
            switch level {
            case .literal(let text): text
            case .variable(let name): "{\(name)}"
            case .rest(let name): "{\(name)...}"
            }
        }.joined(separator: "/")
    }

    /// Matches a topic's levels; returns the levels captured by variables, in order, or `nil`.
    package func match(_ topicLevels: [Substring]) -> [Substring]? {
        var captured: [Substring] = []
        for (index, level) in self.levels.enumerated() {
            switch level {
            case .literal(let text):
                guard index < topicLevels.count, topicLevels[index] == text else { return nil }
            case .variable:
                guard index < topicLevels.count, !topicLevels[index].isEmpty else { return nil }
                captured.append(topicLevels[index])
            case .rest:
                guard index < topicLevels.count else { return nil }
                let rest = topicLevels[index...]
                guard !rest.contains(where: \.isEmpty) else { return nil }
                captured.append(contentsOf: rest)
                return captured
            }
        }
        return topicLevels.count == self.levels.count ? captured : nil
    }
}
