package import Foundation
package import Logging
import Synchronization

/// Decide and act: turns alerts, schedules and requests into decisions (``DecisionEngine``), and
/// invoke decisions into module invocations it follows to their end — result, retry, timeout,
/// approval or expiry — learning from every outcome (docs/decisions.md).
///
/// The rules and the memory are the ``CoordinatorStateMachine``; sending is the
/// ``InvocationDispatcher``; the plant's data comes through ``TagDataSource``. This type holds the
/// state machine behind one lock, feeds it events and carries out the effects it returns after
/// releasing the lock.
///
/// ### Threading
/// ``deliver(_:)`` runs on the ingest thread just after the message that raised the alert has been
/// handled and the alert written (the pipeline's after-message sinks); the decision and the
/// publication happen there, without a hop (the event-to-invocation latency is the product).
/// ``tick(now:)`` is called by a timer (every `decision_engine.tick`); ``run()`` runs the
/// dispatcher's slow jobs (command modules, the advisor) inside the service group.
package final class ModuleCoordinator: AlertSink, InvocationReplies, Sendable {
    package typealias Counters = CoordinatorStateMachine.Counters
    typealias Effect = CoordinatorStateMachine.Effect

    private let state: Mutex<CoordinatorStateMachine>
    /// False on a standby (`ha.enabled`): no decisions, no messages handled, no retries.
    private let acting = Atomic<Bool>(true)
    /// The configuration in force (replaced by ``reconfigure(_:)``).
    private let live: Mutex<OrchestratorConfig>
    private var config: OrchestratorConfig { self.live.withLock { $0 } }
    private let data: any TagDataSource
    private let dispatcher: InvocationDispatcher
    private let logger: Logger
    private let clock: @Sendable () -> Int64
    private let advisor: Advisor?

    package init(
        config: OrchestratorConfig, data: any TagDataSource, outputs: CoordinatorOutputs, logger: Logger, advisor: Advisor? = nil,
        clock: @escaping @Sendable () -> EpochMilliseconds = { .now() }
    ) {
        self.state = Mutex(CoordinatorStateMachine(config: config, hasAdvisor: advisor != nil))
        self.live = Mutex(config)
        self.data = data
        self.dispatcher = InvocationDispatcher(config: config, outputs: outputs, advisor: advisor)
        self.observe = outputs.observe
        self.record = outputs.record
        self.logger = logger
        self.clock = clock
        self.advisor = advisor
    }

    /// Decides and acts from now on (single instance, or the active), or not at all (a standby).
    package func setActing(_ acting: Bool) { self.acting.store(acting, ordering: .relaxed) }

    /// A reloaded configuration: modules, decision engine settings, triggers and the topic map
    /// apply to the next trigger; open invocations carry on.
    package func reconfigure(_ config: OrchestratorConfig) {
        self.live.withLock { $0 = config }
        self.state.withLock { $0.reconfigure(config) }
        self.dispatcher.reconfigure(modules: config.modules)
    }

    private let observe: @Sendable (CoordinatorOutputs.Observation) -> Void
    private let record: @Sendable (Record) -> Void

    /// Topics the orchestrator subscribes to for the decision side.
    package var subscriptions: [String] { CoordinatorMessage.subscriptions(prefix: self.config.topics.prefix) }

    package var counters: Counters { self.state.withLock { $0.counters } }

    package func statistics(triggerKind: String, module: ModuleName) -> OutcomeStatistics {
        self.state.withLock { $0.statistics(triggerKind: triggerKind, module: module) }
    }

    /// Invocations not finished yet.
    /// Decisions by module and action.
    package var decisionTallies: [DecisionTally: Int] { self.state.withLock { $0.decisionTallies } }

    package var activeInvocations: [Invocation] { self.state.withLock { $0.book.activeInvocations } }

    /// Sent and unfinished invocations of a module.
    package func inFlight(_ module: ModuleName) -> Int { self.state.withLock { $0.book.inFlight(module) } }

    /// The advisor, when the LLM is configured (also answers `POST /orchestrate`).
    package var advisorHandle: Advisor? { self.advisor }

    package var advisorCounters: LLMClient.Counters? { self.advisor?.client.counters }

    /// Runs command modules and advisor calls until cancelled (a service of the group).
    package func run() async {
        await self.dispatcher.run(replies: self)
    }

    // MARK: - Inputs

    /// A raised alert fires every trigger rule it matches; a suppressed one (by design, or its tag
    /// out of service) fires none.
    package func deliver(_ event: AlertEvent) {
        guard event.state == .raised, event.suppression == nil else { return }
        for rule in self.config.triggers where rule.matches(event) {
            self.consider(TriggerEvent(rule: rule.name, kind: rule.kind, module: rule.module, source: .rules, alert: event, time: self.clock()))
        }
    }

    /// Data that never arrived fires every `kind: data_gap` trigger whose `min_gap` it reaches: one
    /// decision per gap (its scope is the interval), the interval and the tags attached.
    package func dataMissing(_ gap: DataGap) {
        for rule in self.config.triggers where rule.kind == .dataGap && gap.seconds * 1000 >= Double(rule.minGap.milliseconds) {
            var trigger = TriggerEvent(rule: rule.name, kind: .dataGap, module: rule.module, source: .rules, scope: gap.scopeKey, time: self.clock())
            trigger.attachment = .gap(json: gap.json)
            self.consider(trigger)
        }
    }

    /// A person's request (`{prefix}/request/{module}` or the HTTP API).
    @discardableResult
    package func request(module: ModuleName, scope: String?, by: String?, params: String?, source: DecisionSource = .api) -> Decision? {
        self.consider(
            TriggerEvent(
                rule: "manual", kind: .manual, module: module, source: source, scope: scope, requestedBy: by, extraParams: params,
                time: self.clock()))
    }

    /// Routes a message on one of ``subscriptions`` (acknowledgements excepted: they are the alert
    /// desk's). Returns false if the topic is not one of them.
    @discardableResult
    package func handle(topic: String, payload: [UInt8]) -> Bool {
        guard let message = CoordinatorMessage(topic: topic, prefix: self.config.topics.prefix) else { return false }
        // A standby leaves results, approvals and requests to the active one.
        guard self.acting.load(ordering: .relaxed) else { return true }
        let shownTopic = "\(topic.prefix(200))"
        guard payload.count <= self.config.topics.maxPayloadBytes else {
            self.state.withLock { $0.resultRefused() }
            self.logger.warning(
                "message refused: larger than topics.max_payload_bytes", metadata: ["mqtt.topic": "\(shownTopic)", "bytes": "\(payload.count)"])
            return true
        }
        switch message {
        case .result(let module):
            self.handleResult(module: module, payload: payload)
        case .approve(nil):
            self.logger.warning("approval refused: not a decision id", metadata: ["mqtt.topic": "\(shownTopic)"])
        case .approve(let id?):
            guard let answer = ApprovalRequest.parse(payload) else {
                self.state.withLock { $0.approvalRefused() }
                self.logger.warning(
                    "approval refused: the payload must be {\"approve\": true} or {\"approve\": false}", metadata: ["mqtt.topic": "\(shownTopic)"])
                return true
            }
            self.approve(decision: id, approve: answer.approve, by: answer.by, via: "mqtt")
        case .request(nil):
            self.logger.warning("request refused: unknown module", metadata: ["mqtt.topic": "\(shownTopic)"])
        case .request(let module?):
            guard let request = ManualRequest.parse(payload) else {
                self.logger.warning("request refused: expected a JSON object", metadata: ["mqtt.topic": "\(shownTopic)"])
                return true
            }
            self.request(module: module, scope: request.scope, by: request.by, params: request.params, source: .api)
        }
        return true
    }

    /// A module's result (`{prefix}/result/{module}` or a command's stdout).
    package func handleResult(module: String, payload: [UInt8]) {
        switch ModuleResult.parse(payload) {
        case .failure(let rejection):
            self.state.withLock { $0.resultRefused() }
            self.logger.warning("module result refused", metadata: ["module": "\(module.prefix(64))", "reason": "\(rejection.rawValue)"])
        case .success(let result):
            let now = self.clock()
            self.perform(self.state.withLock { $0.resultArrived(result, topicModule: module, at: now) })
        }
    }

    /// An operator's answer to a decision waiting for approval. False when no decision waits.
    @discardableResult
    package func approve(decision id: UUID, approve: Bool, by: String?, via: String) -> Bool {
        let now = self.clock()
        guard let effects = self.state.withLock({ $0.approve(decision: id, approve: approve, by: by, via: via, at: now) }) else {
            self.logger.warning("approval for no waiting decision", metadata: ["decision_id": "\(id.uuidString.lowercased())", "via": "\(via)"])
            return false
        }
        self.perform(effects)
        return true
    }

    // MARK: - Time

    /// Schedules, timeouts, retries, approval expiry and held decisions.
    package func tick(now: Int64? = nil) {
        guard self.acting.load(ordering: .relaxed) else { return }
        let now = now ?? self.clock()
        let (scheduled, effects) = self.state.withLock { $0.tick(at: now) }
        self.perform(effects)
        for rule in scheduled {
            self.consider(TriggerEvent(rule: rule.name, kind: .schedule, module: rule.module, source: .schedule, scope: rule.scope, time: now))
        }
    }

    /// Until ``restore(_:)``, schedules do not fire: a process restarted in the minute a schedule
    /// fired in must learn that from the record first, or it fires again.
    package func holdSchedules() {
        self.state.withLock { $0.holdSchedules() }
    }

    /// Takes in what the record remembers (an empty memory when the database is away): learned
    /// statistics, last invocations, and the invocations still pending, re-armed. Lets schedules fire.
    package func restore(_ memory: DecisionMemory, schedules: Bool = true) {
        let now = self.clock()
        self.state.withLock { $0.restore(memory, at: now, schedules: schedules) }
        if !memory.pending.isEmpty {
            self.logger.notice("pending invocations re-armed from the record", metadata: ["invocations": "\(memory.pending.count)"])
        }
    }

    /// Lets go of the open invocations (and held decisions) of the scopes `moved` picks: their
    /// shard moved to another instance, which re-arms them from the record.
    package func handOver(scopes moved: @escaping (String) -> Bool) {
        let count = self.state.withLock { $0.handOver(scopes: moved) }
        if count > 0 { self.logger.notice("open invocations handed over with their shard", metadata: ["invocations": "\(count)"]) }
    }

    /// An invocation another instance published on `{prefix}/cmd/{module}` (`sharding.shards`):
    /// its scope and trigger kind are in their cooldowns here too, from the time it says (at most now).
    package func heardInvocation(_ payload: [UInt8]) {
        guard payload.count <= 1 << 22, let message = JSONValue(parsing: payload),
            let module = message.string("module", limit: 64).flatMap(ModuleName.init(rawValue:)),
            let scope = message["params"]?.string("scope", limit: 1024),
            let ts = message["ts"]?.number, ts.isFinite, let time = Int64(exactly: ts.rounded())
        else { return }
        let now = self.clock()
        let kind = message["trigger"]?.string("kind", limit: 64) ?? "manual"
        self.state.withLock { $0.invokedElsewhere(module, scope: scope, kind: kind, at: min(time, now)) }
    }

    // MARK: - Deciding

    @discardableResult
    private func consider(_ trigger: TriggerEvent) -> Decision? {
        guard self.acting.load(ordering: .relaxed) else { return nil }
        let started = ContinuousClock.now
        let config = self.config
        guard let settings = config.modules[trigger.module] else { return nil }
        let scope = DecisionScope.of(trigger, data: settings.data, tags: self.data)
        let views = self.data.views(of: scope.tags, window: settings.window)
        let made = self.state.withLock { state in
            state.decide(trigger, scope: scope, views: views) { decision, settings in
                InvocationParams(
                    decision: decision, settings: settings, scopeKey: scope.key,
                    windows: self.data.windows(of: decision.usableTags, limit: settings.window), topicMap: config.topicMap
                ).json()
            }
        }
        guard let (decision, effects) = made else { return nil }
        let latency = Int64((ContinuousClock.now - started).timeInterval * 1_000_000)
        let record = decision.record(latencyMicroseconds: latency)
        // The decision first: the invocation row refers to it.
        self.perform([.record(.decision(record)), .mirror(record)])
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

    package func sendFailed(_ invocation: Invocation, reason: String) {
        let now = self.clock()
        self.perform(self.state.withLock { $0.sendFailed(invocation, reason: reason, at: now) })
    }

    package func adviceArrived(_ answer: Advisor.Answer, about decision: Decision, invocation id: UUID) {
        let now = self.clock()
        self.perform(self.state.withLock { $0.adviceArrived(answer, about: decision, invocation: id, at: now) })
    }

    /// What the advisor sees: numbers per usable tag, and the bounds of what it may choose.
    private func question(for decision: Decision) -> Advisor.Question? {
        let config = self.config
        guard let settings = config.modules[decision.module] else { return nil }
        let windows = self.data.windows(of: decision.usableTags, limit: settings.window)
        let tags = windows.map { window in
            let limits = config.topicMap.tags[window.tag]?.limits
            return Advisor.Question.tag(values: window.values, lo: limits?.lo ?? limits?.lolo, hi: limits?.hi ?? limits?.hihi)
        }
        let bounds = Advisor.Question.bounds(module: decision.module, horizon: settings.horizon)
        return Advisor.Question(decision: decision, tags: tags, bounds: bounds)
    }

    // MARK: - Acting

    private func perform(_ effects: [Effect]) {
        for effect in effects {
            switch effect {
            case .record(let record):
                self.record(record)
            case .mirror(let decision):
                self.dispatcher.mirror(decision)
            case .send(let invocation):
                self.dispatcher.send(invocation, at: self.clock(), replies: self)
            case .reconsider(let trigger):
                self.consider(trigger)
            case .observe(let observation):
                self.observe(observation)
            case .advise(let decision, let id):
                if let question = self.question(for: decision) { self.dispatcher.ask(question, invocation: id) }
            case .log(let level, let message, let metadata):
                self.logger.log(level: level, "\(message)", metadata: metadata)
            }
        }
    }
}
