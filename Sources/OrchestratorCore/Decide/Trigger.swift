package import Foundation
import Yams

/// One entry of `orchestrator.triggers`: what makes the orchestrator consider invoking a module.
///
/// ```yaml
/// triggers:
///   - name: furnace-efficiency-falling
///     kind: performance            # performance | market | equipment | schedule | manual | chained | data_gap
///     module: optimization
///     alerts: [trend]              # alert kinds that fire it (not for schedule)
///     direction: down              # up | down | any (trends, limits, market moves)
///     tags: ["r1/cdu/cdu1/EFF-*"]  # glob patterns of tag identifiers (default: every tag)
///     min_severity: info
///   - name: nightly-optimization
///     kind: schedule
///     module: optimization
///     schedule: "0 2 * * *"        # minute hour day-of-month month day-of-week, plant time zone
///     scope: r1/cdu/cdu1           # the unit (or tag) whose data it carries
///   - name: forecast-predicts-limit
///     kind: chained                # fires on a module's result, not on an alert
///     after: forecasting
///     when: limit_crossing         # limit_crossing | benefit | move
///     module: optimization
///   - name: backfill-gaps
///     kind: data_gap               # a broker outage or a tag's silence longer than min_gap
///     module: etl
///     min_gap: 5m
/// ```
package struct TriggerRule: Sendable, Equatable {
    package enum Kind: String, Sendable, CaseIterable {
        case performance
        case market
        case equipment
        case schedule
        case manual
        /// A module's result fires it (``ChainRule``).
        case chained
        /// Data missing for longer than `min_gap`: a broker outage or a tag's gap.
        case dataGap = "data_gap"

        /// Kinds an alert fires (the others fire on time, a request, a result or a gap).
        var firesOnAlerts: Bool {
            switch self {
            case .performance, .market, .equipment: true
            case .schedule, .manual, .chained, .dataGap: false
            }
        }
    }

    package enum Direction: String, Sendable, CaseIterable {
        case up
        case down
        case any
    }

    package var name: String
    package var kind: Kind
    package var module: ModuleName
    package var alertKinds: Set<AlertKind> = []
    package var direction: Direction = .any
    package var tags: [TagPattern] = []
    package var minSeverity: AlertSeverity = .info
    package var schedule: CronSchedule?
    package var scope: String?
    /// `kind: chained`: which module's results, and what in them, fire it.
    package var chain: ChainRule?
    /// `kind: data_gap`: the shortest gap that asks for a backfill.
    package var minGap: Duration = .seconds(300)

    package init(name: String, kind: Kind, module: ModuleName) {
        self.name = name
        self.kind = kind
        self.module = module
    }

    /// Whether a raised alert fires this rule.
    package func matches(_ event: AlertEvent) -> Bool {
        guard event.state == .raised, self.kind.firesOnAlerts else { return false }
        guard self.alertKinds.isEmpty || self.alertKinds.contains(event.kind) else { return false }
        guard event.severity >= self.minSeverity else { return false }
        guard self.tags.isEmpty || self.tags.contains(where: { $0.matches(event.tag) }) else { return false }
        if self.direction != .any {
            guard let direction = Self.direction(of: event), direction == self.direction else { return false }
        }
        return true
    }

    /// Which way an alert's condition points, where that means something.
    static func direction(of event: AlertEvent) -> Direction? {
        switch event.condition {
        case .trendUp?, .limitHigh?, .limitHighHigh?, .predictedHigh?: return .up
        case .trendDown?, .limitLow?, .limitLowLow?, .predictedLow?: return .down
        case .marketMove?:
            if case .marketMove(let percent, _, _)? = event.detail { return percent >= 0 ? .up : .down }
            return nil
        default: return nil
        }
    }

    static func read(_ node: Node, path: String, diagnostics: ConfigDiagnostics) -> [TriggerRule] {
        guard let entries = YAMLSection.items(of: node, path: path, diagnostics: diagnostics, expected: "{name, kind, module, ...}") else {
            return []
        }
        var rules: [TriggerRule] = []
        var names: Set<String> = []
        for entry in entries {
            let name = entry.string("name", default: "")
            if name.isEmpty {
                diagnostics.report(.error, entry.keyPath("name"), at: entry.mark, "every trigger needs a name")
            } else if !names.insert(name).inserted {
                diagnostics.report(.error, entry.keyPath("name"), at: entry.markOf("name"), "duplicate trigger name \"\(name)\"")
            }
            let kind: Kind = entry.choice("kind", default: .equipment)
            let moduleText = entry.string("module", default: "")
            guard let module = ModuleName(rawValue: moduleText) else {
                let allowed = ModuleName.allCases.map(\.rawValue).joined(separator: ", ")
                diagnostics.report(
                    .error, entry.keyPath("module"), at: entry.markOf("module"),
                    moduleText.isEmpty ? "every trigger needs a module (\(allowed))" : "\"\(moduleText)\" is not one of \(allowed)")
                entry.finish()
                continue
            }
            var rule = TriggerRule(name: name, kind: kind, module: module)
            if let alerts = entry.node("alerts") {
                let words: [Node] = if case .sequence(let list) = alerts { Array(list) } else { [alerts] }
                for word in words {
                    guard let text = word.scalar?.string, let alertKind = AlertKind(rawValue: text) else {
                        let allowed = AlertKind.allCases.map(\.rawValue).joined(separator: ", ")
                        diagnostics.report(
                            .error, entry.keyPath("alerts"), at: word.mark, "\"\(word.scalar?.string ?? "?")\" is not one of \(allowed)")
                        continue
                    }
                    rule.alertKinds.insert(alertKind)
                }
            }
            rule.direction = entry.choice("direction", default: .any)
            if let tags = entry.node("tags") {
                let patterns: [Node] = if case .sequence(let list) = tags { Array(list) } else { [tags] }
                rule.tags = patterns.compactMap { $0.scalar?.string }.map(TagPattern.init)
            }
            rule.minSeverity = entry.choice("min_severity", default: .info)
            rule.scope = entry.optionalString("scope")
            if let text = entry.optionalString("schedule") {
                do {
                    rule.schedule = try CronSchedule(text)
                } catch {
                    diagnostics.report(.error, entry.keyPath("schedule"), at: entry.markOf("schedule"), error.message)
                }
            }
            if kind == .schedule && rule.schedule == nil {
                diagnostics.report(.error, entry.keyPath("schedule"), at: entry.mark, "a schedule trigger needs a schedule")
            }
            if kind != .schedule && rule.schedule != nil {
                diagnostics.report(.error, entry.keyPath("schedule"), at: entry.markOf("schedule"), "only kind: schedule takes a schedule")
            }
            if kind == .chained {
                rule.chain = ChainRule.read(entry, itemMark: entry.mark)
            } else {
                for key in ChainRule.keys where entry.node(key) != nil {
                    diagnostics.report(.error, entry.keyPath(key), at: entry.markOf(key), "only kind: chained takes \(key)")
                }
            }
            if kind == .dataGap {
                rule.minGap = entry.duration("min_gap", default: rule.minGap)
                if rule.minGap < .seconds(1) {
                    diagnostics.report(.error, entry.keyPath("min_gap"), at: entry.markOf("min_gap"), "must be at least 1s")
                    rule.minGap = .seconds(1)
                }
            } else if entry.node("min_gap") != nil {
                diagnostics.report(.error, entry.keyPath("min_gap"), at: entry.markOf("min_gap"), "only kind: data_gap takes min_gap")
            }
            entry.finish()
            rules.append(rule)
        }
        return rules
    }
}

/// A glob over tag identifiers: `*` any run of characters (across `/` too), `?` one character.
package struct TagPattern: Sendable, Equatable {
    package let text: String

    package init(_ text: String) {
        self.text = text
    }

    package func matches(_ tag: String) -> Bool {
        Self.match(Array(self.text.utf8)[...], Array(tag.utf8)[...])
    }

    private static func match(_ pattern: ArraySlice<UInt8>, _ text: ArraySlice<UInt8>) -> Bool {
        // Iterative glob with one backtracking point for the last `*`.
        var p = pattern.startIndex
        var t = text.startIndex
        var star: (Int, Int)? = nil
        while t < text.endIndex {
            if p < pattern.endIndex, pattern[p] == UInt8(ascii: "*") {
                star = (p, t)
                p += 1
            } else if p < pattern.endIndex, pattern[p] == UInt8(ascii: "?") || pattern[p] == text[t] {
                p += 1
                t += 1
            } else if let (starP, starT) = star {
                p = starP + 1
                t = starT + 1
                star = (starP, starT + 1)
            } else {
                return false
            }
        }
        while p < pattern.endIndex, pattern[p] == UInt8(ascii: "*") { p += 1 }
        return p == pattern.endIndex
    }
}

/// A five-field cron expression (minute hour day-of-month month day-of-week) with `*`, lists,
/// ranges and steps (`*/15`, `1-5`, `0,30`); day-of-week 0–7 with 0 and 7 Sunday. As in cron, when
/// both day fields are restricted a day matching either is a match.
package struct CronSchedule: Sendable, Equatable, CustomStringConvertible {
    package struct ParseError: Error, Sendable {
        package let message: String
    }

    package let description: String
    private let minutes: Set<Int>
    private let hours: Set<Int>
    private let days: Set<Int>
    private let months: Set<Int>
    private let weekdays: Set<Int>
    private let daysRestricted: Bool
    private let weekdaysRestricted: Bool

    package init(_ text: String) throws(ParseError) {
        let fields = text.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard fields.count == 5 else {
            throw ParseError(message: "expected five fields (minute hour day-of-month month day-of-week), got \(fields.count)")
        }
        self.description = fields.joined(separator: " ")
        self.minutes = try Self.field(fields[0], name: "minute", range: 0...59)
        self.hours = try Self.field(fields[1], name: "hour", range: 0...23)
        self.days = try Self.field(fields[2], name: "day-of-month", range: 1...31)
        self.months = try Self.field(fields[3], name: "month", range: 1...12)
        self.weekdays = Set(try Self.field(fields[4], name: "day-of-week", range: 0...7).map { $0 % 7 })
        self.daysRestricted = fields[2] != "*"
        self.weekdaysRestricted = fields[4] != "*"
    }

    private static func field(_ text: String, name: String, range: ClosedRange<Int>) throws(ParseError) -> Set<Int> {
        var values: Set<Int> = []
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let pieces = part.split(separator: "/", omittingEmptySubsequences: false)
            guard pieces.count <= 2, let body = pieces.first else { throw ParseError(message: "bad \(name) field \"\(text)\"") }
            var step = 1
            if pieces.count == 2 {
                guard let parsed = Int(pieces[1]), parsed > 0 else { throw ParseError(message: "bad step in \(name) field \"\(text)\"") }
                step = parsed
            }
            var low = range.lowerBound
            var high = range.upperBound
            if body != "*" {
                let bounds = body.split(separator: "-", omittingEmptySubsequences: false)
                guard (1...2).contains(bounds.count), let first = Int(bounds[0]), let last = Int(bounds[bounds.count - 1]) else {
                    throw ParseError(message: "bad \(name) field \"\(text)\"")
                }
                low = first
                high = bounds.count == 2 ? last : (pieces.count == 2 ? range.upperBound : first)
            }
            guard range.contains(low), range.contains(high), low <= high else {
                throw ParseError(message: "\(name) field \"\(text)\" is outside \(range.lowerBound)-\(range.upperBound)")
            }
            values.formUnion(stride(from: low, through: high, by: step))
        }
        return values
    }

    /// Whether the schedule fires in the minute containing `date`, in `timeZone`.
    package func matches(_ date: Date, in timeZone: TimeZone) -> Bool {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        let c = calendar.dateComponents([.minute, .hour, .day, .month, .weekday], from: date)
        guard let minute = c.minute, let hour = c.hour, let day = c.day, let month = c.month, let weekday = c.weekday else {
            return false
        }
        guard self.minutes.contains(minute), self.hours.contains(hour), self.months.contains(month) else { return false }
        let dayMatch = self.days.contains(day)
        let weekdayMatch = self.weekdays.contains(weekday - 1)  // Calendar: 1 = Sunday
        if self.daysRestricted && self.weekdaysRestricted { return dayMatch || weekdayMatch }
        return dayMatch && weekdayMatch
    }
}
