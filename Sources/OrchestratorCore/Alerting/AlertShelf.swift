import Synchronization

/// Shelved alerts (ISA-18.2 shelving): while a tag's alert kind is shelved its raises are recorded but
/// not annunciated on MQTT (its clears are, so what a subscriber saw raised it also sees end); the
/// shelf empties itself when the time is up.
package final class AlertShelf: Sendable {
    private let shelved = Mutex<[String: Int64]>([:])

    package init() {}

    private static func key(tag: String, kind: AlertKind) -> String { "\(kind.rawValue)|\(tag)" }

    package func shelve(tag: String, kind: AlertKind, until: Int64) {
        self.shelved.withLock { $0[Self.key(tag: tag, kind: kind)] = until }
    }

    package func unshelve(tag: String, kind: AlertKind) {
        self.shelved.withLock { $0[Self.key(tag: tag, kind: kind)] = nil }
    }

    /// Whether the kind is shelved for the tag at `now` (expired shelves are removed).
    package func isShelved(tag: String, kind: AlertKind, now: Int64) -> Bool {
        self.shelved.withLock { shelf in
            let key = Self.key(tag: tag, kind: kind)
            guard let until = shelf[key] else { return false }
            if now >= until {
                shelf[key] = nil
                return false
            }
            return true
        }
    }

    package var count: Int { self.shelved.withLock { $0.count } }
}
