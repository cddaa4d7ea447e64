import Foundation
import Synchronization

/// What a standby raised while it stood by (docs/availability.md): it detects everything, publishes
/// and records nothing, and keeps here the raise of every episode still open — so that at a
/// takeover each is matched with the active's episode for the same condition (and takes its id) or,
/// when the record has none, announced then.
package final class StandbyLedger: AlertSink, Sendable {
    private let open = Mutex<[UUID: AlertEvent]>([:])
    private let acting: @Sendable () -> Bool

    /// - Parameter acting: whether this instance publishes and records (then nothing is kept).
    package init(acting: @escaping @Sendable () -> Bool) {
        self.acting = acting
    }

    package func deliver(_ event: AlertEvent) {
        guard !self.acting() else { return }
        self.open.withLock { open in
            if event.state == .raised { open[event.alertID] = event } else { open[event.alertID] = nil }
        }
    }

    /// The raises still open, oldest first, and forgets them.
    package func take() -> [AlertEvent] {
        self.open.withLock { open in
            defer { open.removeAll() }
            return open.values.sorted { $0.raisedAt < $1.raisedAt }
        }
    }

    package var count: Int { self.open.withLock { $0.count } }
}
