internal import CMosquitto
#if canImport(Glibc)
import Glibc
#endif

/// A publish-only MQTT client driven by the one thread that owns it: `dang bench`'s load
/// generator. Owns one `struct mosquitto *` from libmosquitto.
///
/// Unlike ``MosquittoClient`` there is no network thread: `mosquitto_publish` writes straight to
/// the socket (no wake-up of another thread per message), and ``publish(topic:payload:qos:)`` waits
/// while libmosquitto still holds unwritten packets, so a broker that cannot keep up slows the
/// caller down instead of a queue growing in memory. Not `Sendable`: one thread uses it.
package final class MosquittoPublisher {
    private let handle: OpaquePointer
    /// QoS 1 messages the broker has acknowledged.
    package var acknowledged: Int { self.state.pointee.acknowledged }
    private let state: UnsafeMutablePointer<State>

    private struct State {
        var acknowledged = 0
        var connected = false
    }

    /// Connects (blocking until CONNACK or `timeoutMilliseconds`).
    /// - Parameter maxInflight: outgoing QoS 1 messages awaiting PUBACK before more are held back.
    package init(host: String, port: Int, clientID: String, maxInflight: Int = 1000, timeoutMilliseconds: Int = 10_000) throws(MosquittoError) {
        _ = Library.initialized
        self.state = .allocate(capacity: 1)
        self.state.initialize(to: State())
        guard let handle = mosquitto_new(clientID, true, self.state) else {
            self.state.deallocate()
            throw MosquittoError(code: .outOfMemory, function: "mosquitto_new")
        }
        self.handle = handle
        try check(mosquitto_int_option(handle, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5), "mosquitto_int_option")
        try check(mosquitto_int_option(handle, MOSQ_OPT_TCP_NODELAY, 1), "mosquitto_int_option")
        try check(mosquitto_max_inflight_messages_set(handle, UInt32(max(0, maxInflight))), "mosquitto_max_inflight_messages_set")
        mosquitto_publish_v5_callback_set(handle) { _, userdata, _, _, _ in
            userdata?.assumingMemoryBound(to: State.self).pointee.acknowledged += 1
        }
        mosquitto_connect_v5_callback_set(handle) { _, userdata, rc, _, _ in
            if rc == 0 { userdata?.assumingMemoryBound(to: State.self).pointee.connected = true }
        }
        try check(mosquitto_connect_bind_v5(handle, host, Int32(port), 30, nil, nil), "mosquitto_connect_bind_v5")
        var waited = 0
        while !self.state.pointee.connected {
            try check(mosquitto_loop(handle, 10, 1), "mosquitto_loop")
            waited += 10
            if waited > timeoutMilliseconds { throw MosquittoError(code: .noConnection, function: "mosquitto_connect_bind_v5") }
        }
    }

    deinit {
        mosquitto_disconnect_v5(self.handle, 0, nil)
        for _ in 0..<10 where mosquitto_loop(self.handle, 10, 1) == MOSQ_ERR_SUCCESS.rawValue {}
        mosquitto_destroy(self.handle)
        self.state.deallocate()
    }

    /// Publishes one message; returns once libmosquitto has written it to the socket (waiting in
    /// `mosquitto_loop` while the socket is full), and handles any incoming acknowledgements.
    package func publish(topic: UnsafePointer<CChar>, payload: UnsafeRawBufferPointer, qos: Int32) throws(MosquittoError) {
        try check(
            mosquitto_publish_v5(self.handle, nil, topic, Int32(payload.count), payload.baseAddress, qos, false, nil),
            "mosquitto_publish_v5")
        while mosquitto_want_write(self.handle) {
            try check(mosquitto_loop(self.handle, 10, 1), "mosquitto_loop")
        }
    }

    /// Reads what the broker sent (PUBACKs) and keeps the connection alive, waiting up to `milliseconds`.
    package func service(milliseconds: Int32 = 0) throws(MosquittoError) {
        try check(mosquitto_loop(self.handle, milliseconds, 1), "mosquitto_loop")
    }
}
