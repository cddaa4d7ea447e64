package import Logging
import Mosquitto
import Synchronization

/// Publishes alert events on `{prefix}/alert/{severity}/…` (docs/mqtt-contract.md, "Outputs") as soon as they happen, on the
/// ingest thread (libmosquitto's network thread, which writes them to the socket as soon as the
/// message's handler returns, before the decisions they trigger are made).
package final class AlertPublisher: AlertSink, Sendable {
    private let client = Mutex<MosquittoClient?>(nil)
    /// False on a standby (`ha.enabled`): it publishes nothing on the plant's topics.
    private let acting = Atomic<Bool>(true)
    private let prefix: String
    private let qos: Int32
    private let logger: Logger
    private let failures = Atomic<Int>(0)
    /// Shelved alerts are recorded but not published.
    package let shelf = AlertShelf()
    /// The broker alarm's raise, held until the broker is back.
    private let brokerAlarm = Mutex<AlertEvent?>(nil)
    /// Messages handed to libmosquitto while the broker is away (it queues them without bound);
    /// past `maxQueued` they are dropped and counted — alerts stay in the record.
    private let queuedWhileAway = Atomic<Int>(0)
    private let connected = Atomic<Bool>(false)
    private let dropped = Atomic<Int>(0)
    private let maxQueuedValue = Atomic<Int>(10_000)
    package var maxQueued: Int { self.maxQueuedValue.load(ordering: .relaxed) }
    package func setMaxQueued(_ value: Int) { self.maxQueuedValue.store(value, ordering: .relaxed) }

    /// Publishes from now on (single instance, or the active) or not at all (a standby).
    package func setActing(_ acting: Bool) { self.acting.store(acting, ordering: .relaxed) }

    package var isActing: Bool { self.acting.load(ordering: .relaxed) }

    /// The client to publish with: none on a standby, or before one is attached.
    private var sending: MosquittoClient? {
        self.acting.load(ordering: .relaxed) ? self.client.withLock { $0 } : nil
    }

    /// The connection came or went (from the client's events).
    package func connectionChanged(connected: Bool) {
        self.connected.store(connected, ordering: .relaxed)
        if connected { self.queuedWhileAway.store(0, ordering: .relaxed) }
    }

    /// Messages not queued because the broker was away too long.
    package var droppedWhileAway: Int { self.dropped.load(ordering: .relaxed) }

    /// Whether one more message may be queued now.
    private func admit() -> Bool {
        if self.connected.load(ordering: .relaxed) { return true }
        guard self.queuedWhileAway.add(1, ordering: .relaxed).newValue <= self.maxQueued else {
            let total = self.dropped.add(1, ordering: .relaxed).newValue
            if total == 1 || total & (total - 1) == 0 {
                self.logger.error(
                    "message not queued: the broker has been away and mqtt.max_queued messages are waiting (alerts stay in the record)",
                    metadata: ["mqtt.dropped": "\(total)", "mqtt.max_queued": "\(self.maxQueued)"])
            }
            return false
        }
        return true
    }

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
        guard let client = self.sending, self.admit() else { return false }
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
        guard let client = self.sending else { return }
        // The broker alarm reaches no one while the broker is away: its raise waits and goes out
        // just before its clear, once the connection is back (in that order, and without taking a
        // place in the queue of what was made meanwhile).
        if event.kind == .system && event.tag == SystemAlerts.brokerTag {
            if event.state == .raised {
                self.brokerAlarm.withLock { $0 = event }
                return
            }
            if let raised = self.brokerAlarm.withLock({ $0.take() }) { self.send(raised, on: client) }
            self.send(event, on: client)
            return
        }
        // A suppressed episode (by design, or its tag out of service) is recorded, not annunciated:
        // neither its raise nor its clear.
        if event.suppression != nil { return }
        // Shelving holds back new raises only: a clear is always published, so a subscriber that
        // saw the raise (before the shelving) also sees it end (issue 20).
        if event.state == .raised, self.shelf.count > 0, self.shelf.isShelved(tag: event.tag, kind: event.kind, now: event.raisedAt) { return }
        guard self.admit() else { return }
        self.send(event, on: client)
    }

    private func send(_ event: AlertEvent, on client: MosquittoClient) {
        do {
            try client.publish(topic: event.alertTopic(prefix: self.prefix), payload: event.jsonPayload(), qos: self.qos, retain: false)
        } catch {
            self.failures.add(1, ordering: .relaxed)
            self.logger.error(
                "alert not published", metadata: ["alert.id": "\(event.id)", "error": "\(error)"])
        }
    }
}

extension AlertPublisher {
    /// An operator's transition (acknowledged, shelved, unshelved) on the episode's alert topic,
    /// at the alerts' QoS; never held back by a shelf.
    package func deliver(_ transition: AlertTransition) {
        guard let client = self.sending, self.admit() else { return }
        do {
            try client.publish(topic: transition.alertTopic(prefix: self.prefix), payload: transition.jsonPayload(), qos: self.qos, retain: false)
        } catch {
            self.failures.add(1, ordering: .relaxed)
            self.logger.error(
                "alert transition not published",
                metadata: ["alert.id": "\(transition.episode.id)", "state": "\(transition.state.rawValue)", "error": "\(error)"])
        }
    }
}

extension AlertPublisher {
    /// A tag's service state, retained on `{prefix}/service/{tag}` (so a console that connects
    /// later knows it): `{"tag", "out_of_service": true, "since", "by", "reason"}` while it is out,
    /// `{"tag", "out_of_service": false, "at"}` once it is back.
    package func announceService(tag: String, _ outOfService: OutOfServiceTag?) {
        guard let client = self.sending, self.admit() else { return }
        do {
            try client.publish(
                topic: "\(self.prefix)/service/\(tag)", payload: OutOfServiceTag.json(tag: tag, outOfService, at: .now()), qos: 1, retain: true)
        } catch {
            self.logger.error("service state not published", metadata: ["alert.tag": "\(tag)", "error": "\(error)"])
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
        let suppressed = event.suppression.map { " (suppressed: \($0 == .byDesign ? "by design" : "out of service"))" } ?? ""
        self.logger.notice(
            "alert \(event.state.rawValue)\(suppressed): [\(event.severity.rawValue)] \(event.kind.rawValue) \(event.message)",
            metadata: ["alert.id": "\(event.id)", "alert.tag": "\(event.tag)"])
    }
}
