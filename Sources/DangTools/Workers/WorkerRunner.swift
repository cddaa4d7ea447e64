import Foundation
package import Logging
import Mosquitto
import Synchronization
package import OrchestratorCore

/// Runs a ``ReferenceWorker`` against a broker: takes invocations from `{prefix}/cmd/{module}` and
/// answers on their `reply_to` (else `{prefix}/result/{module}`) — `dang worker <module>`.
package struct WorkerRunner: Sendable {
    let config: OrchestratorConfig
    let worker: ReferenceWorker
    let logger: Logger
    /// Seconds to wait before answering (to exercise timeouts in tests and demos).
    let delay: Double

    package init(config: OrchestratorConfig, worker: ReferenceWorker, delay: Double = 0, logger: Logger) {
        self.config = config
        self.worker = worker
        self.delay = delay
        self.logger = logger
    }

    /// Runs until the task is cancelled; returns the invocations answered.
    @discardableResult
    package func run() async throws -> Int {
        var options = self.config.connectionOptions(will: nil)
        options.clientID = "\(self.config.mqtt.clientID)-worker-\(self.worker.rawValue)-\(ProcessInfo.processInfo.processIdentifier)"
        // A new id per process: a persistent session would only pile up messages nobody collects.
        options.cleanStart = true
        options.sessionExpiry = 0
        let command = "\(self.config.topics.prefix)/cmd/\(self.worker.rawValue)"
        let fallbackReply = "\(self.config.topics.prefix)/result/\(self.worker.rawValue)"
        options.subscriptions = [(command, 1)]
        let answered = Atomic<Int>(0)
        let box = Mutex<MosquittoClient?>(nil)
        let worker = self.worker
        let logger = self.logger
        let delay = self.delay
        let client = try MosquittoClient(
            options: options,
            onMessage: { message in
                let payload = Array(message.payload)
                let reply = Self.replyTo(payload) ?? fallbackReply
                let answer = worker.answer(payload)
                let send: @Sendable () -> Void = {
                    guard let client = box.withLock({ $0 }) else { return }
                    do {
                        try client.publish(topic: reply, payload: answer, qos: 1, retain: false)
                        answered.add(1, ordering: .relaxed)
                    } catch {
                        logger.error("result not published", metadata: ["error": "\(error)"])
                    }
                }
                if delay > 0 {
                    DispatchQueue.global().asyncAfter(deadline: .now() + delay) { send() }
                } else {
                    send()
                }
            },
            onEvent: { event in
                if case .connected = event { logger.info("worker connected", metadata: ["worker": "\(worker.rawValue)", "mqtt.topic": "\(command)"]) }
            })
        box.withLock { $0 = client }
        try client.start()
        defer { client.disconnect() }
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(200))
        }
        return answered.load(ordering: .relaxed)
    }

    /// Where the invocation asks to be answered: its `reply_to`, if it is a plain topic.
    static func replyTo(_ payload: [UInt8]) -> String? {
        guard let object = (try? JSONSerialization.jsonObject(with: Data(payload))) as? [String: Any],
            let reply = object["reply_to"] as? String, !reply.isEmpty, reply.utf8.count < 1024,
            !reply.contains(where: { $0 == "+" || $0 == "#" || $0 == "\u{0}" })
        else { return nil }
        return reply
    }
}
