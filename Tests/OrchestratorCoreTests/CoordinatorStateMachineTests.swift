import Foundation
import Logging
import Testing

@testable import OrchestratorCore

/// The coordinator's rules on their own, table-driven: a few events to set the scene, then one
/// event whose effects (their kinds, in order), counters and open invocations are checked.
/// Every module here has `min_history` 5 and a 10 s timeout; the engine retries 3 times after 1 s.
@Suite struct CoordinatorStateMachineTests {
    typealias Counters = CoordinatorStateMachine.Counters

    static let t0: Int64 = 1_700_000_000_000  // 20 s into a minute
    static let tagA = "r1/u1/TI-1"
    static let tagB = "r1/u1/TI-2"

    /// Configuration changes a case asks for.
    enum Tweak: Sendable, Equatable {
        case approval, noRetries, disabled, noAnalysis, schedule, advisor

        func apply(_ config: inout OrchestratorConfig) throws {
            switch self {
            case .approval:
                config.modules[.forecasting]?.requiresApproval = true
                config.modules[.forecasting]?.approvalExpiry = .seconds(60)
            case .noRetries: config.decisionEngine.maxRetries = 0
            case .disabled: config.modules[.forecasting]?.enabled = false
            case .noAnalysis: config.modules[.analysis] = nil
            case .schedule:
                var rule = TriggerRule(name: "every-minute", kind: .schedule, module: .etl)
                rule.schedule = try CronSchedule("* * * * *")
                config.triggers = [rule]
            case .advisor: break
            }
        }
    }

    /// What the record remembers at a restore.
    enum Memory: Sendable { case empty, sent, unsent, firedThisMinute }

    /// One event. Results, approvals, failures and advice concern the last invocation or decision.
    enum Step: Sendable {
        case decide(ModuleName, String)
        case result(ok: Bool, topic: String?)
        case unknownResult
        case approve(Bool)
        case approveUnknown
        /// The clock moves this many seconds, then the timer runs.
        case tick(Int64)
        case sendFailed
        case advice(agreed: Bool)
        case holdSchedules
        case restore(Memory)
        /// Another instance's invocation of forecasting for a tag, heard on `{prefix}/cmd/…` (sharding).
        case heardElsewhere(String)
        /// The open invocations of a tag's scope handed over with their shard.
        case handOver(String)

        static var a: Step { .decide(.forecasting, CoordinatorStateMachineTests.tagA) }
        static var b: Step { .decide(.forecasting, CoordinatorStateMachineTests.tagB) }
        static var ok: Step { .result(ok: true, topic: nil) }
    }

    struct Case: Sendable, CustomTestStringConvertible {
        let name: String
        let tweaks: [Tweak]
        let setup: [Step]
        let event: Step
        /// nil: the call itself returned nil.
        let effects: [String]?
        let active: Int
        let counters: Counters
        var testDescription: String { self.name }

        init(
            _ name: String, with tweaks: [Tweak] = [], setup: [Step] = [], _ event: Step, _ effects: [String]?, active: Int,
            _ counts: (inout Counters) -> Void = { _ in }
        ) {
            self.name = name
            self.tweaks = tweaks
            self.setup = setup
            self.event = event
            self.effects = effects
            self.active = active
            var counters = Counters()
            counts(&counters)
            self.counters = counters
        }
    }

    /// The machine, the clock, and the last decision and invocation seen.
    struct Driver {
        var machine: CoordinatorStateMachine
        var now = CoordinatorStateMachineTests.t0
        var decision: Decision?
        var invocation: Invocation?

        /// The kinds of the effects of one step (schedules fired first, as `schedule:<rule>`).
        mutating func run(_ step: Step) throws -> [String]? {
            switch step {
            case .decide(let module, let tag):
                let trigger = TriggerEvent(rule: "equipment", kind: .equipment, module: module, source: .rules, scope: tag, time: self.now)
                let view = TagView(tag: tag, info: nil, lastReceipt: self.now, lastQuality: .good, goodSamples: 10, openKinds: [])
                let scope = DecisionScope(key: tag, tags: [tag], required: tag)
                guard let outcome = self.machine.decide(trigger, scope: scope, views: [view], params: { _, _ in "{}" }) else { return nil }
                self.decision = outcome.decision
                if let open = self.machine.book.invocation(forDecision: outcome.decision.id) { self.invocation = open }
                return kinds(outcome.effects)
            case .result(let ok, let topic):
                let open = try #require(self.invocation)
                let result = try Self.result(open.id, ok: ok)
                return kinds(self.machine.resultArrived(result, topicModule: topic ?? open.module.rawValue, at: self.now))
            case .unknownResult:
                let result = try Self.result(UUID(), ok: true)
                return kinds(self.machine.resultArrived(result, topicModule: "forecasting", at: self.now))
            case .approve(let yes):
                let decision = try #require(self.decision)
                return self.machine.approve(decision: decision.id, approve: yes, by: "op", via: "test", at: self.now).map(kinds)
            case .approveUnknown:
                return self.machine.approve(decision: UUID(), approve: true, by: "op", via: "test", at: self.now).map(kinds)
            case .tick(let seconds):
                self.now += seconds * 1000
                let (scheduled, effects) = self.machine.tick(at: self.now)
                return scheduled.map { "schedule:\($0.name)" } + kinds(effects)
            case .sendFailed:
                let open = try #require(self.invocation)
                return kinds(self.machine.sendFailed(open, reason: "refused", at: self.now))
            case .advice(let agreed):
                let decision = try #require(self.decision)
                let open = try #require(self.invocation)
                let exchange = LLMExchangeRecord(
                    exchangeID: UUID(), decisionID: decision.id, ts: self.now, provider: "test", model: "test", request: "{}",
                    response: nil, reasoning: nil, status: agreed ? "ok" : "error", latencyMilliseconds: 5, error: agreed ? nil : "timeout")
                let verdict: Advisor.Verdict = agreed ? .agreed(confidence: 0.9, params: [:], evidence: []) : .unavailable("timeout")
                let answer = Advisor.Answer(verdict: verdict, exchange: exchange)
                return kinds(self.machine.adviceArrived(answer, about: decision, invocation: open.id, at: self.now))
            case .holdSchedules:
                self.machine.holdSchedules()
                return []
            case .heardElsewhere(let tag):
                self.machine.invokedElsewhere(.forecasting, scope: tag, kind: "equipment", at: self.now - 1_000)
                return []
            case .handOver(let tag):
                _ = self.machine.handOver { $0 == tag }
                return []
            case .restore(let what):
                var memory = DecisionMemory()
                switch what {
                case .empty: break
                case .firedThisMinute: memory.scheduleFired["every-minute"] = self.now / 60_000
                case .sent, .unsent:
                    var stored = Invocation(
                        decisionID: UUID(), module: .forecasting, triggerKind: "equipment", scopeKey: CoordinatorStateMachineTests.tagA,
                        params: "{}", trigger: "{}")
                    if what == .sent {
                        stored.attempts = 1
                        stored.publishedAt = self.now - 5_000
                    }
                    memory.pending = [(stored, self.now - 5_000)]
                    self.invocation = stored
                }
                self.machine.restore(memory, at: self.now)
                return []
            }
        }

        static func result(_ id: UUID, ok: Bool) throws -> ModuleResult {
            let text = #"{"invocation_id":"\#(id.uuidString.lowercased())","status":"\#(ok ? "ok" : "error")"}"#
            return try ModuleResult.parse(Array(text.utf8)).get()
        }
    }

    // MARK: - Tables

    /// A result completing an invocation; the timer delivering again; the timer giving up.
    static let completed = ["observe", "record:outcome", "record:invocation", "log:info"]
    static let redelivered = ["record:invocation", "send", "log:warning"]
    static let timedOut = ["record:outcome", "record:invocation", "log:error"]

    static let decideCases: [Case] = [
        Case("sufficient data invokes and sends", .a, ["record:invocation", "send"], active: 1) {
            $0.decisions = 1; $0.invoked = 1; $0.sends = 1
        },
        Case("a disabled module is skipped", with: [.disabled], .a, [], active: 0) { $0.decisions = 1; $0.skipped = 1 },
        Case("requires_approval books the invocation unsent", with: [.approval], .a, ["record:invocation"], active: 1) { $0.decisions = 1 },
        Case("max_in_flight reached holds the decision", setup: [.a], .b, [], active: 1) {
            $0.decisions = 2; $0.invoked = 1; $0.sends = 1; $0.deferred = 1
        },
        Case("within the cooldown the same scope is skipped", setup: [.a, .ok], .a, [], active: 0) {
            $0.decisions = 2; $0.invoked = 1; $0.sends = 1; $0.results = 1; $0.skipped = 1
        },
        Case("a module not configured is not decided", with: [.noAnalysis], .decide(.analysis, "market"), nil, active: 0),
        Case("another instance's invocation starts the cooldown here too", setup: [.heardElsewhere(tagA)], .a, [], active: 0) {
            $0.decisions = 1; $0.skipped = 1
        },
        Case("…for its scope only", setup: [.heardElsewhere(tagB)], .a, ["record:invocation", "send"], active: 1) {
            $0.decisions = 1; $0.invoked = 1; $0.sends = 1
        },
        Case("an invocation handed over with its shard is no longer this instance's", setup: [.a, .handOver(tagA)], .tick(11), [], active: 0) {
            $0.decisions = 1; $0.invoked = 1; $0.sends = 1
        },
        Case("low confidence with an advisor asks it first", with: [.advisor], .a, ["record:invocation", "advise"], active: 1) {
            $0.decisions = 1; $0.invoked = 1
        },
    ]

    static let resultCases: [Case] = [
        Case("an ok result completes", setup: [.a], .ok, completed, active: 0) {
            $0.decisions = 1; $0.invoked = 1; $0.sends = 1; $0.results = 1
        },
        Case(
            "an error result completes as a failure", setup: [.a], .result(ok: false, topic: nil),
            completed, active: 0
        ) { $0.decisions = 1; $0.invoked = 1; $0.sends = 1; $0.results = 1; $0.failures = 1 },
        Case("a result for an unknown invocation", .unknownResult, ["log:warning"], active: 0) { $0.unknownResults = 1 },
        Case("a second result is a duplicate", setup: [.a, .ok], .ok, ["log:debug"], active: 0) {
            $0.decisions = 1; $0.invoked = 1; $0.sends = 1; $0.results = 1; $0.duplicateResults = 1
        },
        Case("a result after the timeout is late", with: [.noRetries], setup: [.a, .tick(10)], .ok, ["record:invocation", "log:warning"], active: 0) {
            $0.decisions = 1; $0.invoked = 1; $0.sends = 1; $0.timeouts = 1; $0.failures = 1; $0.lateResults = 1
        },
        Case("a result on another module's topic is refused", setup: [.a], .result(ok: true, topic: "analysis"), ["log:warning"], active: 1) {
            $0.decisions = 1; $0.invoked = 1; $0.sends = 1; $0.rejectedResults = 1
        },
        Case(
            "a result frees the slot of a held decision", setup: [.a, .b], .ok,
            ["observe", "record:outcome", "record:invocation", "log:info", "reconsider"], active: 0
        ) { $0.decisions = 2; $0.invoked = 1; $0.sends = 1; $0.deferred = 1; $0.results = 1 },
    ]

    static let approvalCases: [Case] = [
        Case("approved: sent", with: [.approval], setup: [.a], .approve(true), ["record:approval", "record:invocation", "send", "log:notice"], active: 1) {
            $0.decisions = 1; $0.approvals = 1; $0.sends = 1
        },
        Case("rejected: finished", with: [.approval], setup: [.a], .approve(false), ["record:approval", "record:invocation", "log:notice"], active: 0) {
            $0.decisions = 1; $0.approvals = 1
        },
        Case("an unknown decision", with: [.approval], setup: [.a], .approveUnknown, nil, active: 1) { $0.decisions = 1 },
        Case("a decision already approved", with: [.approval], setup: [.a, .approve(true)], .approve(true), nil, active: 1) {
            $0.decisions = 1; $0.approvals = 1; $0.sends = 1
        },
    ]

    static let timerCases: [Case] = [
        // At the deadline the retry is only scheduled (backoff 1 s); the next tick delivers it.
        Case("past the deadline, nothing yet", setup: [.a], .tick(10), [], active: 1) { $0.decisions = 1; $0.invoked = 1; $0.sends = 1 },
        Case("after the backoff, delivered again", setup: [.a, .tick(10)], .tick(1), redelivered, active: 1) {
            $0.decisions = 1; $0.invoked = 1; $0.sends = 2; $0.retries = 1
        },
        Case("no retries left: timed out", with: [.noRetries], setup: [.a], .tick(10), timedOut, active: 0) {
            $0.decisions = 1; $0.invoked = 1; $0.sends = 1; $0.timeouts = 1; $0.failures = 1
        },
        Case(
            "an approval past its expiry", with: [.approval], setup: [.a], .tick(60), ["record:invocation", "record:approval", "log:warning"],
            active: 0
        ) { $0.decisions = 1; $0.expired = 1 },
        Case("a held decision stays held while the slot is busy", setup: [.a, .b], .tick(1), [], active: 1) {
            $0.decisions = 2; $0.invoked = 1; $0.sends = 1; $0.deferred = 1
        },
        Case(
            "a timeout frees the slot of a held decision", with: [.noRetries], setup: [.a, .b], .tick(10),
            ["record:outcome", "record:invocation", "log:error", "reconsider"], active: 0
        ) { $0.decisions = 2; $0.invoked = 1; $0.sends = 1; $0.deferred = 1; $0.timeouts = 1; $0.failures = 1 },
        Case(
            "a decision held longer than the timeout is dropped", with: [.noRetries], setup: [.a, .b], .tick(11),
            ["record:outcome", "record:invocation", "log:error", "log:warning"], active: 0
        ) { $0.decisions = 2; $0.invoked = 1; $0.sends = 1; $0.deferred = 1; $0.timeouts = 1; $0.failures = 1; $0.deferredDropped = 1 },
    ]

    static let failureCases: [Case] = [
        Case("a failed delivery is retried later", setup: [.a], .sendFailed, ["log:warning"], active: 1) {
            $0.decisions = 1; $0.invoked = 1; $0.sends = 1
        },
        Case("the retry comes after the backoff", setup: [.a, .sendFailed], .tick(1), redelivered, active: 1) {
            $0.decisions = 1; $0.invoked = 1; $0.sends = 2; $0.retries = 1
        },
        Case("past max_retries it ends", with: [.noRetries], setup: [.a], .sendFailed, ["record:outcome", "record:invocation", "log:warning"], active: 0) {
            $0.decisions = 1; $0.invoked = 1; $0.sends = 1; $0.failures = 1
        },
    ]

    static let adviceCases: [Case] = [
        Case(
            "the advisor agrees: its decision recorded, then sent", with: [.advisor], setup: [.a], .advice(agreed: true),
            ["record:llm", "observe", "record:decision", "mirror", "record:invocation", "send"], active: 1
        ) { $0.decisions = 1; $0.invoked = 1; $0.sends = 1; $0.advice = 1 },
        Case(
            "no answer: the rules' decision is sent", with: [.advisor], setup: [.a], .advice(agreed: false),
            ["record:llm", "observe", "log:notice", "record:invocation", "send"], active: 1
        ) { $0.decisions = 1; $0.invoked = 1; $0.sends = 1; $0.advice = 1 },
        Case("advice for an invocation already sent", with: [.advisor], setup: [.a, .advice(agreed: true)], .advice(agreed: true), ["record:llm", "observe"], active: 1) {
            $0.decisions = 1; $0.invoked = 1; $0.sends = 1; $0.advice = 2
        },
    ]

    static let restoreCases: [Case] = [
        Case("restore re-arms a pending invocation", .restore(.sent), [], active: 1),
        Case("a restored invocation completes", setup: [.restore(.sent)], .ok, completed, active: 0) {
            $0.results = 1
        },
        Case("a restored invocation times out at its re-armed deadline", with: [.noRetries], setup: [.restore(.sent)], .tick(5),
             timedOut, active: 0) { $0.timeouts = 1; $0.failures = 1 },
        Case("a restored invocation that awaited advice is sent at once", setup: [.restore(.unsent)], .tick(0),
             redelivered, active: 1) { $0.retries = 1; $0.sends = 1 },
        Case("a schedule fires", with: [.schedule], .tick(0), ["schedule:every-minute"], active: 0),
        Case("a schedule fires once in its minute", with: [.schedule], setup: [.tick(0)], .tick(1), [], active: 0),
        Case("held schedules wait", with: [.schedule], setup: [.holdSchedules], .tick(1), [], active: 0),
        Case("restore lets a held schedule fire", with: [.schedule], setup: [.holdSchedules, .tick(1), .restore(.empty)], .tick(1),
             ["schedule:every-minute"], active: 0),
        Case("restored: fired this minute already", with: [.schedule], setup: [.holdSchedules, .restore(.firedThisMinute)], .tick(1), [], active: 0),
        Case("restored: fires again the next minute", with: [.schedule], setup: [.holdSchedules, .restore(.firedThisMinute)], .tick(40),
             ["schedule:every-minute"], active: 0),
    ]

    // MARK: - Tests

    @Test(arguments: CoordinatorStateMachineTests.decideCases) func decide(_ c: Case) throws { try Self.check(c) }
    @Test(arguments: CoordinatorStateMachineTests.resultCases) func resultArrived(_ c: Case) throws { try Self.check(c) }
    @Test(arguments: CoordinatorStateMachineTests.approvalCases) func approve(_ c: Case) throws { try Self.check(c) }
    @Test(arguments: CoordinatorStateMachineTests.timerCases) func tick(_ c: Case) throws { try Self.check(c) }
    @Test(arguments: CoordinatorStateMachineTests.failureCases) func sendFailed(_ c: Case) throws { try Self.check(c) }
    @Test(arguments: CoordinatorStateMachineTests.adviceCases) func adviceArrived(_ c: Case) throws { try Self.check(c) }
    @Test(arguments: CoordinatorStateMachineTests.restoreCases) func restoreAndSchedules(_ c: Case) throws { try Self.check(c) }

    static func check(_ c: Case) throws {
        var config = OrchestratorConfig.defaults()
        for name in ModuleName.allCases {
            config.modules[name]?.minHistory = 5
            config.modules[name]?.timeout = .seconds(10)
        }
        config.decisionEngine.retryBackoff = .seconds(1)
        for tweak in c.tweaks { try tweak.apply(&config) }
        var driver = Driver(machine: CoordinatorStateMachine(config: config, hasAdvisor: c.tweaks.contains(.advisor)))
        for step in c.setup { _ = try driver.run(step) }
        let effects = try driver.run(c.event)
        #expect(effects == c.effects)
        #expect(driver.machine.counters == c.counters)
        #expect(driver.machine.book.activeInvocations.count == c.active)
    }
}

/// Each effect as a short word, for comparison in order.
private func kinds(_ effects: [CoordinatorStateMachine.Effect]) -> [String] {
    effects.map { effect -> String in
        switch effect {
        case .record(let record):
            switch record {
            case .alert: return "record:alert"
            case .decision: return "record:decision"
            case .invocation: return "record:invocation"
            case .outcome: return "record:outcome"
            case .approval: return "record:approval"
            case .llmExchange: return "record:llm"
            }
        case .mirror: return "mirror"
        case .send: return "send"
        case .reconsider: return "reconsider"
        case .advise: return "advise"
        case .observe: return "observe"
        case .log(let level, _, _): return "log:\(level.rawValue)"
        }
    }
}
