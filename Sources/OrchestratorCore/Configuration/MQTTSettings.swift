import Foundation
import Yams
package import Mosquitto

/// `mqtt`.
package struct MQTTSettings: Sendable, Equatable {
    /// `dang-<host name>`: the same across restarts of one gateway, different between gateways.
    package static let defaultClientID: String = {
        var name = [CChar](repeating: 0, count: 256)
        let host = gethostname(&name, name.count) == 0
            ? String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : ""
        // Client ids are safest in [0-9A-Za-z-_]. MQTT 3.1.1 brokers only promise ids of up to 23
        // bytes; mosquitto and the v5 brokers take longer ones — set `client_id` for a strict broker.
        let safe = host.unicodeScalars.map { scalar -> Character in
            let allowed = ("0"..."9").contains(scalar) || ("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar) || scalar == "-" || scalar == "_"
            return allowed ? Character(scalar) : "-"
        }
        let suffix = String(safe.prefix(64))
        return suffix.isEmpty ? "dang-orchestrator" : "dang-\(suffix)"
    }()

    package var endpoint = MQTTEndpoint(host: "127.0.0.1", port: 1883, tls: false)
    /// Stable per instance (a persistent session is found again by it): `dang-<host name>` unless set.
    package var clientID = MQTTSettings.defaultClientID
    package var username: String?
    package var password: String?
    package var protocolVersion: MQTTConnectionOptions.ProtocolVersion = .v5
    package var keepAlive: Duration = .seconds(30)
    /// `false` by default: a persistent session, so QoS 1 samples published while the orchestrator
    /// is away (a restart, an upgrade) are kept by the broker and delivered when it returns, with the
    /// shipped configuration and not only as an opt-in (docs/integration.md, "The connection").
    /// Sparkplug B, whose host rules ask for a clean session, then gets a connection of its own
    /// (`<client_id>-spb`).
    package var cleanStart = false
    package var subscribeQoS = 1
    package var tcpNoDelay = true
    package var tls = MQTTConnectionOptions.TLS()
    /// MQTT v5 session expiry with `clean_start: false` (a persistent session).
    package var sessionExpiry: Duration = .seconds(3600)
    package var reconnectDelayMin: Duration = .seconds(1)
    package var reconnectDelayMax: Duration = .seconds(30)
    package var maxInflight: Int?
    package var receiveMaximum: Int?
    /// Outgoing messages (alerts, invocations, decisions) queued while the broker is away; beyond it
    /// they are dropped and counted (alerts and decisions stay in the record).
    package var maxQueued = 10_000
}

extension MQTTSettings {
    /// Points at a broker; credentials in the URL replace configured ones.
    mutating func use(_ endpoint: MQTTEndpoint) {
        self.endpoint = endpoint
        if let user = endpoint.username { self.username = user }
        if let password = endpoint.password { self.password = password }
    }
}

extension MQTTConnectionOptions.ProtocolVersion: CaseIterable {
    package static var allCases: [Self] { [.v5, .v311] }
}
