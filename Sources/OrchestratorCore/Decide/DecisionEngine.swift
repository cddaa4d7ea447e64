package import Foundation

/// What asked for a decision: an alert that fired a trigger rule, a schedule, or a person.
package struct TriggerEvent: Sendable, Equatable {
    package let rule: String
    package let kind: TriggerRule.Kind
    package let module: ModuleName
    package let source: DecisionSource
    /// The alert that fired it (alert triggers).
    package let alert: AlertEvent?
    /// The unit or tag whose data it concerns (schedules, manual requests; alerts: the alert's tag).
    package let scope: String?
    package let requestedBy: String?
    /// Extra parameters from a manual request: a JSON object's text, already validated.
    package let extraParams: String?
    /// Epoch ms when it happened.
    package internal(set) var time: Int64
    /// A chained trigger: the decision whose invocation's result fired it.
    package var parentDecisionID: UUID?
    /// Links from the first decision of its chain (0: not chained).
    package var depth = 0
    /// The tag the module should work on and the way it was going (a chained optimisation's
    /// objective: bring it back).
    package var focus: Focus?
    /// What the trigger carries into the invocation's params besides the data.
    package var attachment: Attachment?

    package struct Focus: Sendable, Equatable {
        package let tag: String
        package let direction: TriggerRule.Direction
    }

    /// A params member the trigger brings: `parent` (a chain's parent and its evidence) or `gap`
    /// (the interval and tags to backfill), as a JSON object's text.
    package enum Attachment: Sendable, Equatable {
        case parent(json: String)
        case gap(json: String)
    }

    package init(
        rule: String, kind: TriggerRule.Kind, module: ModuleName, source: DecisionSource, alert: AlertEvent? = nil,
        scope: String? = nil, requestedBy: String? = nil, extraParams: String? = nil, time: Int64
    ) {
        self.rule = rule
        self.kind = kind
        self.module = module
        self.source = source
        self.alert = alert
        self.scope = scope ?? alert?.tag
        self.requestedBy = requestedBy
        self.extraParams = extraParams
        self.time = time
    }

    package var severity: AlertSeverity { self.alert?.severity ?? .info }

    /// The `trigger` JSON of the decision and of the invocation (ids and numbers; the alert's
    /// message is not repeated).
    package func json() -> [UInt8] {
        var json = JSONWriter()
        json.field("name", string: self.rule)
        json.field("kind", string: self.kind.rawValue)
        json.field("source", string: self.source.rawValue)
        if let alert = self.alert {
            json.field("alert_id", string: alert.id)
            json.field("alert_kind", string: alert.kind.rawValue)
            json.field("severity", string: alert.severity.rawValue)
            json.field("tag", string: alert.tag)
            json.field("value", number: alert.value)
            json.field("score", number: alert.score)
            json.field("ts", integer: alert.timestamp)
        }
        if let scope = self.scope { json.field("scope", string: scope) }
        if let by = self.requestedBy { json.field("requested_by", string: by) }
        if let parent = self.parentDecisionID {
            json.field("parent_decision_id", string: parent.uuidString.lowercased())
            json.field("depth", integer: Int64(self.depth))
        }
        json.field("time", integer: self.time)
        return json.finish()
    }
}

/// `decisions.source` (docs/record.md, "Schema").
package enum DecisionSource: String, Sendable, CaseIterable {
    case rules
    case llm
    case api
    case schedule
}

/// One selection criterion's verdict.
package struct StepVerdict: Sendable, Equatable {
    package enum Verdict: String, Sendable {
        case pass
        case skip
        case `defer`
    }

    package let step: String
    package let verdict: Verdict
    package let detail: String
}

/// A decision: invoke, skip or defer, with every step's verdict (docs/decisions.md, "Selection
/// criteria").
package struct Decision: Sendable, Equatable {
    package enum Action: String, Sendable {
        case invoke
        case skip
        case `defer`
    }

    package let id: UUID
    package let trigger: TriggerEvent
    package let module: ModuleName
    package let action: Action
    package let steps: [StepVerdict]
    package let confidence: Double
    package let priority: Double
    /// Dedupe/cooldown key: module and the scope of its data.
    package let scopeKey: String
    /// Tags whose data the invocation carries.
    package let usableTags: [String]
    /// Deferred for an operator's approval rather than for a free slot.
    package var awaitingApproval: Bool { self.action == .defer && self.steps.contains { $0.step == "approval" && $0.verdict == .defer } }

    /// The `reasons` JSON: every step in order.
    package func reasonsJSON() -> String {
        var text = "["
        for (index, step) in self.steps.enumerated() {
            if index > 0 { text += "," }
            var json = JSONWriter()
            json.field("step", string: step.step)
            json.field("verdict", string: step.verdict.rawValue)
            json.field("detail", string: step.detail)
            text += String(decoding: json.finish(), as: UTF8.self)
        }
        return text + "]"
    }

    package func record(latencyMicroseconds: Int64) -> DecisionRecord {
        DecisionRecord(
            decisionID: self.id, ts: self.trigger.time, module: self.module.rawValue, action: self.action.rawValue,
            source: self.trigger.source.rawValue, trigger: String(decoding: self.trigger.json(), as: UTF8.self),
            reasons: self.reasonsJSON(), confidence: self.confidence, latencyMicroseconds: latencyMicroseconds,
            parentDecisionID: self.trigger.parentDecisionID)
    }
}

/// What the selection criteria look at, gathered by the caller at decision time.
package struct DecisionContext: Sendable {
    package var now: Int64
    /// The tags of the module's data scope.
    package var views: [TagView]
    /// The tag the trigger concerns, if its own data must be usable (data scope `tag`).
    package var requiredTag: String?
    package var scopeKey: String
    /// Invocations of this module in flight.
    package var inFlight: Int
    /// An invocation (or approval) for this module and scope is already pending.
    package var pendingForScope: Bool
    /// When this module was last invoked for this scope.
    package var lastInvoked: Int64?
    /// When this module was last invoked for this kind of trigger.
    package var lastInvokedForKind: Int64?
    package var statistics: OutcomeStatistics

    package init(
        now: Int64, views: [TagView], requiredTag: String?, scopeKey: String, inFlight: Int, pendingForScope: Bool,
        lastInvoked: Int64?, lastInvokedForKind: Int64?, statistics: OutcomeStatistics
    ) {
        self.now = now
        self.views = views
        self.requiredTag = requiredTag
        self.scopeKey = scopeKey
        self.inFlight = inFlight
        self.pendingForScope = pendingForScope
        self.lastInvoked = lastInvoked
        self.lastInvokedForKind = lastInvokedForKind
        self.statistics = statistics
    }
}

/// The deterministic rules (docs/decisions.md, "Selection criteria"): each selection criterion a
/// named step with a verdict, all of them evaluated for every decision (so the record says
/// everything that held), in this order: `enabled`, `deduplicate`, `cooldown`, `data_quality`,
/// `priority`, `cost_benefit`, `resources`, `approval`. Any `skip` skips; otherwise a `defer`
/// defers; otherwise the module is invoked.
///
/// Pure: no clock, no I/O; the caller gathers the ``DecisionContext``.
package enum DecisionEngine {
    package static func decide(
        _ trigger: TriggerEvent, module settings: ModuleSettings, engine: DecisionEngineSettings, context: DecisionContext,
        id: UUID = UUID()
    ) -> Decision {
        var steps: [StepVerdict] = []
        let manual = trigger.kind == .manual

        steps.append(
            settings.enabled
                ? StepVerdict(step: "enabled", verdict: .pass, detail: "\(trigger.module.rawValue) is enabled")
                : StepVerdict(step: "enabled", verdict: .skip, detail: "\(trigger.module.rawValue) is disabled in the configuration"))

        steps.append(
            context.pendingForScope
                ? StepVerdict(
                    step: "deduplicate", verdict: .skip,
                    detail: "an invocation of \(trigger.module.rawValue) for \(context.scopeKey) is already pending")
                : StepVerdict(step: "deduplicate", verdict: .pass, detail: "nothing pending for \(context.scopeKey)"))

        if let last = context.lastInvoked, context.now - last < settings.cooldown.milliseconds {
            let remaining = Double(settings.cooldown.milliseconds - (context.now - last)) / 1000
            steps.append(
                manual
                    ? StepVerdict(step: "cooldown", verdict: .pass, detail: "manual request: the cooldown does not apply")
                    : StepVerdict(
                        step: "cooldown", verdict: .skip,
                        detail: "invoked for \(context.scopeKey) \(Self.format(Double(context.now - last) / 1000)) s ago; "
                            + "cooldown \(Self.format(remaining)) s more"))
        } else {
            steps.append(StepVerdict(step: "cooldown", verdict: .pass, detail: "no invocation within the cooldown"))
        }

        let quality = Self.dataQuality(settings: settings, context: context)
        steps.append(quality.verdict)

        let priority = Self.priority(trigger, views: context.views)
        steps.append(
            priority < settings.minPriority
                ? StepVerdict(
                    step: "priority", verdict: .skip,
                    detail: "priority \(Self.format(priority)) is below the module's minimum \(Self.format(settings.minPriority))")
                : StepVerdict(step: "priority", verdict: .pass, detail: "priority \(Self.format(priority))"))

        let statistics = context.statistics
        let expected = statistics.expectedBenefit(prior: settings.priorBenefit) * priority
        let ratio = settings.cost > 0 ? expected / settings.cost : .infinity
        let evidence =
            "expected benefit \(Self.format(expected)) (success \(Self.format(statistics.successRate * 100))% "
            + "over \(statistics.invocations) outcomes × priority) vs cost \(Self.format(settings.cost))"
        if manual {
            steps.append(StepVerdict(step: "cost_benefit", verdict: .pass, detail: "manual request; " + evidence))
        } else if ratio >= 1 {
            steps.append(StepVerdict(step: "cost_benefit", verdict: .pass, detail: evidence))
        } else {
            // Learning put it below its cost: try again now and then, in case that has changed.
            let priorRatio = settings.cost > 0 ? OutcomeStatistics().expectedBenefit(prior: settings.priorBenefit) * priority / settings.cost : 0
            let due =
                engine.exploreEvery > .zero && priorRatio >= 1
                && context.lastInvokedForKind.map { context.now - $0 >= engine.exploreEvery.milliseconds } ?? true
            steps.append(
                due
                    ? StepVerdict(step: "cost_benefit", verdict: .pass, detail: evidence + "; exploring (last tried long ago)")
                    : StepVerdict(step: "cost_benefit", verdict: .skip, detail: evidence))
        }

        steps.append(
            context.inFlight >= settings.maxInFlight
                ? StepVerdict(
                    step: "resources", verdict: .defer,
                    detail: "\(context.inFlight) of \(settings.maxInFlight) invocations in flight; waiting for a free slot")
                : StepVerdict(step: "resources", verdict: .pass, detail: "\(context.inFlight) of \(settings.maxInFlight) in flight"))

        steps.append(
            settings.requiresApproval
                ? StepVerdict(
                    step: "approval", verdict: .defer,
                    detail: "requires an operator's approval within \(Self.format(Double(settings.approvalExpiry.milliseconds) / 1000)) s")
                : StepVerdict(step: "approval", verdict: .pass, detail: "no approval required"))

        let action: Decision.Action
        let confidence: Double
        if let skip = steps.first(where: { $0.verdict == .skip }) {
            action = .skip
            confidence = skip.step == "cost_benefit" ? 1 / (1 + ratio) : 1
        } else {
            action = steps.contains { $0.verdict == .defer } ? .defer : .invoke
            let benefit = ratio.isFinite ? ratio / (1 + ratio) : 1
            confidence = quality.share * (manual ? 1 : benefit)
        }
        return Decision(
            id: id, trigger: trigger, module: trigger.module, action: action, steps: steps, confidence: confidence,
            priority: priority, scopeKey: context.scopeKey, usableTags: quality.usable)
    }

    /// Fresh samples of good quality, enough of them, and no open stale/flatline/data-quality
    /// episode on the tags whose data would be sent.
    static func dataQuality(settings: ModuleSettings, context: DecisionContext) -> (verdict: StepVerdict, usable: [String], share: Double) {
        guard settings.data != .none else {
            return (StepVerdict(step: "data_quality", verdict: .pass, detail: "the module needs no data"), [], 1)
        }
        var usable: [String] = []
        var problems: [String] = []
        for view in context.views {
            if let problem = Self.problem(with: view, settings: settings, now: context.now) {
                problems.append("\(view.tag): \(problem)")
            } else {
                usable.append(view.tag)
            }
        }
        let share = context.views.isEmpty ? 0 : Double(usable.count) / Double(context.views.count)
        if let required = context.requiredTag, !usable.contains(required) {
            let why = problems.first { $0.hasPrefix(required + ":") } ?? "\(required): no samples"
            return (StepVerdict(step: "data_quality", verdict: .skip, detail: "the triggering tag's data is not usable (\(why))"), [], 0)
        }
        guard !usable.isEmpty else {
            let why = problems.isEmpty ? "no tags in scope \(context.scopeKey)" : problems.prefix(5).joined(separator: "; ")
            return (StepVerdict(step: "data_quality", verdict: .skip, detail: "no usable data (\(why))"), [], 0)
        }
        var detail = "\(usable.count) of \(context.views.count) tags usable"
        if !problems.isEmpty { detail += "; left out: " + problems.prefix(5).joined(separator: "; ") }
        return (StepVerdict(step: "data_quality", verdict: .pass, detail: detail), usable, share)
    }

    private static func problem(with view: TagView, settings: ModuleSettings, now: Int64) -> String? {
        for kind in [AlertKind.stale, .flatline, .dataQuality] where view.openKinds.contains(kind) {
            return "\(kind.rawValue) alert open"
        }
        if view.lastQuality != .good { return "last sample \(view.lastQuality.rawValue)" }
        guard let receipt = view.lastReceipt else { return "no samples" }
        let age = now - receipt
        if age > settings.maxAge.milliseconds {
            return "last sample \(Self.format(Double(age) / 1000)) s old (max \(Self.format(Double(settings.maxAge.milliseconds) / 1000)) s)"
        }
        if view.goodSamples < settings.minHistory {
            return "\(view.goodSamples) good samples (needs \(settings.minHistory))"
        }
        if let cleared = view.qualityEpisodeCleared, let start = view.windowStart, cleared >= start {
            return "a stale, flatline or data-quality episode ended inside its window"
        }
        if let frozen = view.frozen {
            return "read exactly \(Self.format(frozen.value)) for \(Self.format(frozen.seconds)) s (\(frozen.samples) samples) in its window: "
                + "a frozen transmitter?"
        }
        return nil
    }

    /// Alert severity (info 1, warning 2, critical 3) × the criticality of the tags concerned
    /// (low 0.5, medium 1, high 1.5); schedules 1; a person's request 3.
    static func priority(_ trigger: TriggerEvent, views: [TagView]) -> Double {
        switch trigger.kind {
        case .manual: return 3
        case .schedule, .dataGap: return 1
        case .chained:
            // What the parent found, on the tag it concerns (or the unit): a predicted limit
            // crossing is a warning ahead of its alarm.
            let tag = trigger.focus?.tag
            let criticality = views.filter { tag == nil || $0.tag == tag }.compactMap(\.info?.criticality).map(Self.weight).max() ?? 1
            return 2 * criticality
        default: break
        }
        let severity: Double =
            switch trigger.severity {
            case .info: 1
            case .warning: 2
            case .critical: 3
            }
        let tag = trigger.alert?.tag
        let criticality = views.filter { tag == nil || $0.tag == tag }.compactMap(\.info?.criticality).map(Self.weight).max() ?? 1
        return severity * criticality
    }

    private static func weight(_ criticality: TagInfo.Criticality) -> Double {
        switch criticality {
        case .low: 0.5
        case .medium: 1
        case .high: 1.5
        }
    }

    static func format(_ value: Double) -> String {
        NumberText.significant(value, digits: 3)
    }
}
