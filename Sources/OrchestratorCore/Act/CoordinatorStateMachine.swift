package import Foundation
package import Logging

/// The coordinator's memory and rules, with no clock, lock or I/O: every event (a trigger to
/// decide, a module's result, an approval, a failed delivery, the advisor's answer, the timer)
/// updates the state and returns the ``Effect``s to carry out, in order. ``ModuleCoordinator``
/// holds one behind a lock and performs the effects after releasing it; tests drive it directly.
///
/// What it remembers: the ``InvocationBook`` (invocations until they end), the decisions held for a
/// free slot, the learned ``OutcomeStatistics``, when each module last ran (per scope and per trigger
/// kind, for cooldowns and exploration), and the minute each schedule last fired.
package struct CoordinatorStateMachine: Sendable {
    /// Side effects, carried out in order after the state has changed.
    package enum Effect: Sendable {
        case record(Record)
        /// Publish the decision on `{prefix}/decision`.
        case mirror(DecisionRecord)
        /// Send an invocation to its module (MQTT or command).
        case send(Invocation)
        /// Decide a trigger with fresh data: a held decision whose module has a free slot, or a
        /// chained trigger a result fired.
        case reconsider(TriggerEvent)
        /// Ask the advisor about an invocation held for its advice.
        case advise(Decision, invocation: UUID)
        case observe(CoordinatorOutputs.Observation)
        case log(Logger.Level, String, Logger.Metadata)
    }

    /// Counts for status, metrics and tests.
    package struct Counters: Sendable, Equatable {
        package var decisions = 0
        package var invoked = 0
        package var skipped = 0
        /// Decisions held for a free slot (one waiting for an approval is not counted here).
        package var deferred = 0
        /// Sends of an invocation (first attempts, retries, after approval or advice).
        package var sends = 0
        package var retries = 0
        package var results = 0
        package var timeouts = 0
        package var failures = 0
        package var lateResults = 0
        package var duplicateResults = 0
        package var unknownResults = 0
        package var rejectedResults = 0
        /// Messages on `{prefix}/approve/{id}` that did not say `{"approve": true|false}`.
        package var refusedApprovals = 0
        package var approvals = 0
        package var expired = 0
        /// Held decisions dropped: the queue was full, or they waited longer than a module timeout.
        package var deferredDropped = 0
        package var advice = 0
    }

    /// A decision deferred for want of a free slot, decided again when one frees.
    struct HeldDecision: Sendable {
        let trigger: TriggerEvent
        let scopeKey: String
        let priority: Double
        let since: Int64
    }

    package private(set) var book = InvocationBook()
    package private(set) var counters = Counters()
    private(set) var statistics: [OutcomeStatistics.Key: OutcomeStatistics] = [:]
    private(set) var lastInvoked: [CooldownKey: Int64] = [:]
    private(set) var lastInvokedForKind: [CooldownKey: Int64] = [:]
    private(set) var held: [ModuleName: [HeldDecision]] = [:]
    private var scheduleFired: [String: Int64] = [:]
    /// Schedules wait while the record's memory of them is being read (see ``holdSchedules()``).
    private var schedulesHeld = false

    private var config: OrchestratorConfig
    /// Decisions by module and action (`dang_decisions_total`).
    package private(set) var decisionTallies: [DecisionTally: Int] = [:]
    /// Whether an advisor answers low-confidence decisions.
    private let hasAdvisor: Bool
    private let timeZone: TimeZone

    /// Scopes remembered for cooldowns before old ones are pruned: manual requests name their scope,
    /// so the map is bounded by age, not by the plant's size alone.
    static let lastInvokedLimit = 10_000

    package init(config: OrchestratorConfig, hasAdvisor: Bool) {
        self.config = config
        self.hasAdvisor = hasAdvisor
        self.timeZone = TimeZone.configured(config.timeZone) ?? .gmt
    }

    /// A reloaded configuration's modules, decision engine, triggers and topic map: every decision,
    /// retry, timeout and schedule from now on follows them. What is in flight stays (an invocation
    /// already sent keeps its attempt's deadline).
    package mutating func reconfigure(_ config: OrchestratorConfig) {
        self.config = config
    }

    package func statistics(triggerKind: String, module: ModuleName) -> OutcomeStatistics {
        self.statistics[.init(triggerKind: triggerKind, module: module.rawValue)] ?? OutcomeStatistics()
    }

    // MARK: - Deciding

    /// Decides one trigger with the data of its scope, and books what the decision asks for:
    /// an invocation sent now, held for the advisor or an approval, or a decision held for a slot.
    /// `params` builds the invocation's data (called only when there is an invocation).
    /// Returns nil when the trigger names a module that is not configured.
    package mutating func decide(
        _ trigger: TriggerEvent, scope: DecisionScope, views: [TagView], params: (Decision, ModuleSettings) -> String
    ) -> (decision: Decision, effects: [Effect])? {
        guard let settings = self.config.modules[trigger.module] else { return nil }
        var effects: [Effect] = []
        let now = trigger.time
        let module = trigger.module
        let context = DecisionContext(
            now: now, views: views, requiredTag: scope.required, scopeKey: scope.key, inFlight: self.book.inFlight(module),
            pendingForScope: self.book.isPending(module: module, scopeKey: scope.key)
                || (self.held[module] ?? []).contains { $0.scopeKey == scope.key },
            lastInvoked: self.lastInvoked[CooldownKey(module, scope.key)],
            lastInvokedForKind: self.lastInvokedForKind[CooldownKey(module, trigger.kind.rawValue)],
            statistics: self.statistics(triggerKind: trigger.kind.rawValue, module: module))
        let decision = DecisionEngine.decide(trigger, module: settings, engine: self.config.decisionEngine, context: context)
        self.counters.decisions += 1
        self.decisionTallies[DecisionTally(module: module, action: decision.action), default: 0] += 1
        switch decision.action {
        case .skip:
            self.counters.skipped += 1
        case .defer where !decision.awaitingApproval:
            self.counters.deferred += 1
            var queue = self.held[module] ?? []
            queue.append(HeldDecision(trigger: trigger, scopeKey: scope.key, priority: decision.priority, since: now))
            let limit = self.config.decisionEngine.maxDeferred
            if queue.count > limit {
                queue.removeFirst(queue.count - limit)
                self.counters.deferredDropped += 1
            }
            self.held[module] = queue
        case .defer, .invoke:
            var invocation = Invocation(
                decisionID: decision.id, module: module, triggerKind: trigger.kind.rawValue, scopeKey: scope.key,
                params: params(decision, settings), trigger: String(decoding: trigger.json(), as: UTF8.self))
            if decision.awaitingApproval {
                invocation.approvalExpiresAt = now + settings.approvalExpiry.milliseconds
                self.book.add(invocation)
                effects.append(.record(.invocation(invocation.record)))
            } else if self.hasAdvisor, decision.confidence < self.config.decisionEngine.confidenceThreshold, trigger.kind != .manual {
                // Low confidence: the advisor is asked first; the invocation waits at most `advice_wait`.
                self.counters.invoked += 1
                invocation.awaitingAdvice = true
                self.book.add(invocation)
                effects.append(.record(.invocation(invocation.record)))
                effects.append(.advise(decision, invocation: invocation.id))
            } else {
                self.counters.invoked += 1
                self.book.add(invocation)
                self.send(invocation.id, at: now, effects: &effects)
            }
        }
        return (decision, effects)
    }

    // MARK: - Results and answers

    /// A module's result, parsed, that came on `topicModule`'s result topic (or its command's stdout).
    package mutating func resultArrived(_ result: ModuleResult, topicModule: String, at now: Int64) -> [Effect] {
        var effects: [Effect] = []
        let id = result.invocationID.uuidString.lowercased()
        // A result on another module's topic does not complete this one.
        if let open = self.book.active[result.invocationID], open.module.rawValue != topicModule {
            self.counters.rejectedResults += 1
            effects.append(
                .log(
                    .warning, "module result refused: sent on another module's result topic",
                    ["module": "\(topicModule.prefix(64))", "invocation_id": "\(id)"]))
            return effects
        }
        switch self.book.complete(result, at: now) {
        case .completed(let invocation):
            self.counters.results += 1
            if let published = invocation.publishedAt { effects.append(.observe(.invocationCompleted(.milliseconds(now &- published)))) }
            self.learn(invocation, success: result.ok, benefit: result.benefit, effects: &effects)
            effects.append(.record(.invocation(invocation.record)))
            if result.ok { self.chain(after: invocation, result: result, at: now, effects: &effects) }
            effects.append(
                .log(
                    .info, "module result",
                    [
                        "module": "\(invocation.module.rawValue)", "invocation_id": "\(id)", "status": "\(invocation.status.rawValue)",
                        "attempts": "\(invocation.attempts)",
                    ]))
            self.releaseHeld(invocation.module, at: now, effects: &effects)
        case .late(let invocation):
            self.counters.lateResults += 1
            effects.append(.record(.invocation(invocation.record)))
            effects.append(
                .log(.warning, "late module result recorded, not counted", ["invocation_id": "\(id)", "status": "\(invocation.status.rawValue)"]))
        case .duplicate:
            self.counters.duplicateResults += 1
            effects.append(.log(.debug, "duplicate module result ignored", ["invocation_id": "\(id)"]))
        case .unknown:
            self.counters.unknownResults += 1
            effects.append(.log(.warning, "result for an unknown invocation", ["invocation_id": "\(id)"]))
        }
        return effects
    }

    /// A message on the result or approval topics that could not be read.
    package mutating func resultRefused() { self.counters.rejectedResults += 1 }
    package mutating func approvalRefused() { self.counters.refusedApprovals += 1 }

    /// An operator's answer to a decision waiting for approval; nil when no decision waits.
    package mutating func approve(decision id: UUID, approve: Bool, by: String?, via: String, at now: Int64) -> [Effect]? {
        guard let waiting = self.book.invocation(forDecision: id), waiting.isAwaitingApproval else { return nil }
        var effects: [Effect] = []
        self.counters.approvals += 1
        effects.append(.record(.approval(ApprovalRecord(decisionID: id, state: approve ? .approved : .rejected, by: by, via: via, at: now))))
        if approve {
            self.send(waiting.id, at: now, effects: &effects)
        } else if let rejected = self.book.reject(decision: id, at: now, reason: "rejected by \(by ?? "an operator")") {
            effects.append(.record(.invocation(rejected.record)))
        }
        effects.append(
            .log(
                .notice, approve ? "decision approved" : "decision rejected",
                ["decision_id": "\(id.uuidString.lowercased())", "by": "\(by ?? "-")", "via": "\(via)"]))
        return effects
    }

    /// A send that failed at once (the MQTT client refused it, the command could not run): retried
    /// with backoff, or given up after `max_retries`.
    package mutating func sendFailed(_ invocation: Invocation, reason: String, at now: Int64) -> [Effect] {
        var effects: [Effect] = []
        let engine = self.config.decisionEngine
        if case .timedOut(let failed) = self.book.sendFailed(
            invocation.id, reason: reason, at: now, maxRetries: engine.maxRetries, backoff: engine.retryBackoff)
        {
            self.learn(failed, success: false, benefit: nil, effects: &effects)
            effects.append(.record(.invocation(failed.record)))
            self.releaseHeld(failed.module, at: now, effects: &effects)
        }
        effects.append(
            .log(
                .warning, "module delivery failed",
                ["module": "\(invocation.module.rawValue)", "invocation_id": "\(invocation.id.uuidString.lowercased())", "error": "\(reason)"]))
        return effects
    }

    /// The advisor's answer: recorded, and the held invocation sent — with the advisor's parameters
    /// when it agreed (within the bounds the rules set), as the rules decided otherwise.
    package mutating func adviceArrived(_ answer: Advisor.Answer, about decision: Decision, invocation id: UUID, at now: Int64) -> [Effect] {
        let verdict = answer.verdict
        var effects: [Effect] = [
            .record(.llmExchange(answer.exchange)),
            .observe(.llmCall(.milliseconds(Int64(answer.exchange.latencyMilliseconds)), ok: verdict.isAnswer)),
        ]
        self.counters.advice += 1
        guard var waiting = self.book.active[id], waiting.awaitingAdvice else { return effects }
        waiting.awaitingAdvice = false
        if case .agreed(let confidence, let params, let evidence) = verdict {
            waiting.params = InvocationParams.merging(params, confidence: confidence, evidence: evidence, into: waiting.params)
            let advice = DecisionRecord(
                decisionID: UUID(), ts: now, module: waiting.module.rawValue, action: Decision.Action.invoke.rawValue,
                source: DecisionSource.llm.rawValue, trigger: InvocationParams.adviceTrigger(decision),
                reasons: InvocationParams.adviceReasons(params: params), confidence: confidence,
                latencyMicroseconds: Int64(answer.exchange.latencyMilliseconds) * 1000)
            effects.append(.record(.decision(advice)))
            effects.append(.mirror(advice))
        } else {
            effects.append(
                .log(
                    .notice, "the rules' decision stands without the advisor",
                    [
                        "decision_id": "\(decision.id.uuidString.lowercased())", "advisor": "\(verdict.status)",
                        "reason": "\(answer.exchange.error ?? "it would not invoke")",
                    ]))
        }
        self.book.replace(waiting)
        self.send(id, at: now, effects: &effects)
        return effects
    }

    // MARK: - Time

    /// Schedules due this minute, timeouts, retries, approval expiry and held decisions. Returns the
    /// schedule rules that fire (the caller decides them with fresh data) and the effects.
    package mutating func tick(at now: Int64) -> (scheduled: [TriggerRule], effects: [Effect]) {
        var scheduled: [TriggerRule] = []
        var effects: [Effect] = []
        let minute = now / 60_000
        let date = now.date
        for rule in self.config.triggers where rule.kind == .schedule {
            guard !self.schedulesHeld, let schedule = rule.schedule, self.scheduleFired[rule.name] != minute,
                schedule.matches(date, in: self.timeZone)
            else { continue }
            self.scheduleFired[rule.name] = minute
            scheduled.append(rule)
        }
        let config = self.config
        let due = self.book.due(
            at: now, maxRetries: config.decisionEngine.maxRetries, backoff: config.decisionEngine.retryBackoff,
            timeout: { Self.attemptTimeout($0, config: config) })
        var freed: Set<ModuleName> = []
        for item in due {
            switch item {
            case .retry(let invocation):
                self.counters.retries += 1
                self.counters.sends += 1
                effects.append(.record(.invocation(invocation.record)))
                effects.append(.send(invocation))
                effects.append(
                    .log(
                        .warning, "no result in time; delivering again",
                        [
                            "module": "\(invocation.module.rawValue)", "invocation_id": "\(invocation.id.uuidString.lowercased())",
                            "attempt": "\(invocation.attempts)",
                        ]))
            case .timedOut(let invocation):
                self.counters.timeouts += 1
                self.learn(invocation, success: false, benefit: nil, effects: &effects)
                effects.append(.record(.invocation(invocation.record)))
                effects.append(
                    .log(
                        .error, "module invocation timed out",
                        [
                            "module": "\(invocation.module.rawValue)", "invocation_id": "\(invocation.id.uuidString.lowercased())",
                            "attempts": "\(invocation.attempts)",
                        ]))
                freed.insert(invocation.module)
            case .expired(let invocation):
                self.counters.expired += 1
                effects.append(.record(.invocation(invocation.record)))
                effects.append(
                    .record(.approval(ApprovalRecord(decisionID: invocation.decisionID, state: .expired, by: nil, via: "timer", at: now))))
                effects.append(
                    .log(.warning, "decision expired without approval", ["decision_id": "\(invocation.decisionID.uuidString.lowercased())"]))
            }
        }
        for module in ModuleName.allCases where freed.contains(module) || !(self.held[module]?.isEmpty ?? true) {
            self.releaseHeld(module, at: now, effects: &effects)
        }
        return (scheduled, effects)
    }

    /// Until ``restore(_:at:)``, schedules do not fire: a process restarted in the minute a schedule
    /// fired in must learn that from the record first, or it fires again.
    package mutating func holdSchedules() {
        self.schedulesHeld = true
    }

    /// Takes in what the record remembers (an empty memory when the database is away): learned
    /// statistics, last invocations, and the invocations still pending (re-armed; the timer times
    /// out those past their deadline). Lets schedules fire.
    package mutating func restore(_ memory: DecisionMemory, at now: Int64, schedules: Bool = true) {
        if schedules { self.schedulesHeld = false }
        self.scheduleFired.merge(memory.scheduleFired) { max($0, $1) }
        for (key, statistics) in memory.statistics where self.statistics[key] == nil { self.statistics[key] = statistics }
        self.lastInvoked.merge(memory.lastInvoked) { max($0, $1) }
        self.lastInvokedForKind.merge(memory.lastInvokedForKind) { max($0, $1) }
        for (stored, decidedAt) in memory.pending {
            var invocation = stored
            guard let settings = self.config.modules[invocation.module] else { continue }
            if let published = invocation.publishedAt {
                // The attempt in flight when we stopped: its answer may still come.
                invocation.deadline = max(published &+ Self.attemptTimeout(invocation.module, config: self.config).milliseconds, now)
            } else if settings.requiresApproval {
                invocation.approvalExpiresAt = decidedAt &+ settings.approvalExpiry.milliseconds
            } else {
                // It was waiting for the advisor: the rules' decision stands, sent now.
                invocation.awaitingAdvice = true
                invocation.retryAt = now
            }
            self.book.add(invocation)
        }
    }

    // MARK: - Helpers

    /// Marks a booked invocation sent now: its attempt, its deadline, the cooldowns it starts.
    private mutating func send(_ id: UUID, at now: Int64, effects: inout [Effect]) {
        guard let module = self.book.active[id]?.module,
            let sent = self.book.sent(id, at: now, timeout: Self.attemptTimeout(module, config: self.config))
        else { return }
        self.counters.sends += 1
        self.noteInvoked(CooldownKey(sent.module, sent.scopeKey), at: now, in: \.lastInvoked)
        self.noteInvoked(CooldownKey(sent.module, sent.triggerKind), at: now, in: \.lastInvokedForKind)
        effects.append(.record(.invocation(sent.record)))
        effects.append(.send(sent))
    }

    /// Lets go of the open invocations and held decisions of scopes `moved` picks (their shard
    /// moved to another instance: ``InvocationBook/handOver(where:)``). Returns how many invocations.
    package mutating func handOver(scopes moved: (String) -> Bool) -> Int {
        for (module, queue) in self.held { self.held[module] = queue.filter { !moved($0.scopeKey) } }
        return self.book.handOver { moved($0.scopeKey) }
    }

    /// Another instance invoked `module` for a scope (`sharding.shards`): the cooldowns hold across
    /// instances (docs/availability.md, "Sharding").
    package mutating func invokedElsewhere(_ module: ModuleName, scope: String, kind: String, at time: Int64) {
        self.noteInvoked(CooldownKey(module, scope), at: max(time, self.lastInvoked[CooldownKey(module, scope)] ?? .min), in: \.lastInvoked)
        self.noteInvoked(
            CooldownKey(module, kind), at: max(time, self.lastInvokedForKind[CooldownKey(module, kind)] ?? .min), in: \.lastInvokedForKind)
    }

    /// Remembers when a module last ran for a scope or kind. Past ``lastInvokedLimit`` entries,
    /// those older than every module's cooldown (which is all they are read for) are forgotten.
    private mutating func noteInvoked(
        _ key: CooldownKey, at now: Int64, in map: WritableKeyPath<CoordinatorStateMachine, [CooldownKey: Int64]>
    ) {
        self[keyPath: map][key] = now
        guard self[keyPath: map].count > Self.lastInvokedLimit else { return }
        let longest = self.config.modules.values.map(\.cooldown.milliseconds).max() ?? 0
        self[keyPath: map] = self[keyPath: map].filter { now &- $0.value <= longest }
    }

    /// Re-decides held decisions of a module while it has free slots (highest priority first).
    private mutating func releaseHeld(_ module: ModuleName, at now: Int64, effects: inout [Effect]) {
        guard var queue = self.held[module], !queue.isEmpty, let settings = self.config.modules[module] else { return }
        // Held longer than a timeout: the moment has passed.
        let before = queue.count
        queue.removeAll { now &- $0.since > settings.timeout.milliseconds }
        if queue.count < before {
            self.counters.deferredDropped += before - queue.count
            effects.append(
                .log(
                    .warning, "deferred decisions dropped after waiting a module timeout",
                    ["module": "\(module.rawValue)", "dropped": "\(before - queue.count)"]))
        }
        var slots = settings.maxInFlight - self.book.inFlight(module)
        var ready: [TriggerEvent] = []
        while slots > 0,
            let best = queue.indices.max(by: { (queue[$0].priority, -queue[$0].since) < (queue[$1].priority, -queue[$1].since) })
        {
            ready.append(queue.remove(at: best).trigger)
            slots -= 1
        }
        self.held[module] = queue
        // Decided again after this event, with fresh data and time.
        for trigger in ready { effects.append(.reconsider(trigger.at(now))) }
    }

    /// The chained triggers a successful result fires (docs/decisions.md, "Chained modules"), as
    /// triggers to decide after this event; none past `max_chain_depth` links.
    private func chain(after invocation: Invocation, result: ModuleResult, at now: Int64, effects: inout [Effect]) {
        let rules = self.config.triggers.filter { $0.kind == .chained && $0.chain?.after == invocation.module }
        guard !rules.isEmpty else { return }
        let parentDepth = JSONValue(parsing: Array(invocation.trigger.utf8))?["depth"]?.number.map { Int(max(0, min($0, 100))) } ?? 0
        let depth = parentDepth + 1
        let parentID = invocation.decisionID.uuidString.lowercased()
        for rule in rules {
            guard let chain = rule.chain else { continue }
            let causes = chain.causes(result: result.json, benefit: result.benefit, tags: rule.tags, topicMap: self.config.topicMap)
            guard !causes.isEmpty else { continue }
            guard depth <= self.config.decisionEngine.maxChainDepth else {
                effects.append(
                    .log(
                        .notice, "chain stopped: decision_engine.max_chain_depth reached",
                        ["trigger": "\(rule.name)", "parent_decision_id": "\(parentID)", "depth": "\(depth)"]))
                continue
            }
            for cause in causes {
                var trigger = TriggerEvent(rule: rule.name, kind: .chained, module: rule.module, source: .rules, scope: cause.scope, time: now)
                trigger.parentDecisionID = invocation.decisionID
                trigger.depth = depth
                trigger.focus = cause.focus
                var parent = JSONWriter()
                parent.field("decision_id", string: parentID)
                parent.field("invocation_id", string: invocation.id.uuidString.lowercased())
                parent.field("module", string: invocation.module.rawValue)
                parent.field("when", string: chain.when.rawValue)
                parent.field("evidence", rawJSON: Array(cause.evidence.utf8))
                trigger.attachment = .parent(json: String(decoding: parent.finish(), as: UTF8.self))
                effects.append(.reconsider(trigger))
            }
        }
    }

    private mutating func learn(_ invocation: Invocation, success: Bool, benefit: Double?, effects: inout [Effect]) {
        let key = OutcomeStatistics.Key(triggerKind: invocation.triggerKind, module: invocation.module.rawValue)
        var statistics = self.statistics[key] ?? OutcomeStatistics()
        statistics.record(success: success, benefit: benefit)
        self.statistics[key] = statistics
        if !success { self.counters.failures += 1 }
        effects.append(.record(.outcome(OutcomeRecord(triggerKind: key.triggerKind, module: key.module, statistics: statistics))))
    }

    /// The book's deadline of one attempt. A command's own timeout kills it first (and reports the
    /// failure); the book's deadline, a little later, is the backstop.
    static func attemptTimeout(_ module: ModuleName, config: OrchestratorConfig) -> Duration {
        guard let settings = config.modules[module] else { return .seconds(300) }
        return settings.transport == .command ? settings.timeout + .seconds(5) : settings.timeout
    }
}

/// The key of a cooldown: a module and a scope (`forecasting` · `r1/cdu/cdu1`), or a module and a
/// trigger kind (`forecasting` · `equipment`) for exploration.
package struct CooldownKey: Hashable, Sendable {
    package let module: ModuleName
    package let name: String

    package init(_ module: ModuleName, _ name: String) {
        self.module = module
        self.name = name
    }
}

extension TriggerEvent {
    /// The same trigger, happening again at `time`.
    func at(_ time: Int64) -> TriggerEvent {
        var again = self
        again.time = time
        return again
    }
}

extension Advisor.Verdict {
    /// The advisor answered (agreed or not), as opposed to breaking the contract or not answering.
    var isAnswer: Bool {
        switch self {
        case .agreed, .disagreed: true
        case .invalid, .unavailable: false
        }
    }
}

/// One series of `dang_decisions_total`.
package struct DecisionTally: Sendable, Hashable {
    package let module: ModuleName
    package let action: Decision.Action
}
