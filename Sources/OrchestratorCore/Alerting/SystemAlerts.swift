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

    /// Raises or clears the condition's episode (nothing when it is already in that state).
    package func report(_ condition: Condition, at now: EpochMilliseconds = .now()) {
        let event: AlertEvent? = self.open.withLock { open in
            switch condition {
            case .spool(let full, let used, let capacity, let directory):
                let tag = "orchestrator/spool"
                let ratio = capacity > 0 ? Double(used) / Double(capacity) : 1
                if full {
                    guard open[tag] == nil else { return nil }
                    let raised = AlertEvent(
                        alertID: UUID(), state: .raised, severity: .critical, kind: .system, tag: tag, topic: directory, timestamp: now,
                        raisedAt: now, clearedAt: nil, value: Double(used), score: min(1, ratio),
                        message: "the record spool is \(Int(ratio * 100))% full (\(used) of \(capacity) bytes): "
                            + "the database has been away long; records are lost when it is full")
                    open[tag] = raised
                    return raised
                }
                guard let episode = open.removeValue(forKey: tag) else { return nil }
                return AlertEvent(
                    alertID: episode.alertID, state: .cleared, severity: .critical, kind: .system, tag: tag, topic: directory,
                    timestamp: now, raisedAt: episode.raisedAt, clearedAt: now, value: Double(used), score: ratio,
                    message: "the record spool is back under 80% of its cap")
            case .recordSetAside(let total, let file, let sqlState):
                // One open episode while records have been set aside (an operator looks at the file).
                let tag = "orchestrator/record"
                guard open[tag] == nil else { return nil }
                let raised = AlertEvent(
                    alertID: UUID(), state: .raised, severity: .warning, kind: .system, tag: tag, topic: file ?? "", timestamp: now,
                    raisedAt: now, clearedAt: nil, value: Double(total), score: 1,
                    message: "a record was refused by the database for its data (\(sqlState ?? "?")) and set aside in "
                        + "\(file ?? "the log"): nothing is lost, but it needs a look")
                open[tag] = raised
                return raised
            case .broker(let connected, let endpoint, let reason):
                let tag = Self.brokerTag
                if !connected {
                    guard open[tag] == nil else { return nil }
                    let raised = AlertEvent(
                        alertID: UUID(), state: .raised, severity: .critical, kind: .system, tag: tag, topic: endpoint, timestamp: now,
                        raisedAt: now, clearedAt: nil, value: 0, score: 1,
                        message: "the MQTT broker at \(endpoint) cannot be reached (\(reason ?? "connection lost")): no plant data arrives "
                            + "and nothing is published until it is back; the tags' own staleness is held back meanwhile")
                    open[tag] = raised
                    return raised
                }
                guard let episode = open.removeValue(forKey: tag) else { return nil }
                return AlertEvent(
                    alertID: episode.alertID, state: .cleared, severity: .critical, kind: .system, tag: tag, topic: endpoint,
                    timestamp: now, raisedAt: episode.raisedAt, clearedAt: now, value: 1, score: 0,
                    message: "the MQTT broker at \(endpoint) is connected again")
            }
        }
        guard let event else { return }
        for sink in self.sinks.withLock({ $0 }) { sink.deliver(event) }
    }
}
