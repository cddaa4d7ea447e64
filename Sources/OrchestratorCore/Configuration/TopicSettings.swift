import Foundation
import Yams
package import Mosquitto

/// `topics`.
package struct TopicSettings: Sendable, Equatable {
    package var prefix = "apos"
    package var mapFile = ""
    package var alertQoS = 1
    package var maxPayloadBytes = 65_536
    /// Subscribe to `spBv1.0/#` and ingest Sparkplug B.
    package var sparkplug = true
    /// Answer sequence gaps and data before birth with an NCMD `Node Control/Rebirth`.
    package var sparkplugRebirth = true
    /// Act as the Sparkplug primary host application with this id: the retained
    /// `spBv1.0/STATE/{id}` birth and death (only the active instance). Nil: no STATE.
    package var sparkplugHostID: String? = nil
    /// How long a node's out-of-order messages wait for the missing ones before the gap is reported
    /// and a rebirth asked for (Sparkplug's Reorder Timeout). Zero: at once.
    package var sparkplugReorderTimeout: Duration = .seconds(2)
}
