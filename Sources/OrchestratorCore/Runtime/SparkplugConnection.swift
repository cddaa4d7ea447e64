import Dispatch
import Foundation
import Logging
import Mosquitto
import Synchronization

/// Sparkplug B's own MQTT connection — a clean session, as the host rules ask — and, with
/// `topics.sparkplug_host_id`, the primary host application's STATE (Sparkplug 3.0 §5.3;
/// docs/mqtt-contract.md, "Sparkplug B"):
/// - the will is `{"online": false, "timestamp": T}` and, once subscribed, the birth
///   `{"online": true, "timestamp": T}`, both retained at QoS 1 on `spBv1.0/STATE/{host_id}`, with
///   T the time of each connection attempt;
/// - the host's own STATE seen offline (an old will, or anyone else's word) is answered at once
///   with its birth again;
/// - a graceful stop publishes the death, stamped now, before DISCONNECT.
///
/// Only the instance that acts is the host: a standby's connection carries no will, and a change of
/// role replaces the connection (a will is fixed at CONNECT). Stepping down publishes no death, so
/// as not to contradict the new active's birth.
///
/// A lost connection makes every node unborn and its tags uncertain (``IngestPipeline/sparkplugConnectionLost()``).
final class SparkplugConnection: Sendable {
    private let options: MQTTConnectionOptions
    /// `spBv1.0/STATE/{host_id}`, nil without a host id.
    let stateTopic: String?
    private let pipeline: IngestPipeline
    private let logger: Logger
    private let onEvent: @Sendable (MQTTClientEvent) -> Void

    private struct State {
        var client: MosquittoClient
        var hosting: Bool
        var started = false
    }

    private let state: Mutex<State>
    private let shared = Shared()
    /// Role changes replace the client off the caller's thread, in order.
    private let queue = DispatchQueue(label: "dang.sparkplug.connection")

    /// - Parameters:
    ///   - options: the connection (clean session, `spBv1.0/#` subscribed).
    ///   - hosting: whether this instance is the host from the start (no `ha`).
    init(
        options: MQTTConnectionOptions, hostID: String?, hosting: Bool, pipeline: IngestPipeline, logger: Logger,
        onEvent: @escaping @Sendable (MQTTClientEvent) -> Void
    ) throws(MosquittoError) {
        self.options = options
        self.stateTopic = hostID.map { "\(SparkplugSession.namespace)/STATE/\($0)" }
        self.pipeline = pipeline
        self.logger = logger
        self.onEvent = onEvent
        let hosting = hosting && hostID != nil
        self.state = Mutex(State(client: try Self.makeClient(
            options: options, stateTopic: self.stateTopic, hosting: hosting, shared: self.shared,
            pipeline: pipeline, logger: logger, onEvent: onEvent), hosting: hosting))
    }

    /// The STATE body: `{"online": …, "timestamp": …}`.
    static func statePayload(online: Bool, timestamp: Int64) -> [UInt8] {
        Array("{\"online\":\(online),\"timestamp\":\(timestamp)}".utf8)
    }

    /// Whether a STATE body says offline (anything else, including junk, is not acted on).
    static func saysOffline(_ payload: UnsafeRawBufferPointer) -> Bool {
        guard payload.count <= 1024, case .bool(let online)? = JSONValue(parsing: payload)?["online"] else { return false }
        return !online
    }

    private static func makeClient(
        options base: MQTTConnectionOptions, stateTopic: String?, hosting: Bool, shared: Shared,
        pipeline: IngestPipeline, logger: Logger, onEvent: @escaping @Sendable (MQTTClientEvent) -> Void
    ) throws(MosquittoError) -> MosquittoClient {
        var options = base
        let hostTopic = hosting ? stateTopic : nil
        if let hostTopic {
            options.stampedWill = {
                // Never the same T twice, even within a millisecond.
                let now = max(EpochMilliseconds.now(), shared.stamp.load(ordering: .relaxed) &+ 1)
                shared.stamp.store(now, ordering: .relaxed)
                return (
                    will: .init(topic: hostTopic, payload: Self.statePayload(online: false, timestamp: now), qos: 1, retain: true),
                    birth: .init(topic: hostTopic, payload: Self.statePayload(online: true, timestamp: now), qos: 1, retain: true)
                )
            }
        }
        let ownTopic = hostTopic.map { Array($0.utf8) }
        let holder = ClientHolder()
        let client = try MosquittoClient(
            options: options,
            onMessage: { message in
                if let ownTopic, message.topic.elementsEqual(ownTopic) {
                    // Our own STATE: said offline (an old will, or another's word), we say online again.
                    if !shared.stopping.load(ordering: .relaxed), Self.saysOffline(message.payload), let hostTopic, let client = holder.client {
                        let birth = Self.statePayload(online: true, timestamp: shared.stamp.load(ordering: .relaxed))
                        try? client.publish(topic: hostTopic, payload: birth, qos: 1, retain: true)
                        logger.notice("Sparkplug STATE said offline: birth published again", metadata: ["sparkplug.state": "\(hostTopic)"])
                    }
                    return
                }
                pipeline.handle(topic: message.topic, payload: message.payload)
            },
            onEvent: { event in
                switch event {
                case .connected:
                    shared.connected.store(true, ordering: .relaxed)
                    if let hostTopic { logger.notice("Sparkplug primary host online", metadata: ["sparkplug.state": "\(hostTopic)"]) }
                case .disconnected(expected: false, _), .connectionFailed, .connectionRefused:
                    if shared.connected.exchange(false, ordering: .relaxed) { pipeline.sparkplugConnectionLost() }
                case .disconnected(expected: true, _):
                    shared.connected.store(false, ordering: .relaxed)
                case .subscribeFailed:
                    break
                }
                onEvent(event)
            },
            afterMessages: { pipeline.deliverAfterMessage() })
        holder.client = client
        return client
    }

    func start() throws(MosquittoError) {
        try self.state.withLock { state throws(MosquittoError) in
            state.started = true
            try state.client.start()
        }
    }

    /// Publishes through the current connection (rebirth requests).
    func publish(topic: String, payload: [UInt8]) {
        let client = self.state.withLock { $0.client }
        try? client.publish(topic: topic, payload: payload, qos: 0, retain: false)
    }

    /// Becomes the primary host (this instance took the lease) or stops being it (it stood down):
    /// the connection is replaced by one with, or without, the STATE will. Returns at once; the
    /// change is made in order off the caller's thread.
    func setHosting(_ hosting: Bool) {
        guard self.stateTopic != nil else { return }
        self.queue.async { [self] in
            let current = self.state.withLock { state -> (client: MosquittoClient, started: Bool)? in
                guard state.hosting != hosting else { return nil }
                return (state.client, state.started)
            }
            guard let current else { return }
            // DISCONNECT first (no will: stepping down says nothing, the new active speaks), then the
            // same client id connects again with the role's will. (Not started yet — the lease came
            // before ingest started — the client is only replaced, and start() starts the new one.)
            if current.started { current.client.disconnect() }
            do {
                let client = try Self.makeClient(
                    options: self.options, stateTopic: self.stateTopic, hosting: hosting, shared: self.shared,
                    pipeline: self.pipeline, logger: self.logger, onEvent: self.onEvent)
                let startedMeanwhile = try self.state.withLock { state throws(MosquittoError) -> Bool in
                    state.client = client
                    state.hosting = hosting
                    if state.started { try client.start() }
                    return state.started && !current.started
                }
                // start() came between the two looks: the client it started is the old one.
                if startedMeanwhile { current.client.disconnect() }
                self.logger.notice(hosting ? "Sparkplug primary host: taking the STATE" : "Sparkplug primary host: leaving the STATE to the active instance")
            } catch {
                self.logger.error("Sparkplug connection could not be replaced", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Stops: as the host, the death (stamped now, retained) goes out first, then DISCONNECT.
    /// With `graceful` false (a simulated kill), nothing is said.
    func stop(graceful: Bool = true) {
        // Role changes still queued are done first.
        self.queue.sync {}
        let (client, hosting) = self.state.withLock { ($0.client, $0.hosting) }
        if graceful, hosting, let topic = self.stateTopic {
            // (Our own death comes back to us: it is not answered.)
            self.shared.stopping.store(true, ordering: .relaxed)
            let now = max(EpochMilliseconds.now(), self.shared.stamp.load(ordering: .relaxed) &+ 1)
            try? client.publish(topic: topic, payload: Self.statePayload(online: false, timestamp: now), qos: 1, retain: true)
        }
        // (A simulated kill waits for nothing.)
        client.disconnect(acknowledgement: graceful ? .seconds(3) : .zero)
    }
}

/// What the connections of one ``SparkplugConnection`` share with their handlers.
private final class Shared: Sendable {
    /// T of the current connection's will and birth.
    let stamp = Atomic<Int64>(0)
    /// Whether the connection is up (a loss is reported once).
    let connected = Atomic<Bool>(false)
    /// The host is saying its death: its STATE is no longer defended.
    let stopping = Atomic<Bool>(false)
}

/// The client, for its own message handler (set once it exists).
private final class ClientHolder: @unchecked Sendable {
    // Written once, before the client is started (no message can arrive before); weak, as the
    // client holds its handler.
    weak var client: MosquittoClient?
}
