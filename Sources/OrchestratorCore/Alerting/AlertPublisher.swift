package import Logging
import Mosquitto
import Synchronization

/// Publishes alert events on `{prefix}/alert/{severity}/…` (SPEC §3) as soon as they happen, on the
/// ingest thread: libmosquitto queues the message and its network thread sends it.
package final class AlertPublisher: AlertSink, Sendable {
    private let client = Mutex<MosquittoClient?>(nil)
    private let prefix: String
    private let qos: Int32
    private let logger: Logger
    private let failures = Atomic<Int>(0)
    /// Shelved alarms are recorded but not published.
    package let shelf = AlertShelf()

    package init(prefix: String, qos: Int, logger: Logger) {
        self.prefix = prefix
        self.qos = Int32(qos)
        self.logger = logger
    }

    /// Binds the client that carries the alerts (it is created after the pipeline that feeds it).
    func attach(_ client: MosquittoClient) {
        self.client.withLock { $0 = client }
    }

    /// Publishes any message at QoS 1 on the same client (decision mirrors, module invocations as
    /// MQTT v5 requests). False if there is no client yet or libmosquitto refused it.
    package func publish(topic: String, payload: [UInt8], request: (responseTopic: String, correlation: [UInt8])?) -> Bool {
        guard let client = self.client.withLock({ $0 }) else { return false }
        do {
            if let request {
                try client.publish(
                    topic: topic, payload: payload, qos: 1, responseTopic: request.responseTopic, correlationData: request.correlation)
            } else {
                try client.publish(topic: topic, payload: payload, qos: 1, retain: false)
            }
            return true
        } catch {
            self.logger.error("message not published", metadata: ["mqtt.topic": "\(topic)", "error": "\(error)"])
            return false
        }
    }

    /// Alerts that libmosquitto refused to queue.
    package var publishFailures: Int { self.failures.load(ordering: .relaxed) }

    package func deliver(_ event: AlertEvent) {
        guard let client = self.client.withLock({ $0 }) else { return }
        if self.shelf.count > 0, self.shelf.isShelved(tag: event.tag, kind: event.kind, now: event.clearedAt ?? event.raisedAt) { return }
        do {
            try client.publish(topic: event.alertTopic(prefix: self.prefix), payload: event.jsonPayload(), qos: self.qos, retain: false)
        } catch {
            self.failures.add(1, ordering: .relaxed)
            self.logger.error(
                "alert not published", metadata: ["alert.id": "\(event.id)", "error": "\(error)"])
        }
    }
}

/// Prints every alert transition as a log line (what `dang run` and `make demo` show live).
package struct AlertLogSink: AlertSink {
    private let logger: Logger

    package init(logger: Logger) {
        self.logger = logger
    }

    package func deliver(_ event: AlertEvent) {
        self.logger.notice(
            "alert \(event.state.rawValue): [\(event.severity.rawValue)] \(event.kind.rawValue) \(event.message)",
            metadata: ["alert.id": "\(event.id)", "alert.tag": "\(event.tag)"])
    }
}
