import Foundation
import Yams

/// `orchestrator.modules.<name>`: how a downstream module is reached and what the selection
/// criteria ask before invoking it (docs/configuration.md, "`orchestrator`"; docs/decisions.md,
/// "Selection criteria").
package struct ModuleSettings: Sendable, Equatable {
    /// How invocations reach the module.
    package enum Transport: String, Sendable, CaseIterable {
        /// `{prefix}/cmd/{module}`, results on `{prefix}/result/{module}`.
        case mqtt
        /// A local command: the invocation JSON on stdin, the result JSON on stdout.
        case command
    }

    /// Which tags' recent windows an invocation carries.
    package enum DataScope: String, Sendable, CaseIterable {
        /// The tag that triggered it.
        case tag
        /// Every tag of the triggering tag's process unit.
        case unit
        /// Every market instrument.
        case market
        /// No data (e.g. ETL, which reads its own sources).
        case none
    }

    package var enabled = true
    package var timeout: Duration = .seconds(300)
    package var transport: Transport = .mqtt
    /// argv of the command transport (`command: [python3, workers/forecast.py]`).
    package var command: [String] = []
    /// Environment variables the command is given (names; their values come from the orchestrator's
    /// environment). Nothing else crosses: the orchestrator's secrets stay its own.
    package var environment = CommandTransport.defaultEnvironment
    /// Invocations of this module in flight at once; more are deferred.
    package var maxInFlight = 1
    /// No second invocation for the same module and scope sooner than this after the last.
    package var cooldown: Duration = .seconds(900)
    /// Good samples each tag of the scope needs.
    package var minHistory = 30
    /// The newest sample of a tag must be at most this old.
    package var maxAge: Duration = .seconds(300)
    package var data: DataScope = .tag
    /// Samples per tag in the invocation.
    package var window = 120
    /// Forecast horizon in steps (forecasting).
    package var horizon = 12
    /// The length of one forecast step (forecasting); nil: the tags' median sampling interval.
    package var step: Duration?
    /// Cost of one invocation, in the units of `metrics.benefit`.
    package var cost = 0.5
    /// Benefit per successful invocation assumed before any outcome is known (the prior's mean).
    package var priorBenefit = 1.0
    /// Invocations below this priority are skipped.
    package var minPriority = 0.0
    /// Not published until an operator approves (HTTP or `{prefix}/approve/{decision_id}`).
    package var requiresApproval = false
    package var approvalExpiry: Duration = .seconds(1800)

    /// The defaults for one module: what data each kind of module needs.
    package init(_ name: ModuleName) {
        switch name {
        case .forecasting:
            self.data = .tag
        case .analysis:
            self.data = .market
            self.minHistory = 2
        case .optimization:
            self.data = .unit
            self.timeout = .seconds(600)
            self.cooldown = .seconds(3600)
        case .etl:
            self.data = .none
            self.timeout = .seconds(900)
            self.minHistory = 0
        }
    }
}

/// `orchestrator.decision_engine`.
package struct DecisionEngineSettings: Sendable, Equatable {
    /// Below this rule confidence the LLM advisor is asked (when configured).
    package var confidenceThreshold = 0.8
    /// Retries after a timed-out or failed delivery, so at most `max_retries + 1` attempts.
    package var maxRetries = 3
    package var cacheTTL: Duration = .seconds(3600)
    /// Wait before the first retry, doubled for each further one (capped at 5 minutes).
    package var retryBackoff: Duration = .seconds(1)
    /// A module that cost-benefit keeps skipping is still tried this often, to learn whether it
    /// has become worth it (0: never).
    package var exploreEvery: Duration = .seconds(86400)
    /// Deferred decisions waiting for a free slot, per module; older ones are dropped (and recorded).
    package var maxDeferred = 100
    /// How often the engine looks at timeouts, retries, schedules and approvals.
    package var tick: Duration = .milliseconds(100)
    /// The longest a low-confidence invocation waits for the LLM advisor (at most `llm.timeout`).
    package var adviceWait: Duration = .seconds(30)
    /// How many links a chain of modules may have after its first decision (0: results fire nothing).
    package var maxChainDepth = 2

    package init() {}

    mutating func read(_ engine: YAMLSection) {
        self.confidenceThreshold = engine.double("confidence_threshold", default: self.confidenceThreshold, in: 0...1)
        self.maxRetries = engine.int("max_retries", default: self.maxRetries, in: 0...100)
        self.cacheTTL = engine.duration("cache_ttl", default: self.cacheTTL)
        self.retryBackoff = engine.duration("retry_backoff", default: self.retryBackoff)
        self.exploreEvery = engine.duration("explore_every", default: self.exploreEvery)
        self.maxDeferred = engine.int("max_deferred", default: self.maxDeferred, in: 0...1_000_000)
        self.tick = engine.duration("tick", default: self.tick)
        self.adviceWait = engine.duration("advice_wait", default: self.adviceWait)
        self.maxChainDepth = engine.int("max_chain_depth", default: self.maxChainDepth, in: 0...10)
        if self.tick < .milliseconds(10) {
            engine.diagnostics.report(.error, engine.keyPath("tick"), at: engine.markOf("tick"), "must be at least 10ms")
            self.tick = .milliseconds(100)
        }
        engine.finish()
    }
}

extension OrchestratorConfig {
    mutating func readModules(_ modules: YAMLSection) {
        for name in ModuleName.allCases {
            guard let module = modules.section(name.rawValue) else { continue }
            var settings = ModuleSettings(name)
            settings.enabled = module.bool("enabled", default: settings.enabled)
            settings.timeout = module.duration("timeout", default: settings.timeout)
            settings.transport = module.choice("transport", default: settings.transport)
            if let node = module.node("command") {
                if case .sequence(let items) = node, !items.isEmpty, items.allSatisfy({ $0.scalar != nil }) {
                    settings.command = items.compactMap { item in
                        item.scalar.map { module.diagnostics.substitute($0.string, key: module.keyPath("command"), at: item.mark) }
                    }
                } else {
                    module.diagnostics.report(
                        .error, module.keyPath("command"), at: node.mark, "expected a list: [program, argument, ...]")
                }
            }
            if let node = module.node("environment") {
                if case .sequence(let items) = node, items.allSatisfy({ $0.scalar.map { ConfigDiagnostics.isVariableName($0.string) } ?? false }) {
                    settings.environment = items.compactMap { $0.scalar?.string }
                } else {
                    module.diagnostics.report(
                        .error, module.keyPath("environment"), at: node.mark, "expected a list of variable names: [PATH, HOME, ...]")
                }
            }
            if settings.transport == .command && settings.command.isEmpty {
                module.diagnostics.report(
                    .error, module.keyPath("command"), at: module.markOf("transport"), "transport: command needs a command")
            }
            settings.maxInFlight = module.int("max_in_flight", default: settings.maxInFlight, in: 1...10_000)
            settings.cooldown = module.duration("cooldown", default: settings.cooldown)
            settings.minHistory = module.int("min_history", default: settings.minHistory, in: 0...100_000)
            settings.maxAge = module.duration("max_age", default: settings.maxAge)
            settings.data = module.choice("data", default: settings.data)
            settings.window = module.int("window", default: settings.window, in: 1...100_000)
            settings.horizon = module.int("horizon", default: settings.horizon, in: 1...100_000)
            if module.node("step") != nil {
                let step = module.duration("step", default: .zero)
                if step > .zero { settings.step = step } else {
                    module.diagnostics.report(.error, module.keyPath("step"), at: module.markOf("step"), "must be positive")
                }
            }
            settings.cost = module.double("cost", default: settings.cost, in: 0...1e12)
            settings.priorBenefit = module.double("prior_benefit", default: settings.priorBenefit, in: 0...1e12)
            settings.minPriority = module.double("min_priority", default: settings.minPriority, in: 0...1e6)
            settings.requiresApproval = module.bool("requires_approval", default: settings.requiresApproval)
            settings.approvalExpiry = module.duration("approval_expiry", default: settings.approvalExpiry)
            if settings.timeout <= .zero {
                module.diagnostics.report(.error, module.keyPath("timeout"), at: module.markOf("timeout"), "must be positive")
                settings.timeout = .seconds(300)
            }
            module.finish()
            self.modules[name] = settings
        }
        modules.finish()
    }
}
