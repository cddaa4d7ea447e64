import Logging
import ServiceLifecycle

@testable import OrchestratorCore

/// Runs an orchestrator's services in a `ServiceGroup` (as `dang run` does, minus the signals).
struct ServiceGroupRunner {
    let orchestrator: Orchestrator

    func run<T: Sendable>(_ body: @Sendable () async throws -> T) async throws -> T {
        let group = ServiceGroup(
            configuration: .init(
                services: self.orchestrator.services.map { .init(service: $0) }, logger: testLogger))
        return try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            do {
                let value = try await body()
                await group.triggerGracefulShutdown()
                try await tasks.waitForAll()
                return value
            } catch {
                await group.triggerGracefulShutdown()
                try? await tasks.waitForAll()
                throw error
            }
        }
    }
}
