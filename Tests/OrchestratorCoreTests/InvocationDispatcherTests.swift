import Foundation
import Synchronization
import Testing

@testable import OrchestratorCore

/// The dispatcher's slow jobs belong to the decision service: stopped with it, a command's end is
/// not a module failure.
@Suite struct InvocationDispatcherTests {
    @Test func `a command still running when the service stops is not recorded as failed`() async throws {
        let tag = "r1/cdu/cdu1/TI-101"
        var map = TopicMap()
        map.tags[tag] = TagInfo(unit: "degC", limits: .init(lo: 340, hi: 372, deadband: 1))
        let h = DecisionHarness(map: map) { config in
            var rule = TriggerRule(name: "equipment", kind: .equipment, module: .forecasting)
            rule.alertKinds = [.limit]
            config.triggers = [rule]
            config.modules[.forecasting]?.transport = .command
            config.modules[.forecasting]?.command = ["sleep", "60"]  // runs until it is stopped
            config.decisionEngine.maxRetries = 0  // a failure would end the invocation at once
        }
        let service = Task { await h.coordinator.run() }
        for _ in 0..<10 { h.sample(tag, 355) }
        h.sample(tag, 380)
        #expect(h.coordinator.activeInvocations.count == 1)
        try await Task.sleep(for: .milliseconds(300))  // the command has started (or is starting)
        service.cancel()
        await service.value
        #expect(h.coordinator.counters.failures == 0)
        #expect(h.coordinator.activeInvocations.count == 1)  // still pending: re-armed at the next start
        #expect(!h.capture.records.withLock { $0 }.contains { if case .outcome = $0 { true } else { false } })
    }
}
