package import Foundation
package import Logging
import Synchronization

/// Where invocations, decision mirrors and records go. `dang run` wires MQTT and the record
/// writer; tests wire the same to a real broker or capture them.
package struct CoordinatorOutputs: Sendable {
    /// Publishes a message (QoS 1); with `request` set, as a request with response topic and
    /// correlation data. Returns false when the client refused it.
    package var publish: @Sendable (_ topic: String, _ payload: [UInt8], _ request: (responseTopic: String, correlation: [UInt8])?) -> Bool
    package var record: @Sendable (Record) -> Void
    /// Runs a command-transport module: the invocation JSON on stdin, its stdout back, within the timeout.
    package var runCommand: @Sendable (_ argv: [String], _ environment: [String: String], _ input: [UInt8], _ timeout: Duration) async -> Result<[UInt8], CommandFailure>
    /// Latencies for the metrics.
    package var observe: @Sendable (Observation) -> Void

    package enum Observation: Sendable {
        case invocationCompleted(Duration)
        case llmCall(Duration, ok: Bool)
    }

    package init(
        publish: @escaping @Sendable (String, [UInt8], (responseTopic: String, correlation: [UInt8])?) -> Bool,
        record: @escaping @Sendable (Record) -> Void,
        runCommand: @escaping @Sendable ([String], [String: String], [UInt8], Duration) async -> Result<[UInt8], CommandFailure> = CommandTransport.run,
        observe: @escaping @Sendable (Observation) -> Void = { _ in }
    ) {
        self.publish = publish
        self.record = record
        self.runCommand = runCommand
        self.observe = observe
    }
}

/// Decide and act: turns alerts, schedules and requests into decisions (``DecisionEngine``), and
/// invoke decisions into module invocations it follows to their end — result, retry, timeout,
/// approval or expiry — learning from every outcome (SPEC §4).
///
/// ### Threading
/// ``deliver(_:)`` runs on the ingest thread just after the message that raised the alert has been
/// handled and the alert written (the pipeline's late sink); the decision and the publication
/// happen there, without a hop (the event-to-invocation latency is the product). All
/// state sits behind one lock; publishing, recording and logging happen after it is released.
/// ``tick(now:)`` is called by a timer (every `decision_engine.tick`).
package final class ModuleCoordinator: AlertSink, Sendable {
    /// Counts for status, metrics and tests.
    package struct Counters: Sendable, Equatable {
        package var decisions = 0
        package var invoked = 0
        package var skipped = 0
        package var deferred = 0
        package var deliveries = 0
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
        package var deferredDropped = 0
        package var advice = 0
    }

    private struct Deferred {
        let trigger: TriggerEvent
        let scopeKey: String
        let priority: Double
        let since: Int64
    }

    private struct State: ~Copyable {
        var book = InvocationBook()
        var statistics: [OutcomeStatistics.Key: OutcomeStatistics] = [:]
        var lastInvoked: [String: Int64] = [:]
        var lastInvokedForKind: [String: Int64] = [:]
        var deferred: [ModuleName: [Deferred]] = [:]
        var scheduleFired: [String: Int64] = [:]
        /// Schedules wait while the record's memory of them is being read (see ``holdSchedules()``).
        var schedulesHeld = false
        var counters = Counters()
    }

    /// Side effects gathered under the lock, carried out after it.
    private enum Effect {
        case record(Record)
        case mirror(DecisionRecord)
        case deliver(Invocation)
        /// Decide again (a deferred trigger whose module has a free slot).
        case consider(TriggerEvent)
        /// Ask the advisor about a held invocation.
        case advise(Advisor.Question, invocation: UUID)
        case observe(CoordinatorOutputs.Observation)
        case log(Logger.Level, String, Logger.Metadata)
    }

    private let state = Mutex(State())
    private let config: OrchestratorConfig

    /// Scopes remembered for cooldowns before old ones are pruned: manual requests name their scope,
    /// so the map is bounded by age, not by the plant's size alone.
    static let lastInvokedLimit = 10_000

    /// Remembers when a module last ran for a scope. Past ``lastInvokedLimit`` entries, those older
    /// than every module's cooldown (which is all they are read for) are forgotten.
    private func noteInvoked(_ key: String, at now: Int64, in map: inout [String: Int64]) {
        map[key] = now
        guard map.count > Self.lastInvokedLimit else { return }
        let longest = self.config.modules.values.map(\.cooldown.milliseconds).max() ?? 0
        map = map.filter { now &- $0.value <= longest }
    }
    private let pipeline: IngestPipeline
    private let outputs: CoordinatorOutputs
    private let logger: Logger
    private let clock: @Sendable () -> Int64
    private let prefix: String
    private let timeZone: TimeZone
    private let advisor: Advisor?

    package init(
        config: OrchestratorConfig, pipeline: IngestPipeline, outputs: CoordinatorOutputs, logger: Logger,
        advisor: Advisor? = nil,
        clock: @escaping @Sendable () -> Int64 = { Int64((Date().timeIntervalSince1970 * 1000).rounded()) }
    ) {
        self.advisor = advisor
        self.config = config
        self.pipeline = pipeline
        self.outputs = outputs
        self.logger = logger
        self.clock = clock
        self.prefix = config.topics.prefix
        self.timeZone = TimeZone.configured(config.timeZone) ?? .gmt
    }

    /// Topics the orchestrator subscribes to for the decision side.
    package var subscriptions: [String] {
        ["\(self.prefix)/result/+", "\(self.prefix)/approve/+", "\(self.prefix)/request/+", "\(self.prefix)/ack/+"]
    }

    package var counters: Counters { self.state.withLock { $0.counters } }

    package func statistics(triggerKind: String, module: ModuleName) -> OutcomeStatistics {
        self.state.withLock { $0.statistics[.init(triggerKind: triggerKind, module: module.rawValue)] ?? OutcomeStatistics() }
    }

    /// Invocations not finished yet.
    package var activeInvocations: [Invocation] { self.state.withLock { $0.book.activeInvocations } }

    /// Delivered and unfinished invocations of a module.
    package func inFlight(_ module: ModuleName) -> Int { self.state.withLock { $0.book.inFlight(module) } }

    /// The advisor, when the LLM is configured (also answers `POST /orchestrate`).
    package var advisorHandle: Advisor? { self.advisor }

    package var advisorCounters: LLMClient.Counters? { self.advisor?.client.counters }

    // MARK: - Inputs

    /// A raised alert fires every trigger rule it matches.
    package func deliver(_ event: AlertEvent) {
        guard event.state == .raised else { return }
        for rule in self.config.triggers where rule.matches(event) {
            let source: DecisionSource = .rules
            self.consider(TriggerEvent(rule: rule.name, kind: rule.kind, module: rule.module, source: source, alert: event, time: self.clock()))
        }
    }

    /// A person's request (`{prefix}/request/{module}` or the HTTP API): `{"scope": "r1/cdu/cdu1",
    /// "by": "operator name", "params": {...}}`, every field optional.
    @discardableResult
    package func request(module: ModuleName, scope: String?, by: String?, params: String?, source: DecisionSource = .api) -> Decision? {
        self.consider(
            TriggerEvent(
                rule: "manual", kind: .manual, module: module, source: source, scope: scope, requestedBy: by, extraParams: params,
                time: self.clock()))
    }

    /// Routes a message on one of ``subscriptions``. Returns false if the topic is not one of them.
    @discardableResult
    package func handle(topic: String, payload: [UInt8]) -> Bool {
        let base = self.prefix + "/"
        guard topic.hasPrefix(base) else { return false }
        let rest = topic.dropFirst(base.count).split(separator: "/", omittingEmptySubsequences: false)
        guard rest.count == 2 else { return false }
        guard payload.count <= self.config.topics.maxPayloadBytes else {
            self.state.withLock { $0.counters.rejectedResults += 1 }
            self.logger.warning(
                "message refused: larger than topics.max_payload_bytes",
                metadata: ["mqtt.topic": "\(topic.prefix(200))", "bytes": "\(payload.count)"])
            return true
        }
        switch rest[0] {
        case "result": self.handleResult(module: String(rest[1]), payload: payload)
        case "approve":
            guard let id = UUID(uuidString: String(rest[1])) else {
                self.logger.warning("approval refused: not a decision id", metadata: ["mqtt.topic": "\(topic.prefix(200))"])
                return true
            }
            guard let request = Self.approvalRequest(payload) else {
                self.state.withLock { $0.counters.refusedApprovals += 1 }
                self.logger.warning(
                    "approval refused: the payload must be {\"approve\": true} or {\"approve\": false}",
                    metadata: ["mqtt.topic": "\(topic.prefix(200))"])
                return true
            }
            self.approve(decision: id, approve: request.approve, by: request.by, via: "mqtt")
        case "request":
            guard let module = ModuleName(rawValue: String(rest[1])) else {
                self.logger.warning("request refused: unknown module", metadata: ["mqtt.topic": "\(topic.prefix(200))"])
                return true
            }
            guard let request = Self.manualRequest(payload) else {
                self.logger.warning("request refused: expected a JSON object", metadata: ["mqtt.topic": "\(topic.prefix(200))"])
                return true
            }
            self.request(module: module, scope: request.scope, by: request.by, params: request.params, source: .api)
        default: return false
        }
        return true
    }

    /// A module's result (`{prefix}/result/{module}` or a command's stdout).
    package func handleResult(module: String, payload: [UInt8]) {
        let now = self.clock()
        switch ModuleResult.parse(payload) {
        case .failure(let rejection):
            self.state.withLock { $0.counters.rejectedResults += 1 }
            self.logger.warning(
                "module result refused", metadata: ["module": "\(module.prefix(64))", "reason": "\(rejection.rawValue)"])
        case .success(let result):
            var effects: [Effect] = []
            self.state.withLock { state in
                // A result on another module's topic does not complete this one.
                if let open = state.book.active[result.invocationID], open.module.rawValue != module {
                    state.counters.rejectedResults += 1
                    effects.append(
                        .log(.warning, "module result refused: sent on another module's result topic", ["module": "\(module.prefix(64))", "invocation_id": "\(result.invocationID.uuidString.lowercased())"]))
                    return
                }
                switch state.book.complete(result, at: now) {
                case .completed(let invocation):
                    state.counters.results += 1
                    if let published = invocation.publishedAt { effects.append(.observe(.invocationCompleted(.milliseconds(now - published)))) }
                    self.learn(invocation, success: result.ok, benefit: result.benefit, state: &state, effects: &effects)
                    effects.append(.record(.invocation(invocation.record)))
                    effects.append(
                        .log(
                            .info, "module result",
                            [
                                "module": "\(invocation.module.rawValue)", "invocation_id": "\(invocation.id.uuidString.lowercased())",
                                "status": "\(invocation.status.rawValue)", "attempts": "\(invocation.attempts)",
                            ]))
                    self.dispatchDeferred(invocation.module, now: now, state: &state, effects: &effects)
                case .late(let invocation):
                    state.counters.lateResults += 1
                    effects.append(.record(.invocation(invocation.record)))
                    effects.append(
                        .log(
                            .warning, "late module result recorded, not counted",
                            ["invocation_id": "\(invocation.id.uuidString.lowercased())", "status": "\(invocation.status.rawValue)"]))
                case .duplicate:
                    state.counters.duplicateResults += 1
                    effects.append(
                        .log(.debug, "duplicate module result ignored", ["invocation_id": "\(result.invocationID.uuidString.lowercased())"]))
                case .unknown:
                    state.counters.unknownResults += 1
                    effects.append(
                        .log(.warning, "result for an unknown invocation", ["invocation_id": "\(result.invocationID.uuidString.lowercased())"]))
                }
            }
            self.perform(effects)
        }
    }

    /// An operator's answer to a decision waiting for approval.
    @discardableResult
    package func approve(decision id: UUID, approve: Bool, by: String?, via: String) -> Bool {
        let now = self.clock()
        var effects: [Effect] = []
        let found = self.state.withLock { state -> Bool in
            guard let waiting = state.book.invocation(forDecision: id), waiting.isAwaitingApproval else { return false }
            state.counters.approvals += 1
            effects.append(.record(.approval(ApprovalRecord(decisionID: id, state: approve ? .approved : .rejected, by: by, via: via, at: now))))
            if approve {
                let timeout = self.deliveryTimeout(waiting.module)
                if let delivered = state.book.delivered(waiting.id, at: now, timeout: timeout) {
                    self.noteInvoked("\(delivered.module.rawValue)|\(delivered.scopeKey)", at: now, in: &state.lastInvoked)
                    state.lastInvokedForKind["\(delivered.module.rawValue)|\(delivered.triggerKind)"] = now
                    state.counters.deliveries += 1
                    effects.append(.record(.invocation(delivered.record)))
                    effects.append(.deliver(delivered))
                }
            } else if let rejected = state.book.reject(decision: id, at: now, reason: "rejected by \(by ?? "an operator")") {
                effects.append(.record(.invocation(rejected.record)))
            }
            effects.append(
                .log(.notice, approve ? "decision approved" : "decision rejected", ["decision_id": "\(id.uuidString.lowercased())", "by": "\(by ?? "-")", "via": "\(via)"]))
            return true
        }
        if !found {
            self.logger.warning("approval for no waiting decision", metadata: ["decision_id": "\(id.uuidString.lowercased())", "via": "\(via)"])
        }
        self.perform(effects)
        return found
    }

    // MARK: - Time

    /// Schedules, timeouts, retries, approval expiry and deferred decisions.
    package func tick(now: Int64? = nil) {
        let now = now ?? self.clock()
        let minute = now / 60_000
        var scheduled: [TriggerRule] = []
        var effects: [Effect] = []
        self.state.withLock { state in
            let date = Date(timeIntervalSince1970: Double(now) / 1000)
            for rule in self.config.triggers where rule.kind == .schedule {
                guard !state.schedulesHeld, let schedule = rule.schedule, state.scheduleFired[rule.name] != minute,
                    schedule.matches(date, in: self.timeZone)
                else { continue }
                state.scheduleFired[rule.name] = minute
                scheduled.append(rule)
            }
            let due = state.book.due(
                at: now, maxRetries: self.config.decisionEngine.maxRetries, backoff: self.config.decisionEngine.retryBackoff,
                timeout: { self.deliveryTimeout($0) })
            var freed: Set<ModuleName> = []
            for item in due {
                switch item {
                case .retry(let invocation):
                    state.counters.retries += 1
                    state.counters.deliveries += 1
                    effects.append(.record(.invocation(invocation.record)))
                    effects.append(.deliver(invocation))
                    effects.append(
                        .log(.warning, "no result in time; delivering again", ["module": "\(invocation.module.rawValue)", "invocation_id": "\(invocation.id.uuidString.lowercased())", "attempt": "\(invocation.attempts)"]))
                case .timedOut(let invocation):
                    state.counters.timeouts += 1
                    self.learn(invocation, success: false, benefit: nil, state: &state, effects: &effects)
                    effects.append(.record(.invocation(invocation.record)))
                    effects.append(
                        .log(.error, "module invocation timed out", ["module": "\(invocation.module.rawValue)", "invocation_id": "\(invocation.id.uuidString.lowercased())", "attempts": "\(invocation.attempts)"]))
                    freed.insert(invocation.module)
                case .expired(let invocation):
                    state.counters.expired += 1
                    effects.append(.record(.invocation(invocation.record)))
                    effects.append(.record(.approval(ApprovalRecord(decisionID: invocation.decisionID, state: .expired, by: nil, via: "timer", at: now))))
                    effects.append(.log(.warning, "decision expired without approval", ["decision_id": "\(invocation.decisionID.uuidString.lowercased())"]))
                }
            }
            for module in ModuleName.allCases where freed.contains(module) || !(state.deferred[module]?.isEmpty ?? true) {
                self.dispatchDeferred(module, now: now, state: &state, effects: &effects)
            }
        }
        self.perform(effects)
        for rule in scheduled {
            self.consider(TriggerEvent(rule: rule.name, kind: .schedule, module: rule.module, source: .schedule, scope: rule.scope, time: now))
        }
    }

    /// Picks up where the previous run stopped: learned statistics, last invocations, and the
    /// invocations still pending (re-armed; the timer times out those past their deadline).
    /// Until ``restore(_:)``, schedules do not fire: a process restarted in the minute a schedule
    /// fired in must learn that from the record first, or it fires again.
    package func holdSchedules() {
        self.state.withLock { $0.schedulesHeld = true }
    }

    /// Takes in what the record remembers (an empty memory when the database is away), and lets
    /// schedules fire.
    package func restore(_ memory: DecisionMemory) {
        let now = self.clock()
        self.state.withLock { state in
            state.schedulesHeld = false
            state.scheduleFired.merge(memory.scheduleFired) { max($0, $1) }
            for (key, statistics) in memory.statistics where state.statistics[key] == nil { state.statistics[key] = statistics }
            state.lastInvoked.merge(memory.lastInvoked) { max($0, $1) }
            state.lastInvokedForKind.merge(memory.lastInvokedForKind) { max($0, $1) }
            for (stored, decidedAt) in memory.pending {
                var invocation = stored
                guard let settings = self.config.modules[invocation.module] else { continue }
                if let published = invocation.publishedAt {
                    // The attempt in flight when we stopped: its answer may still come.
                    invocation.deadline = max(published + self.deliveryTimeout(invocation.module).milliseconds, now)
                } else if settings.requiresApproval {
                    invocation.approvalExpiresAt = decidedAt + settings.approvalExpiry.milliseconds
                } else {
                    // It was waiting for the advisor: the rules' decision stands, delivered now.
                    invocation.awaitingAdvice = true
                    invocation.retryAt = now
                }
                state.book.add(invocation)
            }
        }
        if !memory.pending.isEmpty {
            self.logger.notice("pending invocations re-armed from the record", metadata: ["invocations": "\(memory.pending.count)"])
        }
    }

    // MARK: - Deciding

    @discardableResult
    private func consider(_ trigger: TriggerEvent) -> Decision? {
        let started = ContinuousClock.now
        guard let settings = self.config.modules[trigger.module] else { return nil }
        let scope = self.scope(of: trigger, data: settings.data)
        let views = self.pipeline.views(of: scope.tags)
        var effects: [Effect] = []
        let decision = self.state.withLock { state -> Decision in
            let now = trigger.time
            let module = trigger.module.rawValue
            let context = DecisionContext(
                now: now, views: views, requiredTag: scope.required, scopeKey: scope.key, inFlight: state.book.inFlight(trigger.module),
                pendingForScope: state.book.isPending(module: trigger.module, scopeKey: scope.key)
                    || (state.deferred[trigger.module] ?? []).contains { $0.scopeKey == scope.key },
                lastInvoked: state.lastInvoked["\(module)|\(scope.key)"],
                lastInvokedForKind: state.lastInvokedForKind["\(module)|\(trigger.kind.rawValue)"],
                statistics: state.statistics[.init(triggerKind: trigger.kind.rawValue, module: module)] ?? OutcomeStatistics())
            let decision = DecisionEngine.decide(trigger, module: settings, engine: self.config.decisionEngine, context: context)
            state.counters.decisions += 1
            switch decision.action {
            case .skip:
                state.counters.skipped += 1
            case .defer where !decision.awaitingApproval:
                state.counters.deferred += 1
                var queue = state.deferred[trigger.module] ?? []
                queue.append(Deferred(trigger: trigger, scopeKey: scope.key, priority: decision.priority, since: now))
                if queue.count > self.config.decisionEngine.maxDeferred {
                    queue.removeFirst(queue.count - self.config.decisionEngine.maxDeferred)
                    state.counters.deferredDropped += 1
                }
                state.deferred[trigger.module] = queue
            case .defer, .invoke:
                var invocation = Invocation(
                    decisionID: decision.id, module: trigger.module, triggerKind: trigger.kind.rawValue, scopeKey: scope.key,
                    params: self.params(for: decision, settings: settings, scope: scope), trigger: String(decoding: trigger.json(), as: UTF8.self))
                if decision.awaitingApproval {
                    invocation.approvalExpiresAt = now + settings.approvalExpiry.milliseconds
                    state.book.add(invocation)
                    effects.append(.record(.invocation(invocation.record)))
                } else if self.advisor != nil, decision.confidence < self.config.decisionEngine.confidenceThreshold, trigger.kind != .manual {
                    // Low confidence: the advisor is asked first; the invocation waits at most `advice_wait`.
                    state.counters.invoked += 1
                    invocation.awaitingAdvice = true
                    state.book.add(invocation)
                    effects.append(.record(.invocation(invocation.record)))
                    effects.append(.advise(self.question(for: decision, settings: settings), invocation: invocation.id))
                } else {
                    state.counters.invoked += 1
                    state.counters.deliveries += 1
                    state.book.add(invocation)
                    if let delivered = state.book.delivered(invocation.id, at: now, timeout: self.deliveryTimeout(trigger.module)) {
                        self.noteInvoked("\(module)|\(scope.key)", at: now, in: &state.lastInvoked)
                        state.lastInvokedForKind["\(module)|\(trigger.kind.rawValue)"] = now
                        effects.append(.record(.invocation(delivered.record)))
                        effects.append(.deliver(delivered))
                    }
                }
            }
            return decision
        }
        let latency = Int64((ContinuousClock.now - started).timeInterval * 1_000_000)
        let record = decision.record(latencyMicroseconds: latency)
        // The decision first: the invocation row refers to it.
        effects.insert(.record(.decision(record)), at: 0)
        effects.insert(.mirror(record), at: 1)
        self.perform(effects)
        if decision.action != .skip || trigger.kind == .manual {
            self.logger.info(
                "decision",
                metadata: [
                    "decision_id": "\(decision.id.uuidString.lowercased())", "module": "\(decision.module.rawValue)",
                    "action": "\(decision.action.rawValue)", "trigger": "\(trigger.rule)", "scope": "\(scope.key)",
                    "confidence": "\(DecisionEngine.format(decision.confidence))", "latency_us": "\(latency)",
                ])
        }
        return decision
    }

    /// Re-decides deferred triggers of a module while it has free slots (highest priority first).
    private func dispatchDeferred(_ module: ModuleName, now: Int64, state: inout State, effects: inout [Effect]) {
        guard var queue = state.deferred[module], !queue.isEmpty, let settings = self.config.modules[module] else { return }
        // Deferred longer than a timeout: the moment has passed.
        let before = queue.count
        queue.removeAll { now - $0.since > settings.timeout.milliseconds }
        if queue.count < before {
            state.counters.deferredDropped += before - queue.count
            effects.append(.log(.warning, "deferred decisions dropped after waiting a module timeout", ["module": "\(module.rawValue)", "dropped": "\(before - queue.count)"]))
        }
        var ready: [TriggerEvent] = []
        var slots = settings.maxInFlight - state.book.inFlight(module)
        while slots > 0, let best = queue.indices.max(by: { (queue[$0].priority, -queue[$0].since) < (queue[$1].priority, -queue[$1].since) }) {
            ready.append(queue.remove(at: best).trigger)
            slots -= 1
        }
        state.deferred[module] = queue
        guard !ready.isEmpty else { return }
        // Decided again outside this lock, with fresh data and time.
        for trigger in ready {
            effects.append(
                .consider(
                    TriggerEvent(
                        rule: trigger.rule, kind: trigger.kind, module: trigger.module, source: trigger.source, alert: trigger.alert,
                        scope: trigger.scope, requestedBy: trigger.requestedBy, extraParams: trigger.extraParams, time: now)))
        }
    }

    private func learn(_ invocation: Invocation, success: Bool, benefit: Double?, state: inout State, effects: inout [Effect]) {
        let key = OutcomeStatistics.Key(triggerKind: invocation.triggerKind, module: invocation.module.rawValue)
        var statistics = state.statistics[key] ?? OutcomeStatistics()
        statistics.record(success: success, benefit: benefit)
        state.statistics[key] = statistics
        if !success { state.counters.failures += 1 }
        effects.append(.record(.outcome(OutcomeRecord(triggerKind: key.triggerKind, module: key.module, statistics: statistics))))
    }

    /// The advisor's answer: recorded, and the held invocation delivered — with the advisor's
    /// parameters when it agreed (within the bounds the rules set), as the rules decided otherwise.
    private func adviceArrived(_ answer: Advisor.Answer, question: Advisor.Question, invocation id: UUID) {
        let now = self.clock()
        var effects: [Effect] = [
            .record(.llmExchange(answer.exchange)),
            .observe(.llmCall(.milliseconds(Int64(answer.exchange.latencyMilliseconds)), ok: answer.verdict.status == "agreed" || answer.verdict.status == "disagreed")),
        ]
        self.state.withLock { state in
            state.counters.advice += 1
            guard var held = state.book.active[id], held.awaitingAdvice else { return }
            held.awaitingAdvice = false
            if case .agreed(let confidence, let params, let evidence) = answer.verdict {
                held.params = Self.merging(params, confidence: confidence, evidence: evidence, into: held.params)
                let decision = DecisionRecord(
                    decisionID: UUID(), ts: now, module: held.module.rawValue, action: "invoke", source: "llm",
                    trigger: #"{"advises":"\#(question.decision.id.uuidString.lowercased())","kind":"\#(question.decision.trigger.kind.rawValue)"}"#,
                    reasons: Self.adviceReasons(answer.verdict, params: params), confidence: confidence,
                    latencyMicroseconds: Int64(answer.exchange.latencyMilliseconds) * 1000)
                effects.append(.record(.decision(decision)))
                effects.append(.mirror(decision))
            } else {
                effects.append(
                    .log(.notice, "the rules' decision stands without the advisor", ["decision_id": "\(question.decision.id.uuidString.lowercased())", "advisor": "\(answer.verdict.status)", "reason": "\(answer.exchange.error ?? "it would not invoke")"]))
            }
            state.book.replace(held)
            state.counters.deliveries += 1
            if let delivered = state.book.delivered(id, at: now, timeout: self.deliveryTimeout(held.module)) {
                state.lastInvoked["\(delivered.module.rawValue)|\(delivered.scopeKey)"] = now
                state.lastInvokedForKind["\(delivered.module.rawValue)|\(delivered.triggerKind)"] = now
                effects.append(.record(.invocation(delivered.record)))
                effects.append(.deliver(delivered))
            }
        }
        self.perform(effects)
    }

    private static func adviceReasons(_ verdict: Advisor.Verdict, params: [String: Int]) -> String {
        var json = JSONWriter()
        json.field("step", string: "advisor")
        json.field("verdict", string: "pass")
        let chosen = params.keys.sorted().map { "\($0)=\(params[$0]!)" }.joined(separator: ", ")
        json.field("detail", string: "the advisor agreed" + (chosen.isEmpty ? "" : "; parameters within the rules' bounds: " + chosen))
        return "[" + String(decoding: json.finish(), as: UTF8.self) + "]"
    }

    /// The invocation's params with the advisor's (already bounded) parameters and its note.
    static func merging(_ params: [String: Int], confidence: Double, evidence: [String], into text: String) -> String {
        guard var object = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] else { return text }
        for (name, value) in params { object[name] = value }
        object["advisor"] = ["confidence": confidence, "evidence_ids": evidence]
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return text }
        return String(decoding: data, as: UTF8.self)
    }

    /// What the advisor sees: numbers per usable tag, and the bounds of what it may choose.
    private func question(for decision: Decision, settings: ModuleSettings) -> Advisor.Question {
        let windows = self.pipeline.windows(of: decision.usableTags, limit: settings.window)
        let tags = windows.map { window -> (last: Double, count: Int, mean: Double, sd: Double, lo: Double?, hi: Double?) in
            let values = window.values
            let mean = values.isEmpty ? 0 : values.reduce(0, +) / Double(values.count)
            let variance = values.count > 1 ? values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(values.count - 1) : 0
            let limits = self.config.topicMap.tags[window.tag]?.limits
            return (values.last ?? 0, values.count, mean, variance.squareRoot(), limits?.lo ?? limits?.lolo, limits?.hi ?? limits?.hihi)
        }
        var bounds: [String: ClosedRange<Int>] = [:]
        if decision.module == .forecasting { bounds["horizon"] = 1...max(1, settings.horizon * 4) }
        return Advisor.Question(decision: decision, tags: tags, bounds: bounds)
    }

    // MARK: - Acting

    private func perform(_ effects: [Effect]) {
        for effect in effects {
            switch effect {
            case .record(let record):
                self.outputs.record(record)
            case .mirror(let decision):
                _ = self.outputs.publish("\(self.prefix)/decision", Record.decision(decision).payload(), nil)
            case .deliver(let invocation):
                self.deliver(invocation)
            case .consider(let trigger):
                self.consider(trigger)
            case .observe(let observation):
                self.outputs.observe(observation)
            case .advise(let question, let id):
                guard let advisor = self.advisor else { continue }
                Task { [self] in
                    let answer = await advisor.advise(question)
                    self.adviceArrived(answer, question: question, invocation: id)
                }
            case .log(let level, let message, let metadata):
                self.logger.log(level: level, "\(message)", metadata: metadata)
            }
        }
    }

    private func deliver(_ invocation: Invocation) {
        guard let settings = self.config.modules[invocation.module] else { return }
        let resultTopic = "\(self.prefix)/result/\(invocation.module.rawValue)"
        let message = invocation.message(at: self.clock(), timeout: settings.timeout, replyTo: resultTopic)
        switch settings.transport {
        case .mqtt:
            let published = self.outputs.publish(
                "\(self.prefix)/cmd/\(invocation.module.rawValue)", message, (resultTopic, Array(invocation.id.uuidString.lowercased().utf8)))
            if !published { self.deliveryFailed(invocation, reason: "the MQTT client refused the publication (not connected?)") }
        case .command:
            let outputs = self.outputs
            Task { [self] in
                let environment = CommandTransport.environment(allowing: settings.environment)
                switch await outputs.runCommand(settings.command, environment, message, settings.timeout) {
                case .success(let stdout):
                    self.handleResult(module: invocation.module.rawValue, payload: Self.attachID(stdout, invocation: invocation))
                case .failure(let failure):
                    self.deliveryFailed(invocation, reason: failure.description)
                }
            }
        }
    }

    private func deliveryFailed(_ invocation: Invocation, reason: String) {
        let now = self.clock()
        var effects: [Effect] = []
        self.state.withLock { state in
            let engine = self.config.decisionEngine
            if let gaveUp = state.book.deliveryFailed(invocation.id, reason: reason, at: now, maxRetries: engine.maxRetries, backoff: engine.retryBackoff) {
                if case .timedOut(let failed) = gaveUp {
                    self.learn(failed, success: false, benefit: nil, state: &state, effects: &effects)
                    effects.append(.record(.invocation(failed.record)))
                    self.dispatchDeferred(failed.module, now: now, state: &state, effects: &effects)
                }
            }
            effects.append(
                .log(.warning, "module delivery failed", ["module": "\(invocation.module.rawValue)", "invocation_id": "\(invocation.id.uuidString.lowercased())", "error": "\(reason)"]))
        }
        self.perform(effects)
    }

    /// A local command answers one invocation: a result without an `invocation_id` is its answer.
    static func attachID(_ stdout: [UInt8], invocation: Invocation) -> [UInt8] {
        guard var object = (try? JSONSerialization.jsonObject(with: Data(stdout))) as? [String: Any], object["invocation_id"] == nil,
            let data = { () -> Data? in
                object["invocation_id"] = invocation.id.uuidString.lowercased()
                return try? JSONSerialization.data(withJSONObject: object)
            }()
        else { return stdout }
        return Array(data)
    }

    /// The book's deadline of one attempt. A command's own timeout kills it first (and reports the
    /// failure); the book's deadline, a little later, is the backstop.
    private func deliveryTimeout(_ module: ModuleName) -> Duration {
        guard let settings = self.config.modules[module] else { return .seconds(300) }
        return settings.transport == .command ? settings.timeout + .seconds(5) : settings.timeout
    }

    // MARK: - Data

    struct Scope {
        let key: String
        let tags: [String]
        /// The tag whose data must be usable.
        let required: String?
        let unit: String?
    }

    private func scope(of trigger: TriggerEvent, data: ModuleSettings.DataScope) -> Scope {
        let alertTag = trigger.alert?.tag
        let isUnitAlert = trigger.alert?.kind == .multivariate
        let named = trigger.scope
        switch data {
        case .none:
            return Scope(key: named ?? "all", tags: [], required: nil, unit: nil)
        case .market:
            return Scope(key: "market", tags: self.pipeline.tags(withPrefix: "market/"), required: nil, unit: nil)
        case .tag:
            if let tag = alertTag, !isUnitAlert {
                return Scope(key: tag, tags: [tag], required: tag, unit: Self.unit(of: tag))
            }
            // A unit alert, a schedule or a request naming a unit: every tag of it.
            let unit = named ?? "all"
            let tags = self.pipeline.tags(withPrefix: unit + "/")
            return tags.isEmpty ? Scope(key: unit, tags: [unit], required: nil, unit: nil) : Scope(key: unit, tags: tags, required: nil, unit: unit)
        case .unit:
            let unit = isUnitAlert ? (alertTag ?? "all") : (alertTag.map(Self.unit(of:)) ?? named ?? "all")
            let tags = self.pipeline.tags(withPrefix: unit + "/")
            return Scope(key: unit, tags: tags.isEmpty ? [unit] : tags, required: nil, unit: unit)
        }
    }

    /// The path above a tag (`r1/cdu/cdu1/TI-101` → `r1/cdu/cdu1`).
    static func unit(of tag: String) -> String {
        guard let slash = tag.lastIndex(of: "/") else { return tag }
        return String(tag[..<slash])
    }

    /// The invocation's `params`: the recent good samples of the usable tags, and what this kind
    /// of module needs besides (horizon, constraints, objective).
    private func params(for decision: Decision, settings: ModuleSettings, scope: Scope) -> String {
        var text = "{"
        var first = true
        func key(_ name: String) {
            // A flag, not `text.count` (which walks the whole string every time).
            if !first { text += "," }
            first = false
            text += "\"\(name)\":"
        }
        func string(_ value: String) -> String {
            var bytes: [UInt8] = []
            JSONWriter.appendString(value, to: &bytes)
            return String(decoding: bytes, as: UTF8.self)
        }
        func number(_ value: Double) -> String { value.isFinite ? "\(value)" : "null" }
        key("scope")
        text += string(scope.key)
        key("data")
        text += string(settings.data.rawValue)
        let windows = self.pipeline.windows(of: decision.usableTags, limit: settings.window)
        key("tags")
        text += "{"
        var intervals: [Int64] = []
        for (index, window) in windows.enumerated() {
            if index > 0 { text += "," }
            text += string(window.tag) + ":{"
            let info = self.config.topicMap.tags[window.tag]
            if let unit = info?.unit { text += "\"unit\":\(string(unit))," }
            if let info {
                let l = info.limits
                var limits: [String] = []
                if let v = l.lolo { limits.append("\"lolo\":\(number(v))") }
                if let v = l.lo { limits.append("\"lo\":\(number(v))") }
                if let v = l.hi { limits.append("\"hi\":\(number(v))") }
                if let v = l.hihi { limits.append("\"hihi\":\(number(v))") }
                if !limits.isEmpty { text += "\"limits\":{\(limits.joined(separator: ","))}," }
            }
            text += "\"t\":[" + window.times.map(String.init).joined(separator: ",") + "],"
            text += "\"v\":[" + window.values.map(number).joined(separator: ",") + "]}"
            if window.times.count > 1 { intervals.append((window.times.last! - window.times.first!) / Int64(window.times.count - 1)) }
        }
        text += "}"
        switch decision.module {
        case .forecasting:
            key("horizon")
            text += "\(settings.horizon)"
            key("interval_ms")
            text += "\(intervals.sorted().dropFirst(intervals.count / 2).first ?? 0)"
        case .optimization:
            if let alert = decision.trigger.alert, let direction = TriggerRule.direction(of: alert) {
                // Bring the tag back: against the way it went.
                key("objective")
                text += "{\"tag\":\(string(alert.tag)),\"direction\":\(string(direction == .down ? "up" : "down"))}"
            }
        case .analysis, .etl:
            break
        }
        if let extra = decision.trigger.extraParams {
            key("request")
            text += extra
        }
        return text + "}"
    }

    // MARK: - Request payloads

    /// `{"approve": true|false, "by": …}`; anything else (an empty payload, `{}`, `"approve": 1`) is
    /// no answer: decision ids are public on `{prefix}/decision`, so approval must be said outright.
    static func approvalRequest(_ payload: [UInt8]) -> (approve: Bool, by: String?)? {
        struct Answer: Decodable {
            let approve: Bool
            let by: String?
        }
        guard let answer = try? JSONDecoder().decode(Answer.self, from: Data(payload)) else { return nil }
        return (answer.approve, answer.by.map { String($0.prefix(200)) })
    }

    static func manualRequest(_ payload: [UInt8]) -> (scope: String?, by: String?, params: String?)? {
        if payload.isEmpty { return (nil, nil, nil) }
        guard let object = (try? JSONSerialization.jsonObject(with: Data(payload))) as? [String: Any] else { return nil }
        var params: String? = nil
        if let extra = object["params"] {
            guard extra is [String: Any], let data = try? JSONSerialization.data(withJSONObject: extra) else { return nil }
            params = String(decoding: data, as: UTF8.self)
        }
        return ((object["scope"] as? String).map { String($0.prefix(512)) }, (object["by"] as? String).map { String($0.prefix(200)) }, params)
    }
}
