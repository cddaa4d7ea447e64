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
/// ``start()`` runs one network thread of ours that drives `mosquitto_loop` and owns the
/// connection: it connects (the first time and after every loss) with `mosquitto_connect_bind_v5`,
/// so MQTT v5 CONNECT properties — the session expiry of a persistent session — go with every
/// reconnect (libmosquitto's own reconnect sends none), after a jittered exponential backoff between
/// `reconnectDelayMin` and `reconnectDelayMax`. After each `mosquitto_loop` it drains what the
/// socket already holds with `mosquitto_loop_read` (one `pselect` per burst, not per message).
/// Every callback — messages, connection changes — runs on that thread. The message handler is
/// given borrowed views of the topic and payload that are valid only during the call (libmosquitto
/// frees the message when the callback returns), so it must copy what it keeps. What a handler
/// publishes is written once it returns, before the `afterMessages` hook runs. While a handler
/// runs, libmosquitto reads nothing more from the socket: a slow handler pushes back on the broker,
/// which queues QoS 1 messages, instead of an unbounded buffer growing here.
package final class MosquittoClient: @unchecked Sendable {
    private let handle: OpaquePointer
    private let context: CallbackContext
    private let options: MQTTConnectionOptions
    private let loop = Mutex(LoopState.idle)
    private let stopSignal = DispatchSemaphore(value: 0)
    private let exited = DispatchSemaphore(value: 0)
    /// CONNECT properties sent on every (re)connection (MQTT v5 session expiry); freed in deinit.
    private let connectProperties: PropertyList

    private enum LoopState {
        case idle
        case running
        case stopped
    }

    /// Creates the client and applies every option; nothing touches the network until ``start()``.
    ///
    /// - Parameter afterMessages: runs on the network thread after each message's handler has
    ///   returned and what it published has been written to the socket — the place for work that
    ///   must not hold those publications back (the decisions an alert triggers). libmosquitto
    ///   holds its callback lock during a handler, so that work cannot be done from inside it.
    package init(
        options: MQTTConnectionOptions,
        onMessage: @escaping @Sendable (borrowing MQTTIncomingMessage) -> Void,
        onEvent: @escaping @Sendable (MQTTClientEvent) -> Void,
        afterMessages: (@Sendable () -> Void)? = nil
    ) throws(MosquittoError) {
        _ = Library.initialized
        self.options = options
        self.connectProperties = PropertyList()
        self.afterMessages = afterMessages
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
        self.disconnect()
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
            if let psk = tls.psk, let identity = tls.pskIdentity {
                try check(mosquitto_tls_psk_set(self.handle, psk, identity, nil), "mosquitto_tls_psk_set")
            } else {
                try check(
                    mosquitto_tls_set(self.handle, tls.caFile, tls.caPath, tls.certFile, tls.keyFile, nil),
                    "mosquitto_tls_set"
                )
                try check(mosquitto_tls_insecure_set(self.handle, !tls.verifyHostname), "mosquitto_tls_insecure_set")
            }
            if let version = tls.version {
                // 1 = SSL_VERIFY_PEER: the broker's certificate is always checked.
                try check(mosquitto_tls_opts_set(self.handle, 1, version, nil), "mosquitto_tls_opts_set")
            }
        }
        if let inflight = self.options.maxInflight {
            try check(mosquitto_max_inflight_messages_set(self.handle, UInt32(max(0, inflight))), "mosquitto_max_inflight_messages_set")
        }
        if self.options.protocolVersion == .v5 {
            if let receiveMaximum = self.options.receiveMaximum {
                try check(mosquitto_int_option(self.handle, MOSQ_OPT_RECEIVE_MAXIMUM, Int32(receiveMaximum)), "mosquitto_int_option")
            }
            if !self.options.cleanStart && self.options.sessionExpiry > 0 {
                try check(
                    mosquitto_property_add_int32(
                        &self.connectProperties.list, Int32(MQTT_PROP_SESSION_EXPIRY_INTERVAL.rawValue), self.options.sessionExpiry),
                    "mosquitto_property_add_int32")
            }
        }
        // Publications from other threads are queued and wake our loop (no concurrent socket writes).
        try check(mosquitto_threaded_set(self.handle, true), "mosquitto_threaded_set")
        if let will = self.options.will {
            let rc = will.payload.withUnsafeBytes { bytes in
                mosquitto_will_set_v5(
                    self.handle, will.topic, Int32(bytes.count), bytes.baseAddress, will.qos, will.retain, nil)
            }
            try check(rc, "mosquitto_will_set_v5")
        }

        mosquitto_connect_v5_callback_set(self.handle) { mosq, userdata, rc, flags, _ in
            guard let userdata else { return }
            let context = Unmanaged<CallbackContext>.fromOpaque(userdata).takeUnretainedValue()
            if rc == 0 {
                context.acknowledged.store(true, ordering: .relaxed)
                for (filter, qos) in context.subscriptions {
                    let rc = mosquitto_subscribe_v5(mosq, nil, filter, qos, 0, nil)
                    if rc != MOSQ_ERR_SUCCESS.rawValue {
                        context.onEvent(.subscribeFailed(filter: filter, reason: String(cString: mosquitto_strerror(rc))))
                    }
                }
                if let birth = context.birth.withLock({ $0 }) {
                    let rc = birth.payload.withUnsafeBytes { bytes in
                        mosquitto_publish_v5(
                            mosq, nil, birth.topic, Int32(bytes.count), bytes.baseAddress, birth.qos, birth.retain, nil)
                    }
                    if rc == MOSQ_ERR_SUCCESS.rawValue, birth.qos > 0 { context.unacknowledged.add(1, ordering: .relaxed) }
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
        mosquitto_publish_v5_callback_set(self.handle) { _, userdata, _, _, _ in
            guard let userdata else { return }
            let context = Unmanaged<CallbackContext>.fromOpaque(userdata).takeUnretainedValue()
            context.unacknowledged.subtract(1, ordering: .relaxed)
        }
        mosquitto_message_v5_callback_set(self.handle) { _, userdata, message, properties in
            guard let userdata, let message else { return }
            let context = Unmanaged<CallbackContext>.fromOpaque(userdata).takeUnretainedValue()
            let m = message.pointee
            guard let topic = m.topic else { return }
            let topicLength = strlen(topic)
            let incoming = MQTTIncomingMessage(
                topic: UnsafeRawBufferPointer(start: topic, count: topicLength),
                payload: UnsafeRawBufferPointer(start: m.payload, count: Int(max(0, m.payloadlen))),
                qos: m.qos,
                retained: m.retain,
                properties: properties
            )
            context.onMessage(incoming)
        }
    }

    /// Starts the network thread: it connects, and connects again after every loss, until
    /// ``disconnect()``. Every change is reported as an event. Throws nothing today; kept throwing
    /// for options that can only be checked when connecting.
    package func start() throws(MosquittoError) {
        let proceed = self.loop.withLock { state -> Bool in
            guard case .idle = state else { return false }
            state = .running
            return true
        }
        guard proceed else { return }
        let thread = Thread { [self] in
            self.run()
            self.exited.signal()
        }
        thread.name = "dang-mqtt"
        thread.start()
    }

    private var isStopped: Bool {
        if case .stopped = self.loop.withLock({ $0 }) { return true }
        return false
    }

    private let afterMessages: (@Sendable () -> Void)?

    /// Writes what handlers published, then runs ``afterMessages`` (outside any libmosquitto
    /// callback), then writes what that published.
    private func settle() -> Int32 {
        if mosquitto_want_write(self.handle) {
            let rc = mosquitto_loop_write(self.handle, 1)
            if rc != MOSQ_ERR_SUCCESS.rawValue { return rc }
        }
        guard let afterMessages = self.afterMessages else { return MOSQ_ERR_SUCCESS.rawValue }
        afterMessages()
        if mosquitto_want_write(self.handle) { return mosquitto_loop_write(self.handle, 1) }
        return MOSQ_ERR_SUCCESS.rawValue
    }

    /// The network thread: connect, loop while connected, back off with jitter, repeat.
    private func run() {
        let first = Double(max(1, self.options.reconnectDelayMin))
        let cap = Double(max(self.options.reconnectDelayMin, self.options.reconnectDelayMax, 1))
        var delay = first
        while !self.isStopped {
            if let stamped = self.options.stampedWill {
                let (will, birth) = stamped()
                let rc = will.payload.withUnsafeBytes { bytes in
                    mosquitto_will_set_v5(self.handle, will.topic, Int32(bytes.count), bytes.baseAddress, will.qos, will.retain, nil)
                }
                if rc != MOSQ_ERR_SUCCESS.rawValue {
                    self.context.onEvent(.connectionFailed(reason: "mosquitto_will_set_v5: " + String(cString: mosquitto_strerror(rc))))
                }
                self.context.birth.withLock { $0 = birth }
            }
            let rc = mosquitto_connect_bind_v5(
                self.handle, self.options.host, Int32(self.options.port), Int32(self.options.keepAlive), nil,
                self.connectProperties.list)
            if rc == MOSQ_ERR_SUCCESS.rawValue {
                self.context.acknowledged.store(false, ordering: .relaxed)
                var loopRC = MOSQ_ERR_SUCCESS.rawValue
                while !self.isStopped {
                    loopRC = mosquitto_loop(self.handle, 100, 1)
                    if loopRC != MOSQ_ERR_SUCCESS.rawValue { break }
                    loopRC = self.drain()
                    if loopRC != MOSQ_ERR_SUCCESS.rawValue { break }
                }
                // Work left by the last handlers runs even when the connection just ended.
                self.afterMessages?()
                if self.isStopped { break }
                if self.context.acknowledged.load(ordering: .relaxed) {
                    // A connection the broker had accepted starts the backoff afresh.
                    delay = first
                } else {
                    // Lost before any CONNACK (a TLS handshake that failed after a pending connect):
                    // libmosquitto reports no disconnect for it, so say it here.
                    let reason = loopRC == MOSQ_ERR_ERRNO.rawValue ? String(cString: strerror(errno)) : String(cString: mosquitto_strerror(loopRC))
                    self.context.onEvent(.connectionFailed(reason: reason))
                }
            } else {
                let reason = rc == MOSQ_ERR_ERRNO.rawValue ? String(cString: strerror(errno)) : String(cString: mosquitto_strerror(rc))
                self.context.onEvent(.connectionFailed(reason: reason))
            }
            // Full jitter in the upper half: reconnecting clients do not stampede a restarted broker.
            _ = self.stopSignal.wait(timeout: .now() + delay * Double.random(in: 0.5...1))
            delay = min(delay * 2, cap)
        }
        // Stopping: let the loop write what is queued (the offline status, DISCONNECT) and close.
        for _ in 0..<30 where mosquitto_loop(self.handle, 100, 1) == MOSQ_ERR_SUCCESS.rawValue {}
        self.afterMessages?()
    }

    /// Reads what the socket already holds, up to 256 packets, without waiting in `pselect` for
    /// each: `mosquitto_loop` reads one QoS 0 packet per call, and its `pselect` would be a
    /// quarter of the system calls per message. What a handler published goes out between
    /// packets, so an alert does not wait for the burst to end, and before ``afterMessages`` runs.
    private func drain() -> Int32 {
        for _ in 0..<256 {
            let settled = self.settle()
            if settled != MOSQ_ERR_SUCCESS.rawValue { return settled }
            errno = 0
            let rc = mosquitto_loop_read(self.handle, 1)
            if rc != MOSQ_ERR_SUCCESS.rawValue { return rc }
            // A non-blocking read that found nothing: the socket is empty.
            if errno == EAGAIN || errno == EWOULDBLOCK { break }
        }
        return self.settle()
    }

    /// Subscribes to a topic filter. Call it from the `.connected` event so that every reconnect
    /// (with a clean session) subscribes again.
    package func subscribe(_ filter: String, qos: Int32) throws(MosquittoError) {
        try check(mosquitto_subscribe_v5(self.handle, nil, filter, qos, 0, nil), "mosquitto_subscribe_v5")
    }

    /// Unsubscribes from a topic filter.
    package func unsubscribe(_ filter: String) throws(MosquittoError) {
        try check(mosquitto_unsubscribe_v5(self.handle, nil, filter, nil), "mosquitto_unsubscribe_v5")
    }

    /// Queues a message for publication; libmosquitto's network thread sends it. Safe from any
    /// thread, including inside the message handler.
    package func publish(topic: String, payload: UnsafeRawBufferPointer, qos: Int32, retain: Bool) throws(MosquittoError) {
        let rc = mosquitto_publish_v5(
            self.handle, nil, topic, Int32(payload.count), payload.baseAddress, qos, retain, nil)
        try self.sent(rc, qos: qos)
    }

    /// Checks a publication's result; one with QoS 1 or 2 awaits its acknowledgement.
    private func sent(_ rc: Int32, qos: Int32) throws(MosquittoError) {
        try check(rc, "mosquitto_publish_v5")
        if qos > 0 { self.context.unacknowledged.add(1, ordering: .relaxed) }
    }

    /// Queues a message for publication (see ``publish(topic:payload:qos:retain:)``).
    package func publish(topic: String, payload: [UInt8], qos: Int32, retain: Bool) throws(MosquittoError) {
        let rc = payload.withUnsafeBytes { bytes in
            mosquitto_publish_v5(self.handle, nil, topic, Int32(bytes.count), bytes.baseAddress, qos, retain, nil)
        }
        try self.sent(rc, qos: qos)
    }

    /// Queues a request (a module invocation, docs/mqtt-contract.md, "Module invocations"): with
    /// MQTT v5 it carries the response-topic and correlation-data properties; with v3.1.1 the
    /// payload alone says where to answer.
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
        try self.sent(rc, qos: qos)
    }

    /// Sends DISCONNECT (so the broker does not publish the will) and stops the network thread
    /// once outgoing messages have been written (at most about 3 s). QoS 1 and 2 messages are
    /// first given up to `acknowledgement` to be acknowledged: a socket closed under a PUBACK the
    /// broker is still sending makes it drop the client as lost — and publish its will. (3 s: on
    /// a loaded broker — the whole test suite's — 1 s was once not enough for the Sparkplug death.)
    package func disconnect(acknowledgement: Duration = .seconds(3)) {
        if case .running = self.loop.withLock({ $0 }), self.context.acknowledged.load(ordering: .relaxed) {
            let deadline = ContinuousClock.now.advanced(by: acknowledgement)
            while self.context.unacknowledged.load(ordering: .relaxed) > 0, ContinuousClock.now < deadline {
                usleep(2000)
            }
        }
        let previous = self.loop.withLock { state -> LoopState in
            defer { state = .stopped }
            return state
        }
        self.stopSignal.signal()
        guard case .running = previous else { return }
        mosquitto_disconnect_v5(self.handle, 0, nil)
        _ = self.exited.wait(timeout: .now() + 5)
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
    /// The connection ended; unless `expected`, the client is reconnecting.
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
    /// The MQTT v5 properties (libmosquitto's list, valid during the handler only): read on demand,
    /// so the hot path pays nothing for them.
    let properties: OpaquePointer?

    /// MQTT v5 response topic (a request's "answer here"), if the message has one.
    package var responseTopic: String? {
        var value: UnsafeMutablePointer<CChar>? = nil
        guard mosquitto_property_read_string(self.properties, Int32(MQTT_PROP_RESPONSE_TOPIC.rawValue), &value, false) != nil,
            let value
        else { return nil }
        defer { free(value) }
        return String(cString: value)
    }

    /// MQTT v5 correlation data (what a response carries back), if the message has it.
    package var correlationData: [UInt8]? {
        var value: UnsafeMutableRawPointer? = nil
        var length: UInt16 = 0
        guard mosquitto_property_read_binary(self.properties, Int32(MQTT_PROP_CORRELATION_DATA.rawValue), &value, &length, false) != nil
        else { return nil }
        defer { free(value) }
        guard let value else { return [] }
        return Array(UnsafeRawBufferPointer(start: value, count: Int(length)))
    }
}

/// Holds the handlers for the C callbacks; reached through the `userdata` pointer.
private final class CallbackContext: Sendable {
    let onMessage: @Sendable (borrowing MQTTIncomingMessage) -> Void
    let onEvent: @Sendable (MQTTClientEvent) -> Void
    let subscriptions: [(filter: String, qos: Int32)]
    /// Published after the subscriptions on every connect (replaced before each attempt when the
    /// options stamp their will).
    let birth: Mutex<MQTTConnectionOptions.Will?>
    let isV5: Bool
    /// The broker accepted the current connection (CONNACK success).
    let acknowledged = Atomic<Bool>(false)
    /// QoS 1 and 2 publications not yet acknowledged (an estimate: a lost connection can leave
    /// some uncounted; it only bounds how long ``MosquittoClient/disconnect(acknowledgement:)`` waits).
    let unacknowledged = Atomic<Int>(0)

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
        self.birth = Mutex(birth)
    }
}

/// A libmosquitto property list, owned (freed once).
private final class PropertyList: @unchecked Sendable {
    var list: OpaquePointer? = nil

    deinit { mosquitto_property_free_all(&self.list) }
}

/// `mosquitto_lib_init` is not thread safe and must run once per process.
enum Library {
    static let initialized: Void = {
        mosquitto_lib_init()
    }()
}

/// The one funnel from libmosquitto's integer results to ``MosquittoError``.
func check(_ rc: Int32, _ function: StaticString) throws(MosquittoError) {
    guard rc != MOSQ_ERR_SUCCESS.rawValue else { return }
    throw MosquittoError(code: .init(rawValue: rc), function: function)
}
