package import Foundation
import Synchronization

/// The orchestrator's own alerts (kind `system`, tags `orchestrator/…`): raised and cleared like
/// any other episode and delivered to the same sinks (the record, the MQTT publisher). The parts
/// that notice the condition (the record writer) only report it; this makes the episode.
package final class SystemAlerts: Sendable {
    /// A condition of the orchestrator itself.
    package enum Condition: Sendable, Equatable {
        /// The record spool passed 90 % of its cap (`full`), or came back under 80 %.
        case spool(full: Bool, used: Int, capacity: Int, directory: String)
        /// A record was refused by the database for its own data and set aside in `file`.
        case recordSetAside(total: Int, file: String?, sqlState: String?)
        /// The MQTT broker at `endpoint` cannot be reached (`connected` false, with why), or is
        /// again: while it is away this one alarm stands for the whole plant's silence, instead of
        /// a `stale` alarm per tag.
        case broker(connected: Bool, endpoint: String, reason: String?)
    }

    /// The tag of the broker alarm (``Condition/broker(connected:endpoint:reason:)``).
    package static let brokerTag = "orchestrator/broker"

    private let sinks: Mutex<[any AlertSink]>
    /// The open episode of each tag.
    private let open = Mutex<[String: AlertEvent]>([:])

    package init(sinks: [any AlertSink] = []) {
        self.sinks = Mutex(sinks)
    }

    package func attach(_ sinks: [any AlertSink]) {
        self.sinks.withLock { $0.append(contentsOf: sinks) }
    }

    /// What a condition does to its tag's episode.
    private enum Change {
        case raise(AlertSeverity, value: Double, score: Double, message: String)
        case clear(value: Double, score: Double, message: String)
    }

    /// Raises or clears the condition's episode (nothing when it is already in that state).
    package func report(_ condition: Condition, at now: EpochMilliseconds = .now()) {
        let (tag, topic, change) = Self.change(condition)
        let event: AlertEvent? = self.open.withLock { open in
            switch change {
            case .raise(let severity, let value, let score, let message):
                guard open[tag] == nil else { return nil }
                let raised = AlertEvent(
                    alertID: UUID(), state: .raised, severity: severity, kind: .system, tag: tag, topic: topic, timestamp: now,
                    raisedAt: now, clearedAt: nil, value: value, score: score, message: message)
                open[tag] = raised
                return raised
            case .clear(let value, let score, let message):
                guard let episode = open.removeValue(forKey: tag) else { return nil }
                return AlertEvent(
                    alertID: episode.alertID, state: .cleared, severity: episode.severity, kind: .system, tag: tag, topic: topic,
                    timestamp: now, raisedAt: episode.raisedAt, clearedAt: now, value: value, score: score, message: message)
            }
        }
        guard let event else { return }
        for sink in self.sinks.withLock({ $0 }) { sink.deliver(event) }
    }

    /// The tag, topic and change of each condition.
    private static func change(_ condition: Condition) -> (tag: String, topic: String, change: Change) {
        switch condition {
        case .spool(let full, let used, let capacity, let directory):
            let ratio = capacity > 0 ? Double(used) / Double(capacity) : 1
            return (
                "orchestrator/spool", directory,
                full
                    ? .raise(
                        .critical, value: Double(used), score: min(1, ratio),
                        message: "the record spool is \(Int(ratio * 100))% full (\(used) of \(capacity) bytes): "
                            + "the database has been away long; records are lost when it is full")
                    : .clear(value: Double(used), score: ratio, message: "the record spool is back under 80% of its cap")
            )
        case .recordSetAside(let total, let file, let sqlState):
            // One open episode while records have been set aside (an operator looks at the file).
            return (
                "orchestrator/record", file ?? "",
                .raise(
                    .warning, value: Double(total), score: 1,
                    message: "a record was refused by the database for its data (\(sqlState ?? "?")) and set aside in "
                        + "\(file ?? "the log"): nothing is lost, but it needs a look")
            )
        case .broker(let connected, let endpoint, let reason):
            return (
                Self.brokerTag, endpoint,
                connected
                    ? .clear(value: 1, score: 0, message: "the MQTT broker at \(endpoint) is connected again")
                    : .raise(
                        .critical, value: 0, score: 1,
                        message: "the MQTT broker at \(endpoint) cannot be reached (\(reason ?? "connection lost")): no plant data arrives "
                            + "and nothing is published until it is back; the tags' own staleness is held back meanwhile")
            )
        }
    }
}
