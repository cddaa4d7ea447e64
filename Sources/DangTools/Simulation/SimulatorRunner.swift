import Foundation
package import Logging
import Mosquitto
import Synchronization
package import OrchestratorCore

/// Publishes a ``PlantSimulator`` to a broker in real time (`dang simulate`).
package struct SimulatorRunner: Sendable {
    let config: OrchestratorConfig
    let scenario: PlantSimulator.Scenario
    let duration: Double?
    let qos: Int32
    let logger: Logger

    package init(config: OrchestratorConfig, scenario: PlantSimulator.Scenario, duration: Double?, qos: Int, logger: Logger) {
        self.config = config
        self.scenario = scenario
        self.duration = duration
        self.qos = Int32(qos)
        self.logger = logger
    }

    /// Runs until `duration` elapses or the task is cancelled. Returns the number of messages published.
    @discardableResult
    package func run() async throws -> Int {
        var simulator = PlantSimulator(map: self.config.topicMap, scenario: self.scenario)
        guard simulator.tagCount > 0 else {
            throw SimulatorError(message: "the topic map lists no tags to simulate")
        }
        var options = self.config.connectionOptions(will: nil)
        options.clientID = "\(self.config.mqtt.clientID)-simulator-\(ProcessInfo.processInfo.processIdentifier)"
        // A new id per process: a persistent session would only pile up messages nobody collects.
        options.cleanStart = true
        options.sessionExpiry = 0
        let connected = Atomic<Bool>(false)
        let logger = self.logger
        let client = try MosquittoClient(
            options: options, onMessage: { _ in },
            onEvent: { event in
                switch event {
                case .connected:
                    connected.store(true, ordering: .releasing)
                case .connectionFailed(let reason), .connectionRefused(let reason):
                    logger.error("simulator cannot reach the broker; retrying", metadata: ["error": "\(reason)"])
                default:
                    break
                }
            })
        try client.start()
        defer { client.disconnect() }
        while !connected.load(ordering: .acquiring) {
            try await Task.sleep(for: .milliseconds(50))
        }
        self.logger.notice(
            "simulating the plant",
            metadata: [
                "sim.tags": "\(simulator.tagCount)", "sim.rate_hz": "\(self.scenario.rate)",
                "sim.upset_tag": "\(self.scenario.upsetTag)",
                "sim.upset_at_s": "\(self.scenario.upsetAfter)", "sim.upset_for_s": "\(self.scenario.upsetDuration)",
                "sim.upset_every_s": "\(self.scenario.upsetEvery)",
            ])
        let start = ContinuousClock.now
        let period = Duration.seconds(1 / self.scenario.rate)
        var published = 0
        var tick = 0
        var upsetWasOn = false
        while !Task.isCancelled {
            let elapsed = Double(tick) / self.scenario.rate
            if let duration, elapsed >= duration { break }
            let upsetOn = self.scenario.isUpset(at: elapsed)
            if upsetOn != upsetWasOn {
                upsetWasOn = upsetOn
                self.logger.notice(
                    upsetOn ? "injecting upset" : "upset over", metadata: ["sim.upset_tag": "\(self.scenario.upsetTag)"])
            }
            let now = EpochMilliseconds.now()
            for message in simulator.tick(elapsed: elapsed, epochMilliseconds: now) {
                try client.publish(topic: message.topic, payload: Array(message.payload.utf8), qos: self.qos, retain: false)
                published += 1
            }
            tick += 1
            let next = start.advanced(by: period * tick)
            try? await Task.sleep(until: next, clock: .continuous)
        }
        // Give the network thread a moment to flush the last QoS 1 messages.
        try? await Task.sleep(for: .milliseconds(200))
        return published
    }
}

/// The simulator cannot run.
package struct SimulatorError: Error, CustomStringConvertible, Sendable {
    package let message: String
    package var description: String { self.message }
}
