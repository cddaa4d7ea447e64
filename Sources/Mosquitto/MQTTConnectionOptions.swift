/// Everything needed to open one MQTT connection. Plain values; parsing URLs and configuration
/// files happens in the orchestrator's configuration layer.
package struct MQTTConnectionOptions: Sendable {
    /// MQTT protocol version spoken to the broker.
    package enum ProtocolVersion: String, Sendable {
        case v5
        case v311
    }

    /// TLS settings; `nil` on ``MQTTConnectionOptions/tls`` means plain TCP.
    package struct TLS: Sendable, Equatable {
        /// PEM file of trusted CAs.
        package var caFile: String?
        /// Directory of trusted CAs (hashed names), e.g. `/etc/ssl/certs`.
        package var caPath: String?
        /// Client certificate (PEM), with ``keyFile``.
        package var certFile: String?
        /// Client private key (PEM), with ``certFile``.
        package var keyFile: String?
        /// Check the broker's certificate names the host connected to. On by default.
        package var verifyHostname: Bool
        /// `tlsv1.2` or `tlsv1.3` (libmosquitto's default otherwise).
        package var version: String?
        /// Pre-shared key (hex) and its identity, instead of certificates.
        package var psk: String?
        package var pskIdentity: String?

        package init(
            caFile: String? = nil, caPath: String? = nil, certFile: String? = nil, keyFile: String? = nil,
            verifyHostname: Bool = true
        ) {
            self.caFile = caFile
            self.caPath = caPath
            self.certFile = certFile
            self.keyFile = keyFile
            self.verifyHostname = verifyHostname
        }
    }

    /// The last will: what the broker publishes if the connection dies without DISCONNECT.
    package struct Will: Sendable {
        package var topic: String
        package var payload: [UInt8]
        package var qos: Int32
        package var retain: Bool

        package init(topic: String, payload: [UInt8], qos: Int32, retain: Bool) {
            self.topic = topic
            self.payload = payload
            self.qos = qos
            self.retain = retain
        }
    }

    package var host: String
    package var port: Int
    package var clientID: String
    package var username: String?
    package var password: String?
    package var protocolVersion: ProtocolVersion
    /// Keep-alive interval in seconds.
    package var keepAlive: Int
    /// MQTT 3.1.1 clean session / MQTT 5 clean start.
    package var cleanStart: Bool
    /// Disable Nagle's algorithm (an alert otherwise waits tens of ms for a delayed ACK).
    package var tcpNoDelay: Bool
    package var tls: TLS?
    package var will: Will?
    /// Topic filters and QoS subscribed on every successful connect (so reconnects resubscribe).
    package var subscriptions: [(filter: String, qos: Int32)] = []
    /// Published on every successful connect, e.g. a retained "online" status.
    package var birth: Will?
    /// Made anew before every connection attempt, replacing `will` and `birth`: for a will and a
    /// birth that carry the connection's time (the Sparkplug host's STATE).
    package var stampedWill: (@Sendable () -> (will: Will, birth: Will))?
    /// Reconnect backoff bounds, in seconds (exponential between them, jittered).
    package var reconnectDelayMin: UInt32
    package var reconnectDelayMax: UInt32
    /// MQTT v5 session expiry in seconds, sent with `cleanStart` off: how long the broker keeps the
    /// session (subscriptions and queued QoS 1/2 messages) while the client is away.
    package var sessionExpiry: UInt32 = 0
    /// Outgoing QoS 1/2 messages in flight at once (libmosquitto default 20).
    package var maxInflight: Int?
    /// MQTT v5 receive maximum: incoming QoS 1/2 messages the broker may have unacknowledged.
    package var receiveMaximum: Int?

    package init(
        host: String, port: Int, clientID: String, username: String? = nil, password: String? = nil,
        protocolVersion: ProtocolVersion = .v5, keepAlive: Int = 30, cleanStart: Bool = true,
        tcpNoDelay: Bool = true, tls: TLS? = nil, will: Will? = nil,
        reconnectDelayMin: UInt32 = 1, reconnectDelayMax: UInt32 = 30
    ) {
        self.host = host
        self.port = port
        self.clientID = clientID
        self.username = username
        self.password = password
        self.protocolVersion = protocolVersion
        self.keepAlive = keepAlive
        self.cleanStart = cleanStart
        self.tcpNoDelay = tcpNoDelay
        self.tls = tls
        self.will = will
        self.reconnectDelayMin = reconnectDelayMin
        self.reconnectDelayMax = reconnectDelayMax
    }
}
