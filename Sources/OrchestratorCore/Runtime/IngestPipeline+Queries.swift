package import Foundation
package import Logging
import Synchronization

/// Read-only queries: counters, tag views and windows, tags under a prefix, unit monitors.
extension IngestPipeline {
    package var counters: IngestCounters {
        self.state.withLock { state in
            var counters = state.counters
            counters.redeliveries = state.engine.redeliveries
            return counters
        }
    }

    /// The decision side's view of some tags (unknown ones left out), over the newest `window`
    /// samples of each.
    package func views(of tags: [String], window: Int) -> [TagView] {
        self.state.withLock { state in
            let alerts = state.alerts
            return tags.compactMap {
                state.engine.view(
                    of: $0, window: window, openKinds: { alerts.openKinds(slot: $0) },
                    qualityCleared: { alerts.qualityEpisodeCleared(slot: $0) })
            }
        }
    }

    /// Usable samples the detectors of a tag have processed.
    package func processedCount(tag: String) -> Int? {
        self.state.withLock { $0.engine.processedCount(of: tag) }
    }

    /// Tags seen so far under a prefix (a unit's path followed by `/`, or `market/`).
    package func tags(withPrefix prefix: String) -> [String] {
        self.state.withLock { $0.engine.tags(withPrefix: prefix) }
    }

    /// The newest `limit` good samples of each tag, oldest first.
    package func windows(of tags: [String], limit: Int) -> [TagWindow] {
        self.state.withLock { state in
            tags.map { tag in
                let window = state.engine.window(of: tag, limit: limit)
                return TagWindow(tag: tag, times: window.times, values: window.values)
            }
        }
    }

    /// Gives this instance's open episode `id` the id and start of the active's episode it stands for
    /// (a takeover); false when it is no longer open.
    package func rekey(_ id: UUID, to other: UUID, raisedAt: Int64) -> Bool {
        self.state.withLock { $0.alerts.rekey(id, to: other, raisedAt: raisedAt) }
    }

    /// Open episodes by severity (`dang_alerts_active`).
    package var openAlertsBySeverity: [AlertSeverity: Int] {
        self.state.withLock { $0.alerts.openBySeverity }
    }

    /// The state of one unit monitor, nil when no unit has that name.
    package func unitState(named name: String) -> UnitMonitorState? {
        self.state.withLock { $0.engine.unitState(named: name) }
    }

    /// Unit monitors: their names and whether they are trained yet.
    package var units: [(name: String, tags: Int, trained: Bool)] {
        self.state.withLock { state in state.engine.unitMonitors.map { ($0.name, $0.slots.count, $0.isTrained) } }
    }
}
