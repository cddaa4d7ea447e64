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
}
