internal import CMosquitto
import Dispatch
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// An MQTT client: owns one `struct mosquitto *` from libmosquitto.
///
/// `@unchecked Sendable`: mosquitto.h says "libmosquitto provides thread safe operation, with the
/// exception of `mosquitto_lib_init`", which is called exactly once through ``Library/initialized``.
/// `handle` never changes after `init`, and `deinit` stops the network thread before destroying it.
///
/// ### Threading
/// ``start()`` runs libmosquitto's own network thread (`mosquitto_loop_start`). Every callback —
/// messages, connection changes, log lines — runs on that thread. The message handler is given
/// borrowed views of the topic and payload that are valid only during the call (libmosquitto frees
/// the message when the callback returns), so it must copy what it keeps. While a handler runs,
/// libmosquitto reads nothing more from the socket: a slow handler pushes back on the broker, which
/// queues QoS 1 messages, instead of an unbounded buffer growing here.
package final class MosquittoClient: @unchecked Sendable {
    private let handle: OpaquePointer
    private let context: CallbackContext
    private let options: MQTTConnectionOptions
    private let loop = Mutex(LoopState.idle)
    private let stopSignal = DispatchSemaphore(value: 0)

    private enum LoopState {
        case idle
        case connecting
        case running
        case stopped
    }

    /// Creates the client and applies every option; nothing touches the network until ``start()``.
    package init(
        options: MQTTConnectionOptions,
        onMessage: @escaping @Sendable (borrowing MQTTIncomingMessage) -> Void,
        onEvent: @escaping @Sendable (MQTTClientEvent) -> Void
    ) throws(MosquittoError) {
        _ = Library.initialized
        self.options = options
        self.context = CallbackContext(
            onMessage: onMessage, onEvent: onEvent, subscriptions: options.subscriptions, birth: options.birth,
            isV5: options.protocolVersion == .v5)
        let userdata = Unmanaged.passUnretained(self.context).toOpaque()
        guard let handle = mosquitto_new(options.clientID, options.cleanStart, userdata) else {
            throw MosquittoError(code: .outOfMemory, function: "mosquitto_new")
        }
        self.handle = handle
        // If configure() throws, deinit still runs (every stored property is set) and destroys the handle.
        try self.configure()
    }

    deinit {
        // Ends and joins the network thread (never pthread_cancel: it could stop a callback
        // half-way through Swift code), so no callback can run once `context` is released.
        if case .running = self.loop.withLock({ $0 }) {
            mosquitto_disconnect_v5(self.handle, 0, nil)
            mosquitto_loop_stop(self.handle, false)
        }
        mosquitto_destroy(self.handle)
    }

    private func configure() throws(MosquittoError) {
        let version: Int32 = self.options.protocolVersion == .v5 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311
        try check(mosquitto_int_option(self.handle, MOSQ_OPT_PROTOCOL_VERSION, version), "mosquitto_int_option")
        if self.options.tcpNoDelay {
            try check(mosquitto_int_option(self.handle, MOSQ_OPT_TCP_NODELAY, 1), "mosquitto_int_option")
        }
        if let username = self.options.username {
            try check(mosquitto_username_pw_set(self.handle, username, self.options.password), "mosquitto_username_pw_set")
        }
        if let tls = self.options.tls {
            try check(
                mosquitto_tls_set(self.handle, tls.caFile, tls.caPath, tls.certFile, tls.keyFile, nil),
                "mosquitto_tls_set"
            )
            try check(mosquitto_tls_insecure_set(self.handle, !tls.verifyHostname), "mosquitto_tls_insecure_set")
        }
        if let will = self.options.will {
            let rc = will.payload.withUnsafeBytes { bytes in
                mosquitto_will_set_v5(
                    self.handle, will.topic, Int32(bytes.count), bytes.baseAddress, will.qos, will.retain, nil)
            }
            try check(rc, "mosquitto_will_set_v5")
        }
        try check(
            mosquitto_reconnect_delay_set(
                self.handle, self.options.reconnectDelayMin, self.options.reconnectDelayMax, true),
            "mosquitto_reconnect_delay_set"
        )

        mosquitto_connect_v5_callback_set(self.handle) { mosq, userdata, rc, flags, _ in
            guard let userdata else { return }
            let context = Unmanaged<CallbackContext>.fromOpaque(userdata).takeUnretainedValue()
            if rc == 0 {
                for (filter, qos) in context.subscriptions {
                    let rc = mosquitto_subscribe_v5(mosq, nil, filter, qos, 0, nil)
                    if rc != MOSQ_ERR_SUCCESS.rawValue {
                        context.onEvent(.subscribeFailed(filter: filter, reason: String(cString: mosquitto_strerror(rc))))
                    }
                }
                if let birth = context.birth {
                    _ = birth.payload.withUnsafeBytes { bytes in
                        mosquitto_publish_v5(
                            mosq, nil, birth.topic, Int32(bytes.count), bytes.baseAddress, birth.qos, birth.retain, nil)
                    }
                }
                context.onEvent(.connected(sessionPresent: flags & 1 != 0))
            } else {
                context.onEvent(.connectionRefused(reason: MosquittoClient.describeConnack(rc, v5: context.isV5)))
            }
        }
        mosquitto_disconnect_v5_callback_set(self.handle) { _, userdata, rc, _ in
            guard let userdata else { return }
            let context = Unmanaged<CallbackContext>.fromOpaque(userdata).takeUnretainedValue()
            context.onEvent(.disconnected(expected: rc == 0, reason: MosquittoClient.describeDisconnect(rc)))
        }
        mosquitto_message_v5_callback_set(self.handle) { _, userdata, message, _ in
            guard let userdata, let message else { return }
            let context = Unmanaged<CallbackContext>.fromOpaque(userdata).takeUnretainedValue()
            let m = message.pointee
            guard let topic = m.topic else { return }
            let topicLength = strlen(topic)
            let incoming = MQTTIncomingMessage(
                topic: UnsafeRawBufferPointer(start: topic, count: topicLength),
                payload: UnsafeRawBufferPointer(start: m.payload, count: Int(max(0, m.payloadlen))),
                qos: m.qos,
                retained: m.retain
            )
            context.onMessage(incoming)
        }
    }

    /// Starts the connection and libmosquitto's network thread. Once connected, libmosquitto
    /// reconnects by itself with exponential backoff between the configured delays. The *first*
    /// connection is retried here instead: libmosquitto's thread never retries a first
    /// `mosquitto_connect_async` that failed (eclipse-mosquitto/mosquitto#1903). Every change is
    /// reported as an event.
    package func start() throws(MosquittoError) {
        let proceed = self.loop.withLock { state -> Bool in
            guard case .idle = state else { return false }
            state = .connecting
            return true
        }
        guard proceed else { return }
        if try self.attemptFirstConnection() { return }
        let signal = self.stopSignal
        let first = Double(max(1, self.options.reconnectDelayMin))
        let cap = Double(max(self.options.reconnectDelayMin, self.options.reconnectDelayMax))
        let thread = Thread { [weak self] in
            var delay = first
            while true {
                _ = signal.wait(timeout: .now() + delay)
                guard let self else { return }
                if case .stopped = self.loop.withLock({ $0 }) { return }
                if (try? self.attemptFirstConnection()) == true { return }
                delay = min(delay * 2, cap)
            }
        }
        thread.name = "dang-mqtt-connect"
        thread.start()
    }

    /// One `mosquitto_connect_bind_async`; on success starts the network thread. Returns whether
    /// the loop is running; throws only for errors no retry can fix.
    private func attemptFirstConnection() throws(MosquittoError) -> Bool {
        let rc = mosquitto_connect_bind_async(
            self.handle, self.options.host, Int32(self.options.port), Int32(self.options.keepAlive), nil)
        guard rc == MOSQ_ERR_SUCCESS.rawValue else {
            guard rc == MOSQ_ERR_ERRNO.rawValue || rc == MOSQ_ERR_EAI.rawValue || rc == MOSQ_ERR_TLS.rawValue else {
                self.loop.withLock { $0 = .stopped }
                try check(rc, "mosquitto_connect_bind_async")
                return false
            }
            let reason = rc == MOSQ_ERR_ERRNO.rawValue ? String(cString: strerror(errno)) : String(cString: mosquitto_strerror(rc))
            self.context.onEvent(.connectionFailed(reason: reason))
            return false
        }
        // Start the loop unless stop() came first.
        return try self.loop.withLock { state throws(MosquittoError) -> Bool in
            guard case .connecting = state else { return true }
            try check(mosquitto_loop_start(self.handle), "mosquitto_loop_start")
            state = .running
            return true
        }
    }

    /// Subscribes to a topic filter. Call it from the `.connected` event so that every reconnect
    /// (with a clean session) subscribes again.
    package func subscribe(_ filter: String, qos: Int32) throws(MosquittoError) {
        try check(mosquitto_subscribe_v5(self.handle, nil, filter, qos, 0, nil), "mosquitto_subscribe_v5")
    }

    /// Queues a message for publication; libmosquitto's network thread sends it. Safe from any
    /// thread, including inside the message handler.
    package func publish(topic: String, payload: UnsafeRawBufferPointer, qos: Int32, retain: Bool) throws(MosquittoError) {
        let rc = mosquitto_publish_v5(
            self.handle, nil, topic, Int32(payload.count), payload.baseAddress, qos, retain, nil)
        try check(rc, "mosquitto_publish_v5")
    }

    /// Queues a message for publication (see ``publish(topic:payload:qos:retain:)``).
    package func publish(topic: String, payload: [UInt8], qos: Int32, retain: Bool) throws(MosquittoError) {
        let rc = payload.withUnsafeBytes { bytes in
            mosquitto_publish_v5(self.handle, nil, topic, Int32(bytes.count), bytes.baseAddress, qos, retain, nil)
        }
        try check(rc, "mosquitto_publish_v5")
    }

    /// Queues a request (SPEC §3 module invocation): with MQTT v5 it carries the response-topic
    /// and correlation-data properties; with v3.1.1 the payload alone says where to answer.
    package func publish(
        topic: String, payload: [UInt8], qos: Int32, responseTopic: String, correlationData: [UInt8]
    ) throws(MosquittoError) {
        var properties: OpaquePointer? = nil
        defer { mosquitto_property_free_all(&properties) }
        if self.options.protocolVersion == .v5 {
            try check(
                mosquitto_property_add_string(&properties, Int32(MQTT_PROP_RESPONSE_TOPIC.rawValue), responseTopic),
                "mosquitto_property_add_string")
            let rc = correlationData.withUnsafeBytes { bytes in
                mosquitto_property_add_binary(
                    &properties, Int32(MQTT_PROP_CORRELATION_DATA.rawValue), bytes.baseAddress, UInt16(min(bytes.count, 65535)))
            }
            try check(rc, "mosquitto_property_add_binary")
        }
        let rc = payload.withUnsafeBytes { bytes in
            mosquitto_publish_v5(self.handle, nil, topic, Int32(bytes.count), bytes.baseAddress, qos, false, properties)
        }
        try check(rc, "mosquitto_publish_v5")
    }

    /// Sends DISCONNECT (so the broker does not publish the will) and stops the network thread
    /// once outgoing messages have been written. Also ends a first-connection retry.
    package func disconnect() {
        let previous = self.loop.withLock { state -> LoopState in
            defer { state = .stopped }
            return state
        }
        self.stopSignal.signal()
        guard case .running = previous else { return }
        mosquitto_disconnect_v5(self.handle, 0, nil)
        mosquitto_loop_stop(self.handle, false)
    }

    private static func describeConnack(_ rc: Int32, v5: Bool) -> String {
        // MQTT 5 reason codes and MQTT 3.1.1 CONNACK return codes are different tables.
        let text = v5 ? mosquitto_reason_string(rc) : mosquitto_connack_string(rc)
        return (text.map { String(cString: $0) } ?? "unknown") + " (\(rc))"
    }

    private static func describeDisconnect(_ rc: Int32) -> String {
        rc == 0 ? "client disconnected" : String(cString: mosquitto_strerror(rc))
    }
}

/// What the client reports about its connection.
package enum MQTTClientEvent: Sendable, Equatable {
    /// CONNACK accepted; subscribe now. `sessionPresent` is the broker's flag.
    case connected(sessionPresent: Bool)
    /// The broker answered CONNACK with a refusal (bad credentials, not authorised…).
    case connectionRefused(reason: String)
    /// A connection attempt failed before the broker answered (DNS, refused TCP, TLS).
    case connectionFailed(reason: String)
    /// The connection ended; unless `expected`, libmosquitto is reconnecting.
    case disconnected(expected: Bool, reason: String)
    /// A subscription could not be sent.
    case subscribeFailed(filter: String, reason: String)
}

/// A received message, borrowed from libmosquitto for the duration of the handler call only.
package struct MQTTIncomingMessage: ~Copyable {
    /// Topic bytes (UTF-8, as the broker sent them, not NUL-terminated in this view).
    package let topic: UnsafeRawBufferPointer
    /// Payload bytes.
    package let payload: UnsafeRawBufferPointer
    /// QoS the message was delivered with.
    package let qos: Int32
    /// Whether the broker delivered it from its retained store.
    package let retained: Bool
}

/// Holds the handlers for the C callbacks; reached through the `userdata` pointer.
private final class CallbackContext: Sendable {
    let onMessage: @Sendable (borrowing MQTTIncomingMessage) -> Void
    let onEvent: @Sendable (MQTTClientEvent) -> Void
    let subscriptions: [(filter: String, qos: Int32)]
    let birth: MQTTConnectionOptions.Will?
    let isV5: Bool

    init(
        onMessage: @escaping @Sendable (borrowing MQTTIncomingMessage) -> Void,
        onEvent: @escaping @Sendable (MQTTClientEvent) -> Void,
        subscriptions: [(filter: String, qos: Int32)],
        birth: MQTTConnectionOptions.Will?,
        isV5: Bool
    ) {
        self.isV5 = isV5
        self.onMessage = onMessage
        self.onEvent = onEvent
        self.subscriptions = subscriptions
        self.birth = birth
    }
}

/// `mosquitto_lib_init` is not thread safe and must run once per process.
private enum Library {
    static let initialized: Void = {
        mosquitto_lib_init()
    }()
}

/// The one funnel from libmosquitto's integer results to ``MosquittoError``.
private func check(_ rc: Int32, _ function: StaticString) throws(MosquittoError) {
    guard rc != MOSQ_ERR_SUCCESS.rawValue else { return }
    throw MosquittoError(code: .init(rawValue: rc), function: function)
}
