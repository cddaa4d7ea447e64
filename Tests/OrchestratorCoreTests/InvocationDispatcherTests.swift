import Foundation
import Logging
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
        var config = OrchestratorConfig.defaults(topicMap: map)
        config.detection.multivariateEnabled = false
        var rule = TriggerRule(name: "equipment", kind: .equipment, module: .forecasting)
        rule.alertKinds = [.limit]
        config.triggers = [rule]
        config.modules[.forecasting]?.minHistory = 5
        config.modules[.forecasting]?.transport = .command
        config.modules[.forecasting]?.command = ["never-run"]
        config.decisionEngine.maxRetries = 0  // a failure would end the invocation at once
        final class Flag: Sendable {
            let value = Atomic<Bool>(false)
            var isSet: Bool { self.value.load(ordering: .relaxed) }
        }
        let started = Flag()
        let records = Mutex<[Record]>([])
        let pipeline = IngestPipeline(config: config, sinks: [], logger: Logger(label: "test"))
        let coordinator = ModuleCoordinator(
            config: config, data: pipeline,
            outputs: CoordinatorOutputs(
                publish: { _, _, _ in true }, record: { record in records.withLock { $0.append(record) } },
                runCommand: { _, _, _, _ in
                    // A command that runs until it is stopped, then reports the stop as a failure.
                    started.value.store(true, ordering: .relaxed)
                    while !Task.isCancelled { try? await Task.sleep(for: .milliseconds(10)) }
                    return .failure(CommandFailure("stopped"))
                }),
            logger: Logger(label: "test"))
        pipeline.attachAfterMessage(coordinator)
        let service = Task { await coordinator.run() }
        // The coordinator and the pipeline read the wall clock: samples from the last few seconds.
        var time = EpochMilliseconds.now() - 20_000
        for value in Array(repeating: 355.0, count: 10) + [380] {
            time += 1000
            var topic = "plant/\(tag)"
            var payload = "{\"ts\":\(time),\"v\":\(value)}"
            topic.withUTF8 { t in payload.withUTF8 { p in pipeline.handle(topic: UnsafeRawBufferPointer(t), payload: UnsafeRawBufferPointer(p), receivedAt: time) } }
            pipeline.deliverAfterMessage()
        }
        for _ in 0..<500 where !started.isSet { try await Task.sleep(for: .milliseconds(10)) }
        #expect(started.isSet)
        service.cancel()
        await service.value
        #expect(coordinator.counters.failures == 0)
        #expect(coordinator.activeInvocations.count == 1)  // still pending: re-armed at the next start
        #expect(!records.withLock { $0 }.contains { if case .outcome = $0 { true } else { false } })
    }
}
