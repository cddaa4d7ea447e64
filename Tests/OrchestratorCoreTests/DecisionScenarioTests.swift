import Foundation
import Logging
import Synchronization
import Testing

@testable import DangTools
@testable import OrchestratorCore

private func tagMap(_ entries: [(String, TagInfo)]) -> TopicMap {
    var map = TopicMap()
    for (tag, info) in entries { map.tags[tag] = info }
    return map
}

private let furnace = "r1/cdu/cdu1/TI-101"
private let flow = "r1/cdu/cdu1/FI-101"
private let efficiency = "r1/cdu/cdu1/EFF-101"

private func limitInfo(criticality: TagInfo.Criticality = .medium) -> TagInfo {
    TagInfo(unit: "degC", criticality: criticality, limits: .init(lo: 340, hi: 372, deadband: 1))
}

private func equipmentTrigger(_ module: ModuleName = .forecasting, alerts: Set<AlertKind> = [.limit, .anomaly]) -> TriggerRule {
    var rule = TriggerRule(name: "equipment", kind: .equipment, module: module)
    rule.alertKinds = alerts
    rule.minSeverity = .warning
    return rule
}

/// Scripted scenarios: sample streams in, expected invocations out (docs/decisions.md,
/// "Scenario suite and selection accuracy"). Every one asserts what must be invoked and what
/// must not.
@Suite struct DecisionScenarioTests {
    /// Normal operation, then a limit breach on the furnace outlet.
    func breach(_ h: DecisionHarness, tag: String = furnace, normal: Int = 20) {
        for i in 0..<normal { h.sample(tag, 355 + Double(i % 3)) }
        h.sample(tag, 380)
    }

    @Test func `a limit breach invokes forecasting once, carrying that tag's recent good samples`() throws {
        let h = DecisionHarness(map: tagMap([(furnace, limitInfo())])) { $0.triggers = [equipmentTrigger()] }
        self.breach(h)
        for _ in 0..<5 { h.sample(furnace, 381) }
        let invocations = h.invocations("forecasting")
        #expect(invocations.count == 1)
        let params = try #require(invocations.first?["params"] as? [String: Any])
        let tags = try #require(params["tags"] as? [String: Any])
        let window = try #require(tags[furnace] as? [String: Any])
        #expect((window["v"] as? [Double])?.last == 380)
        #expect((window["v"] as? [Double])?.count == 21)
        #expect(params["horizon"] as? Int == 12)
        #expect(invocations.first?["reply_to"] as? String == "apos/result/forecasting")
        #expect(h.decisions("forecasting", action: "invoke").count == 1)
        #expect(h.decisions("forecasting", action: "invoke").first.map { DecisionHarness.reasons($0).count } == 8)
    }

    @Test func `a frozen critical sensor raises flatline and does not get forecasting on its data`() {
        var info = limitInfo(criticality: .high)
        info.flatline = .init(tolerance: 0, samples: 10)
        let h = DecisionHarness(map: tagMap([(furnace, info)])) {
            $0.triggers = [equipmentTrigger(alerts: [.flatline, .limit, .anomaly])]
        }
        for i in 0..<20 { h.sample(furnace, 355 + Double(i % 3)) }
        for _ in 0..<30 { h.sample(furnace, 356) }
        #expect(h.invocations("forecasting").isEmpty)
        let skipped = h.decisions("forecasting", action: "skip")
        #expect(skipped.count == 1)
        #expect(skipped.first.map { DecisionHarness.reasons($0)["data_quality"] } == "skip")
        #expect(skipped.first?.reasons.contains("flatline alert open") == true)
    }

    @Test func `a 5 % Brent move in an hour invokes analysis once, not once per sample`() {
        var rule = TriggerRule(name: "market-move", kind: .market, module: .analysis)
        rule.alertKinds = [.marketMove]
        let h = DecisionHarness(map: tagMap([("market/brent", TagInfo(unit: "USD/bbl"))])) {
            $0.triggers = [rule]
            $0.detection.marketMoves = [.init(window: .seconds(3600), thresholdPercent: 5)]
        }
        // A quiet hour at 80 $, then a steady climb of 5 % an hour for 80 minutes, one quote a minute.
        for _ in 0..<60 {
            h.sample("market/brent", 80)
            h.advance(seconds: 59)
        }
        for minute in 1...80 {
            h.sample("market/brent", 80 * (1 + 0.05 * Double(minute) / 60))
            h.advance(seconds: 59)
        }
        // One invocation (delivered again while nobody answers), one decision.
        #expect(Set(h.invocations("analysis").compactMap { $0["invocation_id"] as? String }).count == 1)
        #expect(h.decisions("analysis").count == 1)
        let params = h.invocations("analysis").first?["params"] as? [String: Any]
        #expect((params?["tags"] as? [String: Any])?["market/brent"] != nil)
    }

    @Test func `a furnace efficiency downtrend invokes optimization within the trend window, asking to bring it up`() throws {
        var rule = TriggerRule(name: "performance", kind: .performance, module: .optimization)
        rule.alertKinds = [.trend]
        rule.direction = .down
        rule.tags = [TagPattern("*/EFF-*")]
        var info = TagInfo(unit: "%", limits: .init(lo: 82, hi: 96))
        info.minTrendPerHour = 0.5
        let h = DecisionHarness(map: tagMap([(efficiency, info), (flow, TagInfo(limits: .init(lo: 520, hi: 720)))])) { $0.triggers = [rule] }
        var random = SplitMix64(seed: 3)
        for _ in 0..<400 {
            h.sample(efficiency, 91 + 0.1 * random.gaussian())
            h.sample(flow, 600 + random.gaussian())
        }
        #expect(h.invocations("optimization").isEmpty)
        var invokedAfter: Int?
        for step in 0..<600 {
            h.sample(efficiency, 91 - 0.01 * Double(step) + 0.1 * random.gaussian())
            if invokedAfter == nil, !h.invocations("optimization").isEmpty { invokedAfter = step }
        }
        // The trend window is 300 samples (30 blocks of 10).
        let after = try #require(invokedAfter)
        #expect(after <= 300)
        #expect(h.decisions("optimization", action: "invoke").count == 1)
        let params = try #require(h.invocations("optimization").first?["params"] as? [String: Any])
        let objective = params["objective"] as? [String: String]
        #expect(objective == ["tag": efficiency, "direction": "up"])
        // Data scope `unit`: both tags of the unit go with it.
        #expect(Set(((params["tags"] as? [String: Any]) ?? [:]).keys) == [efficiency, flow])
    }

    @Test func `an efficiency uptrend does not invoke optimization when the trigger asks for down`() {
        var rule = TriggerRule(name: "performance", kind: .performance, module: .optimization)
        rule.alertKinds = [.trend]
        rule.direction = .down
        var info = TagInfo(unit: "%")
        info.minTrendPerHour = 0.5
        let h = DecisionHarness(map: tagMap([(efficiency, info)])) { $0.triggers = [rule] }
        var random = SplitMix64(seed: 4)
        for _ in 0..<400 { h.sample(efficiency, 88 + 0.1 * random.gaussian()) }
        for step in 0..<600 { h.sample(efficiency, 88 + 0.01 * Double(step) + 0.1 * random.gaussian()) }
        #expect(h.invocations("optimization").isEmpty)
        #expect(h.decisions.isEmpty)
    }

    @Test func `a module that times out is delivered max_retries more times, then recorded as timed out`() throws {
        let h = DecisionHarness(map: tagMap([(furnace, limitInfo())])) {
            $0.triggers = [equipmentTrigger()]
            $0.decisionEngine.maxRetries = 2
        }
        self.breach(h)
        #expect(h.invocations("forecasting").count == 1)
        for _ in 0..<60 { h.advance(seconds: 1) }
        let deliveries = h.invocations("forecasting")
        #expect(deliveries.count == 3)
        #expect(Set(deliveries.compactMap { $0["invocation_id"] as? String }).count == 1)
        #expect(deliveries.compactMap { $0["attempt"] as? Int } == [1, 2, 3])
        let record = try #require(h.invocationRecords.values.first)
        #expect(record.status == "timeout")
        #expect(record.attempts == 3)
        #expect(h.coordinator.statistics(triggerKind: "equipment", module: .forecasting) == OutcomeStatistics(invocations: 1, successes: 0))
        #expect(h.coordinator.counters.timeouts == 1)
    }

    @Test func `a result completes its invocation and teaches the statistics its benefit`() throws {
        let h = DecisionHarness(map: tagMap([(furnace, limitInfo())])) { $0.triggers = [equipmentTrigger()] }
        self.breach(h)
        let invocation = try #require(h.invocations("forecasting").first)
        h.answer(invocation, module: "forecasting", benefit: 2.5)
        let record = try #require(h.invocationRecords.values.first)
        #expect(record.status == "ok")
        #expect(record.result?.contains("2.5") == true)
        let statistics = h.coordinator.statistics(triggerKind: "equipment", module: .forecasting)
        #expect(statistics.invocations == 1 && statistics.successes == 1 && statistics.benefitSum == 2.5)
        #expect(h.coordinator.activeInvocations.isEmpty)
        let outcome = h.capture.records.withLock { $0 }.compactMap { if case .outcome(let o) = $0 { o } else { nil } }.last
        #expect(outcome?.statistics.benefitSum == 2.5)
    }

    @Test func `a duplicate result is ignored and a result after the timeout is recorded as late, not counted`() throws {
        let h = DecisionHarness(map: tagMap([(furnace, limitInfo()), (flow, limitInfo())])) {
            $0.triggers = [equipmentTrigger()]
            $0.decisionEngine.maxRetries = 0
        }
        self.breach(h)
        let first = try #require(h.invocations("forecasting").first)
        h.answer(first, module: "forecasting")
        h.answer(first, module: "forecasting")
        #expect(h.coordinator.counters.duplicateResults == 1)
        #expect(h.coordinator.statistics(triggerKind: "equipment", module: .forecasting).invocations == 1)

        self.breach(h, tag: flow)
        let second = try #require(h.invocations("forecasting").last)
        for _ in 0..<12 { h.advance(seconds: 1) }
        h.answer(second, module: "forecasting")
        #expect(h.coordinator.counters.lateResults == 1)
        let id = try #require((second["invocation_id"] as? String).flatMap(UUID.init(uuidString:)))
        let record = try #require(h.invocationRecords[id])
        #expect(record.status == "timeout")
        #expect(record.result?.contains("\"late\":true") == true)
        #expect(h.coordinator.statistics(triggerKind: "equipment", module: .forecasting).invocations == 2)
    }

    @Test func `results for unknown invocations and malformed results are counted, never trusted`() throws {
        let h = DecisionHarness(map: tagMap([(furnace, limitInfo())])) { $0.triggers = [equipmentTrigger()] }
        h.coordinator.handle(topic: "apos/result/forecasting", payload: Array(#"{"invocation_id":"\#(UUID().uuidString)","status":"ok"}"#.utf8))
        for bad in [#"{"status":"ok"}"#, "not json", #"{"invocation_id":"x","status":"ok"}"#, #"{"invocation_id":"\#(UUID().uuidString)","status":"maybe"}"#,
            #"{"invocation_id":"\#(UUID().uuidString)","status":"ok","metrics":{"benefit":"lots"}}"#, "[1,2]"]
        {
            h.coordinator.handle(topic: "apos/result/forecasting", payload: Array(bad.utf8))
        }
        #expect(h.coordinator.counters.unknownResults == 1)
        #expect(h.coordinator.counters.rejectedResults == 6)
        // A real invocation's id on another module's result topic, or a result past the size limit: refused.
        self.breach(h)
        let invocation = try #require(h.invocations("forecasting").first)
        h.answer(invocation, module: "optimization")
        h.coordinator.handle(topic: "apos/result/forecasting", payload: [UInt8](repeating: 0x20, count: 70_000))
        #expect(h.coordinator.counters.rejectedResults == 8)
        #expect(h.coordinator.activeInvocations.count == 1)
    }

    @Test func `a second episode within the cooldown is skipped with the cooldown's reason`() throws {
        let h = DecisionHarness(map: tagMap([(furnace, limitInfo())])) { $0.triggers = [equipmentTrigger()] }
        self.breach(h)
        h.answer(try #require(h.invocations("forecasting").first), module: "forecasting")
        for _ in 0..<10 { h.sample(furnace, 355) }  // clears
        h.sample(furnace, 381)  // a new episode
        #expect(h.invocations("forecasting").count == 1)
        let skipped = try #require(h.decisions("forecasting", action: "skip").last)
        #expect(DecisionHarness.reasons(skipped)["cooldown"] == "skip")
    }

    @Test func `a trigger while an invocation for the same scope is pending is deduplicated`() throws {
        let h = DecisionHarness(map: tagMap([(furnace, limitInfo())])) {
            $0.triggers = [equipmentTrigger(), { var r = equipmentTrigger(); r.name = "second"; return r }()]
        }
        self.breach(h)
        #expect(h.invocations("forecasting").count == 1)
        let skipped = try #require(h.decisions("forecasting", action: "skip").first)
        #expect(DecisionHarness.reasons(skipped)["deduplicate"] == "skip")
    }

    @Test func `beyond max_in_flight a decision is deferred, then invoked when a slot frees`() throws {
        let h = DecisionHarness(map: tagMap([(furnace, limitInfo()), (flow, limitInfo())])) {
            $0.triggers = [equipmentTrigger()]
            $0.modules[.forecasting]?.maxInFlight = 1
            $0.modules[.forecasting]?.timeout = .seconds(120)
        }
        self.breach(h)
        self.breach(h, tag: flow)
        #expect(h.invocations("forecasting").count == 1)
        #expect(h.decisions("forecasting", action: "defer").count == 1)
        h.answer(try #require(h.invocations("forecasting").first), module: "forecasting")
        let all = h.invocations("forecasting")
        #expect(all.count == 2)
        let scope = (all.last?["params"] as? [String: Any])?["scope"] as? String
        #expect(scope == flow)
    }

    @Test func `a disabled module is never invoked, and the decision says so`() throws {
        let h = DecisionHarness(map: tagMap([(furnace, limitInfo())])) {
            $0.triggers = [equipmentTrigger()]
            $0.modules[.forecasting]?.enabled = false
        }
        self.breach(h)
        #expect(h.invocations("forecasting").isEmpty)
        #expect(DecisionHarness.reasons(try #require(h.decisions("forecasting").first))["enabled"] == "skip")
    }

    @Test func `too little history skips the invocation`() throws {
        let h = DecisionHarness(map: tagMap([(furnace, limitInfo())])) {
            $0.triggers = [equipmentTrigger()]
            $0.modules[.forecasting]?.minHistory = 50
        }
        self.breach(h, normal: 20)
        #expect(h.invocations("forecasting").isEmpty)
        let skipped = try #require(h.decisions("forecasting", action: "skip").first)
        #expect(skipped.reasons.contains("needs 50"))
    }

    @Test func `a scheduled optimization waits for stale data to be fresh, and names the stale tag`() throws {
        var rule = TriggerRule(name: "nightly", kind: .schedule, module: .optimization)
        rule.schedule = try CronSchedule("* * * * *")
        rule.scope = "r1/cdu/cdu1"
        let h = DecisionHarness(map: tagMap([(furnace, limitInfo())])) {
            $0.triggers = [rule]
            $0.modules[.optimization]?.maxAge = .seconds(60)
        }
        for _ in 0..<20 { h.sample(furnace, 355) }
        h.advance(seconds: 600)
        #expect(h.invocations("optimization").isEmpty)
        // The first minute's run had too little history; the one ten minutes later finds the data stale.
        let skipped = try #require(h.decisions("optimization", action: "skip").last)
        #expect(skipped.reasons.contains("s old"))
        #expect(skipped.source == "schedule")
    }

    @Test func `a schedule fires once in its minute, in the plant's time zone`() throws {
        var rule = TriggerRule(name: "nightly", kind: .schedule, module: .etl)
        rule.schedule = try CronSchedule("30 2 * * *")
        let h = DecisionHarness(map: TopicMap()) {
            $0.triggers = [rule]
            $0.timeZone = "Europe/Amsterdam"
        }
        // 2023-11-15 01:29:00 UTC = 02:29 in Amsterdam (CET).
        h.capture.now.store(1_700_011_740_000, ordering: .relaxed)
        for _ in 0..<180 { h.advance(seconds: 1) }
        // One decision; the deliveries after the first are retries of the same invocation (nobody answers).
        #expect(h.decisions("etl").count == 1)
        #expect(Set(h.invocations("etl").compactMap { $0["invocation_id"] as? String }).count == 1)
        let sent = try #require((h.invocations("etl").first?["ts"] as? NSNumber)?.int64Value)
        #expect(sent >= 1_700_011_800_000 && sent < 1_700_011_860_000)
    }

    @Test func `after a restart a schedule waits for the record, and does not fire again in the minute it fired in`() throws {
        var rule = TriggerRule(name: "hourly", kind: .schedule, module: .etl)
        rule.schedule = try CronSchedule("* * * * *")
        let h = DecisionHarness(map: TopicMap()) { $0.triggers = [rule] }
        h.capture.now.store(1_700_011_785_000, ordering: .relaxed)  // 45 s into a minute
        h.coordinator.holdSchedules()
        h.advance(seconds: 1)
        #expect(h.decisions("etl").isEmpty)  // held: the record is being read
        var memory = DecisionMemory()
        memory.scheduleFired["hourly"] = h.time / 60_000  // the previous process fired in this minute
        h.coordinator.restore(memory)
        for _ in 0..<10 { h.advance(seconds: 1) }
        #expect(h.decisions("etl").isEmpty)
        for _ in 0..<10 { h.advance(seconds: 1) }  // into the next minute
        #expect(h.decisions("etl").count == 1)
    }

    @Test func `a module that keeps failing for a trigger kind is invoked less, and only for that kind`() throws {
        let h = DecisionHarness(map: tagMap([(furnace, limitInfo()), (flow, limitInfo())])) {
            $0.triggers = [equipmentTrigger()]
            $0.modules[.forecasting]?.cooldown = .zero
        }
        var invoked = 0
        for round in 0..<8 {
            self.breach(h, normal: 12)
            if let invocation = h.invocations("forecasting").dropFirst(invoked).first {
                invoked += 1
                h.answer(invocation, module: "forecasting", status: "error", benefit: nil)
            }
            for _ in 0..<10 { h.sample(furnace, 355) }
            _ = round
        }
        // Prior 2 of 3: after n failures the expected benefit is 2/(n+3) × priority 2, below the cost 0.5 from n = 6.
        #expect(invoked < 8)
        let statistics = h.coordinator.statistics(triggerKind: "equipment", module: .forecasting)
        #expect(statistics.successes == 0 && statistics.invocations == invoked)
        let last = try #require(h.decisions("forecasting").last)
        #expect(DecisionHarness.reasons(last)["cost_benefit"] == "skip")
        // A person's request is still honoured.
        let decision = h.coordinator.request(module: .forecasting, scope: furnace, by: "operator", params: nil)
        #expect(decision?.action == .invoke)
    }

    @Test func `invocations that bring no benefit are skipped once learned, and tried again after explore_every`() throws {
        let h = DecisionHarness(map: tagMap([(furnace, limitInfo())])) {
            $0.triggers = [equipmentTrigger()]
            $0.modules[.forecasting]?.cooldown = .zero
            $0.modules[.forecasting]?.cost = 1
            $0.decisionEngine.exploreEvery = .seconds(3600)
        }
        var invoked = 0
        for _ in 0..<6 {
            self.breach(h, normal: 12)
            if let invocation = h.invocations("forecasting").dropFirst(invoked).first {
                invoked += 1
                h.answer(invocation, module: "forecasting", benefit: 0)
            }
            for _ in 0..<10 { h.sample(furnace, 355) }
        }
        let before = invoked
        #expect(before < 6)
        #expect(DecisionHarness.reasons(try #require(h.decisions("forecasting").last))["cost_benefit"] == "skip")
        h.advance(seconds: 3601)
        // The hour without samples is a data-quality gap; its episode must be out of the 120-sample
        // window before the tag's data is usable again (docs/decisions.md, "Recent data-quality episodes").
        self.breach(h, normal: 140)
        #expect(h.invocations("forecasting").count == before + 1)
        #expect(h.decisions("forecasting").last?.reasons.contains("exploring") == true)
    }

    @Test func `an optimization that requires approval waits for the operator, who is on the record`() throws {
        let h = DecisionHarness(map: tagMap([(furnace, limitInfo())])) {
            $0.triggers = [equipmentTrigger(.optimization)]
            $0.modules[.optimization]?.requiresApproval = true
        }
        self.breach(h)
        #expect(h.invocations("optimization").isEmpty)
        let pending = try #require(h.decisions("optimization", action: "defer").first)
        #expect(DecisionHarness.reasons(pending)["approval"] == "defer")
        #expect(h.invocationRecords.values.first?.status == "pending")
        // Decision ids are public on apos/decision: an empty payload, {} or a number approves nothing.
        for payload in ["", "{}", #"{"approve":1}"#, #"{"approve":"yes"}"#, "true", #"{"by":"someone"}"#] {
            h.coordinator.handle(topic: "apos/approve/\(pending.decisionID.uuidString.lowercased())", payload: Array(payload.utf8))
        }
        #expect(h.invocations("optimization").isEmpty)
        #expect(h.coordinator.counters.refusedApprovals == 6)
        h.coordinator.handle(
            topic: "apos/approve/\(pending.decisionID.uuidString.lowercased())", payload: Array(#"{"approve":true,"by":"shift lead"}"#.utf8))
        #expect(h.invocations("optimization").count == 1)
        let approvals = h.capture.records.withLock { $0 }.compactMap { if case .approval(let a) = $0 { a } else { nil } }
        #expect(approvals == [ApprovalRecord(decisionID: pending.decisionID, state: .approved, by: "shift lead", via: "mqtt", at: h.time)])
    }

    @Test func `an approval nobody gives expires, and the invocation is never published`() throws {
        let h = DecisionHarness(map: tagMap([(furnace, limitInfo())])) {
            $0.triggers = [equipmentTrigger(.optimization)]
            $0.modules[.optimization]?.requiresApproval = true
            $0.modules[.optimization]?.approvalExpiry = .seconds(30)
        }
        self.breach(h)
        for _ in 0..<40 { h.advance(seconds: 1) }
        #expect(h.invocations("optimization").isEmpty)
        #expect(h.invocationRecords.values.first?.status == "expired")
        #expect(h.coordinator.counters.expired == 1)
        // An approval after the expiry finds nothing to approve.
        let decision = try #require(h.decisions("optimization").first)
        #expect(!h.coordinator.approve(decision: decision.decisionID, approve: true, by: "late", via: "http"))
    }

    @Test func `a rejected decision is never published`() throws {
        let h = DecisionHarness(map: tagMap([(furnace, limitInfo())])) {
            $0.triggers = [equipmentTrigger(.optimization)]
            $0.modules[.optimization]?.requiresApproval = true
        }
        self.breach(h)
        let decision = try #require(h.decisions("optimization").first)
        h.coordinator.handle(
            topic: "apos/approve/\(decision.decisionID.uuidString.lowercased())", payload: Array(#"{"approve":false,"by":"engineer"}"#.utf8))
        for _ in 0..<5 { h.advance(seconds: 1) }
        #expect(h.invocations("optimization").isEmpty)
        #expect(h.invocationRecords.values.first?.status == "expired")
        #expect(h.invocationRecords.values.first?.result?.contains("rejected by engineer") == true)
    }

    @Test func `a manual request over MQTT invokes despite the cooldown and carries its parameters`() throws {
        let h = DecisionHarness(map: tagMap([(furnace, limitInfo())])) { $0.triggers = [equipmentTrigger(.optimization)] }
        self.breach(h)
        h.answer(try #require(h.invocations("optimization").first), module: "optimization")
        h.coordinator.handle(
            topic: "apos/request/optimization", payload: Array(#"{"scope":"r1/cdu/cdu1","by":"planner","params":{"target":"max_throughput"}}"#.utf8))
        #expect(h.invocations("optimization").count == 2)
        let params = try #require(h.invocations("optimization").last?["params"] as? [String: Any])
        #expect((params["request"] as? [String: String])?["target"] == "max_throughput")
        #expect(h.decisions("optimization").last?.source == "api")
        #expect(DecisionHarness.reasons(try #require(h.decisions("optimization").last))["cooldown"] == "pass")
    }

    @Test func `an alert below the trigger's min_severity decides nothing`() {
        let h = DecisionHarness(map: tagMap([(furnace, limitInfo())])) {
            var rule = equipmentTrigger()
            rule.minSeverity = .critical
            $0.triggers = [rule]
        }
        self.breach(h)
        #expect(h.decisions.isEmpty)
        #expect(h.invocations("forecasting").isEmpty)
    }

    @Test func `pending invocations come back from the record after a restart and time out there`() throws {
        let first = DecisionHarness(map: tagMap([(furnace, limitInfo())])) {
            $0.triggers = [equipmentTrigger()]
            $0.decisionEngine.maxRetries = 1
        }
        self.breach(first)
        let pending = try #require(first.invocationRecords.values.first)
        var invocation = Invocation(
            id: pending.invocationID, decisionID: pending.decisionID, module: .forecasting, triggerKind: pending.triggerKind,
            scopeKey: pending.scopeKey, params: pending.params, trigger: "{}")
        invocation.attempts = pending.attempts
        invocation.publishedAt = pending.publishedAt
        var memory = DecisionMemory()
        memory.pending = [(invocation, first.time)]
        memory.lastInvoked[CooldownKey(.forecasting, furnace)] = first.time

        let second = DecisionHarness(map: tagMap([(furnace, limitInfo())])) {
            $0.triggers = [equipmentTrigger()]
            $0.decisionEngine.maxRetries = 1
        }
        second.capture.now.store(first.time + 2000, ordering: .relaxed)
        second.coordinator.restore(memory)
        #expect(second.coordinator.activeInvocations.count == 1)
        for _ in 0..<30 { second.advance(seconds: 1) }
        #expect(second.invocations("forecasting").count == 1)  // the one retry
        #expect(second.invocationRecords[pending.invocationID]?.status == "timeout")
        // And the cooldown remembered: a new breach is skipped.
        self.breach(second)
        #expect(second.invocations("forecasting").count == 1)
    }

    @Test func `a hostile tag name travels as data: the invocation is valid JSON and names it verbatim`() throws {
        let hostile = #"r1/cdu/cdu1/T"},"module":"etl\n"#
        let h = DecisionHarness(map: tagMap([(hostile, limitInfo())])) { $0.triggers = [equipmentTrigger()] }
        self.breach(h, tag: hostile)
        let invocation = try #require(h.invocations("forecasting").first)
        #expect(invocation["module"] as? String == "forecasting")
        #expect(((invocation["params"] as? [String: Any])?["tags"] as? [String: Any])?[hostile] != nil)
        #expect((invocation["trigger"] as? [String: Any])?["tag"] as? String == hostile)
    }

    @Test func `publication refused by the client is retried with backoff`() throws {
        let h = DecisionHarness(map: tagMap([(furnace, limitInfo())])) { $0.triggers = [equipmentTrigger()] }
        h.capture.acceptPublications.store(false, ordering: .relaxed)
        self.breach(h)
        #expect(h.invocations("forecasting").isEmpty)
        h.capture.acceptPublications.store(true, ordering: .relaxed)
        for _ in 0..<3 { h.advance(seconds: 1) }
        #expect(h.invocations("forecasting").count == 1)
        #expect(h.invocations("forecasting").first?["attempt"] as? Int == 2)
    }

    @Test func `every decision is mirrored on the decision topic with its reasons`() throws {
        let h = DecisionHarness(map: tagMap([(furnace, limitInfo())])) { $0.triggers = [equipmentTrigger()] }
        self.breach(h)
        let mirrors = h.capture.published.withLock { $0 }.filter { $0.topic == "apos/decision" }
        // The limit and the anomaly alert both fire the trigger: two decisions, the second a deduplicated skip.
        #expect(mirrors.count == h.decisions.count && mirrors.count >= 1)
        let object = try #require((try? JSONSerialization.jsonObject(with: Data(mirrors[0].payload))) as? [String: Any])
        #expect(object["action"] as? String == "invoke")
        #expect((object["reasons"] as? String)?.contains("cost_benefit") == true)
        #expect(object["latency_us"] != nil)
    }
}
