package import Foundation

/// An invocation's `params` (docs/mqtt-contract.md, "Invocations"): the recent good samples of the
/// decision's usable tags with their limits, and what this kind of module needs besides — the
/// forecast horizon and sampling interval, the optimiser's objective, a person's extra parameters.
package struct InvocationParams: Encodable, Sendable {
    package struct Limits: Encodable, Sendable, Equatable {
        var lolo: Double?
        var lo: Double?
        var hi: Double?
        var hihi: Double?

        var isEmpty: Bool { self == Limits() }
    }

    package struct TagData: Encodable, Sendable {
        var unit: String?
        var limits: Limits?
        /// Epoch ms of each sample.
        var t: [Int64]
        /// The values; a non-finite value is written `null`.
        var v: [Double]

        enum CodingKeys: String, CodingKey { case unit, limits, t, v }

        /// Element by element through the containers' own `Int64`/`Double` entries (the generic
        /// array path cost more than the rest of the decision).
        package func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encodeIfPresent(self.unit, forKey: .unit)
            try container.encodeIfPresent(self.limits, forKey: .limits)
            var times = container.nestedUnkeyedContainer(forKey: .t)
            for time in self.t { try times.encode(time) }
            var values = container.nestedUnkeyedContainer(forKey: .v)
            for value in self.v {
                if value.isFinite { try values.encode(value) } else { try values.encodeNil() }
            }
        }
    }

    /// The tags' data as one JSON object, in the order of the decision's usable tags.
    package struct Tags: Encodable, Sendable {
        private(set) var names: [String] = []
        private(set) var data: [TagData] = []

        mutating func append(_ name: String, _ tag: TagData) {
            self.names.append(name)
            self.data.append(tag)
        }

        subscript(name: String) -> TagData? { self.names.firstIndex(of: name).map { self.data[$0] } }

        package func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: NameKey.self)
            for (name, tag) in zip(self.names, self.data) { try container.encode(tag, forKey: NameKey(name)) }
        }
    }

    package struct Objective: Encodable, Sendable {
        var tag: String
        /// Which way to move the tag: against the way it went.
        var direction: String
    }

    var scope: String
    var data: String
    var tags: Tags
    var horizon: Int?
    var intervalMilliseconds: Int64?
    var objective: Objective?
    var request: JSONValue?
    /// A chained invocation: the parent decision and what in its result fired the chain.
    var parent: JSONValue?
    /// An ETL invocation for missing data: the interval, the tags, the cause.
    var gap: JSONValue?

    enum CodingKeys: String, CodingKey {
        case scope, data, tags, horizon, objective, request, parent, gap
        case intervalMilliseconds = "interval_ms"
    }

    /// The params of a decision's invocation, from the windows of its usable tags.
    package init(decision: Decision, settings: ModuleSettings, scopeKey: String, windows: [TagWindow], topicMap: TopicMap) {
        self.scope = scopeKey
        self.data = settings.data.rawValue
        var tags = Tags()
        var intervals: [Int64] = []
        for window in windows {
            let info = topicMap.tags[window.tag]
            let limits = info.map { Limits(lolo: $0.limits.lolo, lo: $0.limits.lo, hi: $0.limits.hi, hihi: $0.limits.hihi) }
            tags.append(window.tag, TagData(
                unit: info?.unit, limits: limits?.isEmpty == false ? limits : nil, t: window.times,
                v: window.values))
            if let first = window.times.first, let last = window.times.last, window.times.count > 1 {
                intervals.append((last &- first) / Int64(window.times.count - 1))
            }
        }
        self.tags = tags
        switch decision.module {
        case .forecasting:
            self.horizon = settings.horizon
            let sampling = intervals.sorted().dropFirst(intervals.count / 2).first ?? 0
            self.intervalMilliseconds = settings.step?.milliseconds ?? sampling
        case .optimization:
            if let alert = decision.trigger.alert, let direction = TriggerRule.direction(of: alert) {
                self.objective = Objective(tag: alert.tag, direction: direction == .down ? "up" : "down")
            } else if let focus = decision.trigger.focus, focus.direction != .any {
                self.objective = Objective(tag: focus.tag, direction: focus.direction == .down ? "up" : "down")
            }
        case .analysis, .etl:
            break
        }
        self.request = decision.trigger.extraParams.flatMap { try? JSONDecoder().decode(JSONValue.self, from: Data($0.utf8)) }
        switch decision.trigger.attachment {
        case .parent(let json)?: self.parent = JSONValue(parsing: Array(json.utf8))
        case .gap(let json)?: self.gap = JSONValue(parsing: Array(json.utf8))
        case nil: break
        }
    }

    /// The JSON object text stored with the invocation and sent in its message (on the decision
    /// path: the compact encoder, not Foundation's).
    package func json() -> String {
        guard let bytes = try? CompactJSONEncoder().encode(self) else { return "{}" }
        return String(decoding: bytes, as: UTF8.self)
    }

    // MARK: - The advisor's part

    /// The params with the advisor's (already bounded) parameters and its note.
    static func merging(_ params: [String: Int], confidence: Double, evidence: [String], into text: String) -> String {
        guard case .object(var object)? = try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8)) else { return text }
        for (name, value) in params { object[name] = .integer(Int64(value)) }
        object["advisor"] = .object(["confidence": .number(confidence), "evidence_ids": .array(evidence.map { .string($0) })])
        return JSONValue.object(object).text
    }

    /// The `trigger` of the advisor's own decision row: which decision it advised on.
    static func adviceTrigger(_ decision: Decision) -> String {
        var json = JSONWriter()
        json.field("advises", string: decision.id.uuidString.lowercased())
        json.field("kind", string: decision.trigger.kind.rawValue)
        return String(decoding: json.finish(), as: UTF8.self)
    }

    /// The `reasons` of the advisor's own decision row.
    static func adviceReasons(params: [String: Int]) -> String {
        var json = JSONWriter()
        json.field("step", string: "advisor")
        json.field("verdict", string: "pass")
        let chosen = params.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", ")
        json.field("detail", string: "the advisor agreed" + (chosen.isEmpty ? "" : "; parameters within the rules' bounds: " + chosen))
        return "[" + String(decoding: json.finish(), as: UTF8.self) + "]"
    }
}
