import Foundation
import Yams
package import Mosquitto

/// `mqtt`.
package struct MQTTSettings: Sendable, Equatable {
    /// `dang-<instance id>` (the host name unless `instance.id` is set): the same across restarts of
    /// one gateway, different between gateways. MQTT 3.1.1 brokers only promise ids of up to 23
    /// bytes; mosquitto and the v5 brokers take longer ones — set `client_id` for a strict broker.
    package static let defaultClientID = "dang-\(AvailabilitySettings.hostName)"

    package var endpoint = MQTTEndpoint(host: "127.0.0.1", port: 1883, tls: false)
    /// Stable per instance (a persistent session is found again by it): `dang-<instance id>` unless set.
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
