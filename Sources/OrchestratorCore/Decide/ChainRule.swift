package import Foundation
import Yams

/// What makes a module's result fire a `kind: chained` trigger (docs/decisions.md, "Chained
/// modules"): a forecast that crosses a limit, a benefit above a threshold, a market move.
///
/// ```yaml
///   - name: forecast-predicts-limit
///     kind: chained
///     after: forecasting        # whose results it reads
///     when: limit_crossing      # limit_crossing | benefit | move
///     module: optimization      # the crossing tag's unit is optimised, the forecast attached
///   - name: margin-change
///     kind: chained
///     after: analysis
///     when: move
///     min_move_percent: 5
///     units: [r1/cdu/cdu1]      # benefit and move act on these units
///     module: optimization
/// ```
package struct ChainRule: Sendable, Equatable {
    package enum Condition: String, Sendable, CaseIterable {
        /// A forecast's mean path (`output.forecasts.{tag}.mean`) crosses a limit of its tag
        /// within the horizon.
        case limitCrossing = "limit_crossing"
        /// The result's `metrics.benefit` reaches `min_benefit`.
        case benefit
        /// An instrument's `output.instruments.{tag}.move_percent` reaches `min_move_percent` either way.
        case move
    }

    package var after: ModuleName
    package var when: Condition
    package var minBenefit = 1.0
    package var minMovePercent = 5.0
    /// The units a `benefit` or `move` chain acts on (a limit crossing acts on the crossing tag's unit).
    package var units: [String] = []

    package init(after: ModuleName, when: Condition) {
        self.after = after
        self.when = when
    }

    /// The keys only a chained trigger takes.
    static let keys = ["after", "when", "min_benefit", "min_move_percent", "units"]

    /// One reason a result fires the chain: the scope to act on, the tag and direction the module
    /// should work against (a limit crossing), and the evidence attached to the invocation.
    package struct Cause: Sendable, Equatable {
        package let scope: String
        package let focus: TriggerEvent.Focus?
        /// JSON object text: what in the parent's result fired it.
        package let evidence: String
    }

    /// The causes a completed, successful result gives (none: the chain does not fire).
    /// `tags` filters the tags whose forecasts count (empty: every tag).
    package func causes(result json: String, benefit: Double?, tags: [TagPattern], topicMap: TopicMap) -> [Cause] {
        switch self.when {
        case .limitCrossing:
            guard let crossing = Self.earliestCrossing(in: JSONValue(parsing: Array(json.utf8)), tags: tags, topicMap: topicMap) else {
                return []
            }
            return [
                Cause(scope: DecisionScope.unit(of: crossing.tag), focus: .init(tag: crossing.tag, direction: crossing.direction), evidence: crossing.evidence)
            ]
        case .benefit:
            guard let benefit, benefit.isFinite, benefit >= self.minBenefit else { return [] }
            var json = JSONWriter()
            json.field("benefit", number: benefit)
            json.field("min_benefit", number: self.minBenefit)
            let evidence = String(decoding: json.finish(), as: UTF8.self)
            return self.units.map { Cause(scope: $0, focus: nil, evidence: evidence) }
        case .move:
            guard case .object(let instruments)? = JSONValue(parsing: Array(json.utf8))?["output"]?["instruments"] else { return [] }
            var moved: [String: JSONValue] = [:]
            for (name, entry) in instruments {
                guard let move = entry["move_percent"]?.number, move.isFinite, abs(move) >= self.minMovePercent else { continue }
                moved[String(name.prefix(256))] = .number(move)
                if moved.count == 100 { break }
            }
            guard !moved.isEmpty else { return [] }
            let evidence = JSONValue.object(["move_percent": .object(moved), "min_move_percent": .number(self.minMovePercent)]).text
            return self.units.map { Cause(scope: $0, focus: nil, evidence: evidence) }
        }
    }

    /// The tag whose forecast crosses one of its limits soonest, the direction, and the evidence.
    static func earliestCrossing(
        in result: JSONValue?, tags: [TagPattern], topicMap: TopicMap
    ) -> (tag: String, direction: TriggerRule.Direction, evidence: String)? {
        guard case .object(let forecasts)? = result?["output"]?["forecasts"] else { return nil }
        var best: (tag: String, step: Int, direction: TriggerRule.Direction, evidence: String)? = nil
        for (tag, forecast) in forecasts.sorted(by: { $0.key < $1.key }) {
            guard let info = topicMap.tags[tag], tags.isEmpty || tags.contains(where: { $0.matches(tag) }),
                case .array(let path)? = forecast["mean"]
            else { continue }
            let high = info.limits.hi ?? info.limits.hihi
            let low = info.limits.lo ?? info.limits.lolo
            for (step, point) in path.prefix(100_000).enumerated() {
                guard let value = point.number, value.isFinite else { continue }
                let crossed: (name: String, limit: Double, direction: TriggerRule.Direction)? =
                    if let high, value > high { (info.limits.hi != nil ? "hi" : "hihi", high, .up) }
                    else if let low, value < low { (info.limits.lo != nil ? "lo" : "lolo", low, .down) }
                    else { nil }
                guard let crossed else { continue }
                if step < best?.step ?? .max {
                    var evidence: [String: JSONValue] = [
                        "tag": .string(tag), "limit": .string(crossed.name), "limit_value": .number(crossed.limit),
                        "steps": .integer(Int64(step + 1)), "value": .number(value),
                    ]
                    if case .array(let times)? = forecast["t"], step < times.count, case .integer(let at) = times[step] {
                        evidence["at"] = .integer(at)
                    }
                    for key in ["mean", "lower95", "upper95"] {
                        if case .array(let series)? = forecast[key] { evidence[key] = .array(Array(series.prefix(1000))) }
                    }
                    best = (tag, step, crossed.direction, JSONValue.object(evidence).text)
                }
                break
            }
        }
        return best.map { ($0.tag, $0.direction, $0.evidence) }
    }

    static func read(_ entry: YAMLSection, itemMark: Mark?) -> ChainRule? {
        let afterText = entry.string("after", default: "")
        guard let after = ModuleName(rawValue: afterText) else {
            let allowed = ModuleName.allCases.map(\.rawValue).joined(separator: ", ")
            entry.diagnostics.report(
                .error, entry.keyPath("after"), at: entry.markOf("after"),
                afterText.isEmpty ? "a chained trigger needs after: the module whose results fire it (\(allowed))"
                    : "\"\(afterText)\" is not one of \(allowed)")
            return nil
        }
        var rule = ChainRule(after: after, when: entry.choice("when", default: after == .forecasting ? .limitCrossing : .benefit))
        rule.minBenefit = entry.double("min_benefit", default: rule.minBenefit, in: 0...1e12)
        rule.minMovePercent = entry.double("min_move_percent", default: rule.minMovePercent, in: 0...1e6)
        if let node = entry.node("units") {
            let items: [Node] = if case .sequence(let list) = node { Array(list) } else { [node] }
            rule.units = items.compactMap { $0.scalar?.string }.filter { !$0.isEmpty }
        }
        if rule.when != .limitCrossing && rule.units.isEmpty {
            entry.diagnostics.report(
                .error, entry.keyPath("units"), at: entry.markOf("units") ?? itemMark,
                "when: \(rule.when.rawValue) needs units: the units to act on")
        }
        return rule
    }
}
