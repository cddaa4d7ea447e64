package import Foundation
package import Logging
import Mosquitto
package import ServiceLifecycle
import Synchronization

/// One running orchestrator: the MQTT client, the ingest pipeline and the record writer, wired
/// together. `dang run` and the integration tests build it the same way.
package final class Orchestrator: Sendable {
    /// The configuration in force: the one it started with, as reloads changed it (``reload()``).
    package var config: OrchestratorConfig { self.live.withLock { $0 } }
    let live: Mutex<OrchestratorConfig>
    /// Where ``reload()`` reads the configuration again; nil when it was not started from a file.
    let configurationSource: ConfigurationSource?
    /// One reload at a time (SIGHUP and `POST /reload` may come together).
    let reloadLock = Mutex(())
    let reloadCounts = Mutex((applied: 0, refused: 0))
    /// When the detection timer last turned (monotonic nanoseconds; 0 before the first tick): the
    /// liveness systemd's watchdog is fed from (``ServiceNotifier``).
    private let tickedAt = Atomic<UInt64>(0)
    package var lastTick: UInt64 { self.tickedAt.load(ordering: .relaxed) }
    package let pipeline: IngestPipeline
    package let recordWriter: RecordWriter
    package let publisher: AlertPublisher
    package let coordinator: ModuleCoordinator
    private let client: MosquittoClient
    /// Sparkplug B's own clean-session connection, when the main one is persistent or this
    /// instance is the Sparkplug primary host.
    let sparkplug: SparkplugConnection?
    private let connection = ConnectionTracker()
    let logger: Logger
    package let startedAt: Date
    package let alertDesk: AlertDesk
    /// The orchestrator's own alerts (`orchestrator/spool`, `orchestrator/record`).
    package let systemAlerts: SystemAlerts
    /// Reads and operator actions on the record (API, acknowledgements, the concierge, start-up).
    package let reader: RecordReader
    /// The reader's connections.
    package var databasePool: DatabasePool { self.reader.pool }
    /// `GET /metrics`: its registry also receives the swift-metrics instruments of the record writer.
    package let metrics: MetricsExporter
    /// `GET /events`: alerts, transitions and service states as they happen.
    package let events: EventStream
    /// The HTTPS listener's certificate and key (`api.tls`), reloaded by ``reloadCertificates()``.
    package let apiCertificates: APICertificates?
    /// The election of the active instance (`ha.enabled`); nil for a single instance, always active.
    package let lease: ActiveLease?
    /// The shards' leases and subscriptions (`sharding.shards` > 1); shard 0's lease is ``lease``.
    let shards: ShardSet?
    /// What this instance raised while it stood by (``StandbyLedger``).
    let ledger: StandbyLedger
    /// Tells the lease when another instance announces itself active on MQTT.
    let witness = GatewayWitness()
    /// The epoch this instance acts under (0: it does not): a return from isolation is no takeover.
    let actingEpoch = Atomic<Int64>(0)

    /// What the broker connection is doing now.
    package struct ConnectionStatus: Sendable, Equatable {
        package var connected = false
        package var connects = 0
        package var lastError: String?
    }

    package init(
        config: OrchestratorConfig, logger: Logger, extraSinks: [any AlertSink] = [], configurationSource: ConfigurationSource? = nil
    ) throws {
        self.live = Mutex(config)
        self.configurationSource = configurationSource
        self.logger = logger
        self.startedAt = Date()
        if let refusal = config.api.plaintextRefusal { throw APICertificates.Problem(key: "api.listen", message: refusal) }
        let events = EventStream()
        self.events = events
        self.apiCertificates = config.api.enabled ? try config.api.tls.map { try APICertificates($0) } : nil
        self.publisher = AlertPublisher(prefix: config.topics.prefix, qos: config.topics.alertQoS, logger: logger)
        let metrics = MetricsExporter()
        self.metrics = metrics
        self.recordWriter = RecordWriter(settings: config.database, logger: logger, metricsFactory: metrics.factory)
        if let problem = self.recordWriter.spoolProblem {
            // Without its spool the record is not lossless: refuse to start rather than run on memory.
            throw Spool.Problem(message: "database.spool_dir: \(problem)")
        }
        self.recordWriter.setInstance(config.availability.instanceID)
        let acting = self.publisher
        let shards = config.availability.isSharded ? ShardSet(config: config, logger: logger) : nil
        self.shards = shards
        self.ledger = StandbyLedger(acting: { acting.isActing }, hearsWhileActing: shards != nil)
        let pipeline = IngestPipeline(
            // The record first: once an alert is published, it is already in the spool.
            config: config, sinks: [self.recordWriter, self.publisher, events, self.ledger] + extraSinks, logger: logger)
        self.pipeline = pipeline
        // The orchestrator's own alerts: recorded first, then published, like any other.
        self.systemAlerts = SystemAlerts(sinks: [self.recordWriter, self.publisher, events] + extraSinks)
        self.systemAlerts.follow(self.recordWriter, spoolDirectory: config.database.spoolDirectory)
        let publisher = self.publisher
        let writer = self.recordWriter
        let coordinator = ModuleCoordinator(
            config: config, data: pipeline,
            outputs: CoordinatorOutputs(
                publish: { topic, payload, request in publisher.publish(topic: topic, payload: payload, request: request) },
                record: { writer.deliver(record: $0) }, observe: { metrics.observe($0) }),
            logger: logger, advisor: config.llm.isActive ? Advisor(client: LLMClient(settings: .forAdvisor(config))) : nil)
        self.coordinator = coordinator
        let pool = DatabasePool(url: config.database.url, logger: logger)
        self.reader = RecordReader(pool: pool, logger: logger)
        let alertPublisher = self.publisher
        let alertDesk = AlertDesk(
            shelf: self.publisher.shelf, journal: self.reader,
            announce: { transition in
                alertPublisher.deliver(transition)
                events.deliver(transition)
            },
            service: { tag, outOfService in
                pipeline.setOutOfService(tag: tag, outOfService != nil)
                alertPublisher.announceService(tag: tag, outOfService)
                events.deliver(service: tag, outOfService)
            }, logger: logger)
        self.alertDesk = alertDesk
        // After the record and the alert publisher: an alert is out (written to the socket) before
        // the decision it triggers is made — once the message's handler has returned.
        pipeline.attachDecisions(coordinator)

        // With ha.enabled each instance says its own state on its own topic; the active one says
        // the gateway's on {prefix}/status when it takes over.
        let statusTopic = Self.statusTopic(config)
        var options = config.connectionOptions(
            will: .init(topic: statusTopic, payload: Array(#"{"state":"offline"}"#.utf8), qos: 1, retain: true))
        // A persistent session for plant data and the decision side; Sparkplug B on its own clean
        // session when that differs (its host rules ask for one).
        let separateSparkplug = !pipeline.sparkplugSubscriptions.isEmpty && (!config.mqtt.cleanStart || config.topics.sparkplugHostID != nil)
        // (Sharded, the plant data filters are those of the shards held: ShardSet.)
        let sensorFilters = shards == nil ? pipeline.sensorSubscriptions : []
        let mainFilters = separateSparkplug ? sensorFilters : sensorFilters + pipeline.sparkplugSubscriptions
        let sparkplugShared = !separateSparkplug && !pipeline.sparkplugSubscriptions.isEmpty
        options.subscriptions = (mainFilters + coordinator.subscriptions).map { ($0, Int32(config.mqtt.subscribeQoS)) }
        options.birth = .init(
            topic: statusTopic, payload: Self.statusPayload(state: "online", startedAt: self.startedAt, config: config), qos: 1, retain: true)

        // With ha.enabled, the active's alerts, invocations and decisions too: a standby hears what
        // it announced (StandbyLedger).
        let alertPrefix = "\(config.topics.prefix)/alert/"
        let commandPrefix = "\(config.topics.prefix)/cmd/"
        let decisionTopic = "\(config.topics.prefix)/decision"
        // And the gateway's status, where a new active announces itself (the witness an isolated
        // active listens to: ActiveLease.supersededOnWire).
        let gatewayStatusTopic = "\(config.topics.prefix)/status"
        let resultPrefix = "\(config.topics.prefix)/result/"
        // Sharded: who took which shard.
        let shardPrefix = "\(config.topics.prefix)/shard/"
        let witness = self.witness
        let decisionTopics = PrefixMatcher(prefixes: [
            "\(config.topics.prefix)/result/", "\(config.topics.prefix)/approve/", "\(config.topics.prefix)/request/", "\(config.topics.prefix)/ack/",
        ] + (config.availability.enabled ? [alertPrefix, commandPrefix, decisionTopic, gatewayStatusTopic] : [])
            + (config.availability.isSharded ? [shardPrefix] : []))
        if config.availability.enabled {
            options.subscriptions += [alertPrefix + "#", commandPrefix + "#", decisionTopic, gatewayStatusTopic].map {
                ($0, Int32(config.mqtt.subscribeQoS))
            }
        }
        if shards != nil {
            options.subscriptions.append((shardPrefix + "+", Int32(config.mqtt.subscribeQoS)))
        }
        let subscribeQoS = Int32(config.mqtt.subscribeQoS)
        let ledger = self.ledger
        let ackPrefix = "\(config.topics.prefix)/ack/"
        let connection = self.connection
        let systemAlerts = self.systemAlerts
        alertPublisher.setMaxQueued(config.mqtt.maxQueued)
        let endpoint = "\(config.mqtt.endpoint.host):\(config.mqtt.endpoint.port)"
        self.client = try MosquittoClient(
            options: options,
            onMessage: { message in
                // The decision side's own topics (results, approvals, requests) are few; the rest is plant data.
                if decisionTopics.matches(message.topic) {
                    let topic = String(decoding: message.topic, as: UTF8.self)
                    if topic.hasPrefix(alertPrefix) {
                        ledger.hear(Array(message.payload))
                    } else if topic.hasPrefix(commandPrefix) {
                        ledger.hearInvocation(Array(message.payload))
                        // Sharded: another instance's invocation starts its cooldowns here too.
                        if shards != nil { coordinator.heardInvocation(Array(message.payload)) }
                    } else if let shards, topic.hasPrefix(shardPrefix) {
                        shards.heardShard(String(topic.dropFirst(shardPrefix.count).prefix(8)), payload: Array(message.payload.prefix(4096)))
                    } else if topic == decisionTopic {
                        ledger.hearDecision(Array(message.payload))
                    } else if topic == gatewayStatusTopic {
                        witness.heard(Array(message.payload.prefix(4096)))
                    } else if topic.hasPrefix(ackPrefix) {
                        // A standby leaves acknowledgements to the active one; sharded, to shard 0's
                        // holder (one acknowledgement, whichever unit the alert is of).
                        guard alertPublisher.isActing, shards.map { $0.held[0] != nil } ?? true else { return }
                        alertDesk.acknowledgeFromMQTT(String(topic.dropFirst(ackPrefix.count)), payload: Array(message.payload.prefix(4096)))
                    } else {
                        // (A standby keeps results for the takeover; the coordinator leaves them.)
                        if topic.hasPrefix(resultPrefix) { ledger.hearResult(topic: topic, payload: Array(message.payload)) }
                        coordinator.handle(topic: topic, payload: Array(message.payload))
                    }
                } else {
                    pipeline.handle(topic: message.topic, payload: message.payload)
                }
            },
            onEvent: { event in
                switch event {
                case .connected:
                    alertPublisher.connectionChanged(connected: true)
                    // (A clean session forgot them.)
                    shards?.updateSubscriptions(qos: subscribeQoS, all: true)
                    // Back from an outage: staleness counts again, and the interval's data may be missing.
                    pipeline.brokerConnection(connected: true, at: EpochMilliseconds.now())
                    systemAlerts.report(.broker(connected: true, endpoint: endpoint, reason: nil))
                case .disconnected(let expected, let reason):
                    alertPublisher.connectionChanged(connected: false)
                    pipeline.brokerConnection(connected: false, at: EpochMilliseconds.now())
                    if sparkplugShared && !expected { pipeline.sparkplugConnectionLost() }
                    // A disconnection of our own (the shutdown) is no alarm.
                    if !expected { systemAlerts.report(.broker(connected: false, endpoint: endpoint, reason: reason)) }
                case .connectionFailed(let reason), .connectionRefused(let reason):
                    alertPublisher.connectionChanged(connected: false)
                    pipeline.brokerConnection(connected: false, at: EpochMilliseconds.now())
                    if sparkplugShared { pipeline.sparkplugConnectionLost() }
                    // One alarm while the broker is away, however many attempts fail.
                    systemAlerts.report(.broker(connected: false, endpoint: endpoint, reason: reason))
                case .subscribeFailed: break
                }
                Self.log(event, endpoint: endpoint, connection: connection, logger: logger)
            },
            afterMessages: { pipeline.deliverAfterMessage() })
        self.publisher.attach(self.client)
        shards?.attach(self.client)
        if separateSparkplug {
            var sparkplug = config.connectionOptions(will: nil)
            sparkplug.clientID = String(config.mqtt.clientID.prefix(250)) + "-spb"
            sparkplug.cleanStart = true
            sparkplug.sessionExpiry = 0
            sparkplug.subscriptions = pipeline.sparkplugSubscriptions.map { ($0, Int32(config.mqtt.subscribeQoS)) }
            let sparkplugEndpoint = endpoint + " (Sparkplug B)"
            let sparkplugConnection = ConnectionTracker()
            self.sparkplug = try SparkplugConnection(
                options: sparkplug, hostID: config.topics.sparkplugHostID, hosting: !config.availability.enabled, pipeline: pipeline,
                logger: logger, onEvent: { event in Self.log(event, endpoint: sparkplugEndpoint, connection: sparkplugConnection, logger: logger) })
        } else {
            self.sparkplug = nil
        }
        let mainClient = self.client
        pipeline.attachCommandPublisher { [sparkplug = self.sparkplug] topic, payload in
            // (Rebirth requests are the active instance's to make.)
            guard alertPublisher.isActing else { return }
            if let sparkplug {
                sparkplug.publish(topic: topic, payload: payload)
            } else {
                try? mainClient.publish(topic: topic, payload: payload, qos: 0, retain: false)
            }
        }
        if config.availability.enabled {
            // Stand by, warm, until the lease says otherwise.
            self.lease = shards?.leases.first ?? ActiveLease(
                url: config.database.url, holder: config.availability.instanceID, lease: config.availability.lease, logger: logger)
            self.recordWriter.setActing(false, lease: nil)
            self.publisher.setActing(false)
            self.coordinator.setActing(false)
        } else {
            self.lease = nil
        }
        if let shards {
            for (shard, lease) in shards.leases.enumerated() {
                lease.onChange { [unowned self] role, epoch in self.applyShardRole(shard, role, epoch: epoch, shards: shards) }
            }
            self.recordWriter.onFenced { lost in
                for lease in shards.leases where lost.contains(where: { $0.name == lease.name }) {
                    lease.stepDown("a record batch was refused: another instance holds \(lease.name)")
                }
            }
        } else {
            self.lease?.onChange { [unowned self] role, epoch in self.applyRole(role, epoch: epoch) }
            self.recordWriter.onFenced { [lease = self.lease] _ in lease?.stepDown("a record batch was refused: another instance holds the lease") }
        }
        self.witness.lease.withLock { $0 = self.lease }
    }

    /// `{prefix}/status`, or with `ha.enabled` `{prefix}/status/{instance}`.
    private static func statusTopic(_ config: OrchestratorConfig) -> String {
        config.availability.enabled
            ? "\(config.topics.prefix)/status/\(config.availability.instanceID)" : "\(config.topics.prefix)/status"
    }

    /// Closes the broker connection without a DISCONNECT of ours being awaited (``haltAsIfKilled()``).
    func dropBrokerConnection() { self.client.disconnect(acknowledgement: .zero) }

    /// A retained QoS 1 message of the orchestrator's own (a shard taken: `{prefix}/shard/{n}`).
    func publishRetained(_ topic: String, _ payload: [UInt8]) throws {
        try self.client.publish(topic: topic, payload: payload, qos: 1, retain: true)
    }

    /// The active instance says the gateway's state on `{prefix}/status` (retained).
    func publishGatewayStatus(config: OrchestratorConfig) throws {
        try self.client.publish(
            topic: "\(config.topics.prefix)/status",
            payload: Self.statusPayload(state: "online", startedAt: self.startedAt, config: config, role: "active"), qos: 1, retain: true)
    }

    /// This instance's role: `single` (no `ha`), `active`, `standby` or `isolated`. Sharded, an
    /// instance that holds a shard but not the active role's (shard 0) is `active` too.
    package var role: String {
        guard let lease = self.lease else { return "single" }
        if lease.role == .standby, let shards = self.shards, !shards.held.isEmpty { return "active" }
        return lease.role.rawValue
    }

    /// Shards taken over since the start, each counted once its units are subscribed to.
    package var shardTakeovers: Int { self.shards?.takeovers.load(ordering: .relaxed) ?? 0 }

    /// The shards this instance holds (`sharding.shards`), in order; nil without sharding.
    package var heldShards: [Int]? { self.shards.map { $0.held.keys.sorted() } }

    /// The retained status body: `{"state", "version", "started_at"}`.
    private static func statusPayload(state: String, startedAt: Date, config: OrchestratorConfig, role: String? = nil) -> [UInt8] {
        var json = JSONWriter()
        json.field("state", string: state)
        json.field("version", string: DangVersion.current)
        json.field("started_at", string: startedAt.formatted(.iso8601))
        json.field("instance", string: config.availability.instanceID)
        if let role { json.field("role", string: role) }
        return json.finish()
    }

    /// SIGHUP: the API's certificate and key read again (a rotation). False, with the reason
    /// logged, when they cannot be; the pair in use then stays.
    @discardableResult
    package func reloadCertificates() -> Bool {
        guard let certificates = self.apiCertificates else {
            self.logger.notice("SIGHUP: nothing to reload (no api.tls)")
            return true
        }
        do {
            try certificates.reload()
            self.logger.notice(
                "SIGHUP: the API certificate was read again", metadata: ["tls.not_after": "\(certificates.notAfter.formatted(.iso8601))"])
            return true
        } catch {
            self.logger.error("SIGHUP: the API certificate stays as it was", metadata: ["error": "\(error)"])
            return false
        }
    }

    /// The detection timer turned (``lastTick``).
    fileprivate func ticked() { self.tickedAt.store(DispatchTime.now().uptimeNanoseconds, ordering: .relaxed) }

    package var connectionStatus: ConnectionStatus { self.connection.status.withLock { $0 } }

    /// The services to run, in dependency order (shutdown runs in reverse: ingest stops, then the
    /// record writer drains).
    private let apiPortValue = Atomic<Int>(0)

    /// The port the HTTP API listens on, once it does (0 before).
    package var apiListeningPort: Int { self.apiPortValue.load(ordering: .relaxed) }

    private var apiPort: @Sendable (Int) async -> Void {
        { [weak self] port in self?.apiPortValue.store(port, ordering: .relaxed) }
    }

    package var services: [any Service] {
        var services: [any Service] = [RecordService(writer: self.recordWriter), IngestService(orchestrator: self), DecisionService(orchestrator: self)]
        // First, so stopped last (after the record writer has drained).
        if let lease = self.lease { services.insert(LeaseService(lease: lease), at: 0) }
        if let shards = self.shards { services.insert(ShardService(shards: shards), at: 0) }
        if self.config.api.enabled {
            services.append(
                APIService(
                    server: APIServer(
                        settings: self.config.api, status: self, actions: self, reader: self.reader, metrics: self.metrics,
                        certificates: self.apiCertificates, events: self.events, logger: self.logger),
                    onRunning: self.apiPort))
        }
        return services
    }

    fileprivate func startIngest() throws {
        self.logger.info(
            "connecting to the broker",
            metadata: [
                "mqtt.endpoint": "\(self.config.mqtt.endpoint.host):\(self.config.mqtt.endpoint.port)",
                "mqtt.subscriptions": "\(self.shards == nil ? self.pipeline.subscriptions : ["(the units of the shards held)"])",
            ])
        try self.client.start()
        try self.sparkplug?.start()
    }

    /// Warms the detectors up from tag_state and puts shelved alerts back, in the background: a
    /// database that is away must not hold up ingest, and seeding touches only tags that have seen
    /// nothing yet.
    fileprivate func warmUp() async {
        // tag_state first: reading it also migrates a new database, which the shelves need.
        let snapshots = await self.reader.tagState(limit: self.config.detection.maxTags)
        await self.alertDesk.restoreShelves()
        await self.alertDesk.restoreOutOfService()
        if let snapshots, !snapshots.isEmpty {
            self.pipeline.seed(snapshots)
            self.logger.info("detectors warmed up from tag_state", metadata: ["tags": "\(snapshots.count)"])
        }
        // (With ha.enabled, episodes are taken over when this instance takes the lease.)
        if self.lease == nil { await self.adoptOpenEpisodes() }
    }

    /// Episodes the previous run left `raised` are taken over by the same condition raised again,
    /// or closed — never left open (docs/detection.md, "After a restart"). Read once the spool has
    /// drained, so the previous run's last clears are in the record.
    private func adoptOpenEpisodes() async {
        for _ in 0..<100 where self.recordWriter.counters.spooledBytes > 0 {
            guard (try? await Task.sleep(for: .milliseconds(100))) != nil else { return }
        }
        let started = EpochMilliseconds(milliseconds: self.startedAt)
        guard let open = await self.reader.openEpisodes(raisedBefore: started), !open.isEmpty else { return }
        self.pipeline.adopt(open, within: self.config.detection.adoptWithin)
        self.logger.notice(
            "alert episodes left open by the previous run: each is taken over if its condition is raised again, else closed",
            metadata: ["episodes": "\(open.count)", "within": "\(self.config.detection.adoptWithin)"])
    }

    fileprivate func stopIngest() {
        // DISCONNECT suppresses the will, so say "offline" ourselves first.
        let config = self.config
        if let role = self.lease?.role, role != .standby {
            try? self.client.publish(
                topic: "\(config.topics.prefix)/status",
                payload: Self.statusPayload(state: "offline", startedAt: self.startedAt, config: config, role: "active"), qos: 1, retain: true)
        }
        try? self.client.publish(
            topic: Self.statusTopic(config), payload: Self.statusPayload(state: "offline", startedAt: self.startedAt, config: config), qos: 1,
            retain: true)
        self.client.disconnect()
        self.sparkplug?.stop()
        let counters = self.pipeline.counters
        self.logger.info(
            "ingest stopped",
            metadata: [
                "ingest.messages": "\(counters.messages)", "ingest.samples": "\(counters.samples)",
                "ingest.rejected": "\(counters.totalRejected)", "alerts.raised": "\(counters.alertsRaised)",
                "alerts.cleared": "\(counters.alertsCleared)",
            ])
    }

    private static func log(
        _ event: MQTTClientEvent, endpoint: String, connection: ConnectionTracker, logger: Logger
    ) {
        switch event {
        case .connected(let sessionPresent):
            connection.status.withLock {
                $0.connected = true
                $0.connects += 1
                $0.lastError = nil
            }
            logger.info("connected to the broker", metadata: ["mqtt.endpoint": "\(endpoint)", "mqtt.session_present": "\(sessionPresent)"])
        case .connectionRefused(let reason), .connectionFailed(let reason):
            let first = connection.status.withLock { status in
                defer { status.lastError = reason }
                return status.lastError != reason
            }
            if first {
                logger.error("cannot connect to the broker; retrying", metadata: ["mqtt.endpoint": "\(endpoint)", "error": "\(reason)"])
            }
        case .disconnected(let expected, let reason):
            connection.status.withLock {
                $0.connected = false
                if !expected { $0.lastError = reason }
            }
            if !expected {
                logger.warning("lost the broker connection; reconnecting", metadata: ["mqtt.endpoint": "\(endpoint)", "error": "\(reason)"])
            }
        case .subscribeFailed(let filter, let reason):
            logger.error("subscription failed", metadata: ["mqtt.filter": "\(filter)", "error": "\(reason)"])
        }
    }
}

/// The gateway's status heard on MQTT (`{prefix}/status`): an instance that announces itself
/// active there took the lease, and an isolated one stands by (``ActiveLease/supersededOnWire(by:)``).
final class GatewayWitness: Sendable {
    let lease = Mutex<ActiveLease?>(nil)

    func heard(_ payload: [UInt8]) {
        guard let lease = self.lease.withLock({ $0 }), let status = JSONValue(parsing: payload),
            status.string("state") == "online", status.string("role") == "active", let instance = status.string("instance", limit: 256)
        else { return }
        lease.supersededOnWire(by: instance)
    }
}

/// Shared between the orchestrator and libmosquitto's callbacks.
final class ConnectionTracker: Sendable {
    let status = Mutex(Orchestrator.ConnectionStatus())
}

/// Runs the MQTT side until graceful shutdown.
struct IngestService: Service {
    let orchestrator: Orchestrator

    func run() async throws {
        try self.orchestrator.startIngest()
        // The timer side of detection (staleness, unit monitors) once a second, and tag-state
        // snapshots every `database.snapshot_interval`, until shutdown.
        let interval = self.orchestrator.config.database.snapshotInterval
        let orchestrator = self.orchestrator
        let pipeline = orchestrator.pipeline
        let writer = orchestrator.recordWriter
        await withDiscardingTaskGroup { group in
            group.addTask { await orchestrator.warmUp() }
            // Acknowledgements from MQTT, written to the record off the network thread.
            group.addTask { await orchestrator.alertDesk.run() }
            try? await cancelWhenGracefulShutdown {
                var lastSnapshot = ContinuousClock.now
                var lastEviction = ContinuousClock.now
                while true {
                    try await Task.sleep(for: .seconds(1))
                    pipeline.tick()
                    orchestrator.ticked()
                    if ContinuousClock.now - lastEviction >= .seconds(60) {
                        lastEviction = .now
                        writer.deliver(snapshots: pipeline.evictIdle())
                    }
                    if interval > .zero, ContinuousClock.now - lastSnapshot >= interval {
                        lastSnapshot = .now
                        writer.deliver(snapshots: pipeline.snapshots())
                    }
                }
            }
            group.cancelAll()
        }
        writer.deliver(snapshots: pipeline.snapshots())
        // Off the cooperative pool: the disconnection waits for the broker's acknowledgements.
        await offTheCooperativePool { orchestrator.stopIngest() }
    }
}

/// Runs the record writer until graceful shutdown, then lets it drain.
struct RecordService: Service {
    let writer: RecordWriter

    func run() async throws {
        // Stop on cancellation too: if another service fails, the group cancels instead of
        // shutting down gracefully, and the writer must still drain and return.
        await withTaskCancellationOrGracefulShutdownHandler {
            await self.writer.run()
        } onCancelOrGracefulShutdown: {
            self.writer.stop()
        }
    }
}

/// Byte-prefix test on a borrowed topic, without building a String for plant data.
struct PrefixMatcher: Sendable {
    let prefixes: [[UInt8]]

    init(prefixes: [String]) {
        self.prefixes = prefixes.map { Array($0.utf8) }
    }

    func matches(_ topic: UnsafeRawBufferPointer) -> Bool {
        self.prefixes.contains { prefix in
            topic.count >= prefix.count && zip(topic, prefix).allSatisfy { $0 == $1 }
        }
    }
}

/// The decision side: the timer (schedules, timeouts, retries, approvals, every
/// `decision_engine.tick`) after reloading what the record remembers, and the coordinator's slow
/// jobs (command modules, the advisor), all children of this service.
struct DecisionService: Service {
    let orchestrator: Orchestrator

    func run() async throws {
        let writer = self.orchestrator.recordWriter
        let reader = self.orchestrator.reader
        let coordinator = self.orchestrator.coordinator
        let tick = self.orchestrator.config.decisionEngine.tick
        coordinator.holdSchedules()
        await withDiscardingTaskGroup { group in
            group.addTask { await coordinator.run() }
            group.addTask {
                // The previous run's last records may still be in the spool: give the writer a
                // moment to drain it, then reload (a database that is away must not hold up ticks;
                // only schedules wait for it, at most about 10 s and a connection attempt).
                for _ in 0..<100 where writer.counters.spooledBytes > 0 {
                    guard (try? await Task.sleep(for: .milliseconds(100))) != nil else { return }
                }
                // (With ha.enabled, pending invocations are re-armed when this instance takes the lease.)
                guard self.orchestrator.lease == nil else { return }
                coordinator.restore(await reader.decisionMemory() ?? DecisionMemory())
            }
            try? await cancelWhenGracefulShutdown {
                while true {
                    try await Task.sleep(for: tick)
                    coordinator.tick()
                }
            }
            group.cancelAll()
        }
    }
}

/// The HTTP API as a service of the group (it stops with the others).
struct APIService: Service {
    let server: APIServer
    let onRunning: @Sendable (Int) async -> Void

    func run() async throws {
        let application = try self.server.application(onRunning: self.onRunning)
        let server = self.server
        // At shutdown the event streams end first: an open response would hold the server up.
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask { try await application.run() }
                group.addTask { try? await cancelWhenGracefulShutdown { await server.pushStatus() } }
            }
        } onGracefulShutdown: {
            server.events.close()
        }
    }
}

// MARK: - The API's view

extension Orchestrator: StatusSource {
    package func readings(under unit: String, samples: Int) -> [TagReading] {
        let tags = self.pipeline.tags(withPrefix: unit + "/").sorted()
        return self.pipeline.windows(of: tags, limit: samples).map { window in
            TagReading(tag: window.tag, info: self.config.topicMap.tags[window.tag], times: window.times, values: window.values)
        }
    }

    package func unitMonitor(_ unit: String) -> UnitMonitorState? { self.pipeline.unitState(named: unit) }

    package func statusSnapshot() -> StatusSnapshot {
        let mqtt = self.connectionStatus
        var modules: [ModuleName: StatusSnapshot.Module] = [:]
        for (name, settings) in self.config.modules {
            modules[name] = StatusSnapshot.Module(
                enabled: settings.enabled, transport: settings.transport.rawValue, inFlight: self.coordinator.inFlight(name),
                maxInFlight: settings.maxInFlight, requiresApproval: settings.requiresApproval)
        }
        var snapshot = StatusSnapshot(
            startedAt: self.startedAt, mqttConnected: mqtt.connected, mqttConnects: mqtt.connects, mqttLastError: mqtt.lastError,
            droppedWhileAway: self.publisher.droppedWhileAway, record: self.recordWriter.counters, poolRefused: self.reader.pool.refused,
            ingest: self.pipeline.counters, units: self.pipeline.units.map { .init(name: $0.name, tags: $0.tags, trained: $0.trained) },
            modules: modules, decisions: self.coordinator.counters, openInvocations: self.coordinator.activeInvocations.count,
            llm: .init(
                active: self.config.llm.isActive, provider: self.config.llm.provider, model: self.config.llm.model,
                counters: self.coordinator.advisorCounters),
            shelvedAlerts: self.publisher.shelf.count, refusedAcknowledgements: self.alertDesk.refusedAcknowledgements)
        snapshot.spoolCapacityBytes = self.config.database.spoolCapacity
        snapshot.outOfServiceTags = self.pipeline.outOfServiceCount
        snapshot.alertTransitions = self.alertDesk.transitionTallies
        snapshot.activeAlerts = self.pipeline.openAlertsBySeverity
        snapshot.decisionTallies = self.coordinator.decisionTallies
        snapshot.instance = self.config.availability.instanceID
        snapshot.role = self.role
        snapshot.leaseEpoch = self.lease.flatMap { $0.role != .standby ? $0.epoch : nil }
        snapshot.shards = self.heldShards
        (snapshot.reloadsApplied, snapshot.reloadsRefused) = self.reloadCounts.withLock { ($0.applied, $0.refused) }
        return snapshot
    }
}

extension Orchestrator: OperatorActions {
    package func request(module: ModuleName, _ request: ManualRequest) -> Decision? {
        self.coordinator.request(module: module, scope: request.scope, by: request.by, params: request.params, source: .api)
    }

    package func approve(decision id: UUID, _ answer: ApprovalRequest) -> Bool {
        self.coordinator.approve(decision: id, approve: answer.approve, by: answer.by, via: "http")
    }

    package func acknowledge(alert id: UUID, by: String?) async throws -> AlertDesk.Outcome {
        try await self.alertDesk.acknowledge(id, by: by)
    }

    package func shelve(alert id: UUID, for duration: Duration, by: String?, reason: String?) async throws -> Int64? {
        try await self.alertDesk.shelve(id, for: duration, by: by, reason: reason)
    }

    package func unshelve(alert id: UUID, by: String?, reason: String?) async throws -> AlertDesk.Outcome {
        try await self.alertDesk.unshelve(id, by: by, reason: reason)
    }

    package func setOutOfService(tag: String, _ outOfService: Bool, by: String?, reason: String?) async throws -> Bool {
        try await self.alertDesk.setOutOfService(tag: tag, outOfService, by: by, reason: reason)
    }

    package func outOfServiceTags() async throws -> [OutOfServiceTag] {
        try await self.alertDesk.outOfServiceTags()
    }

    package func ask(_ question: String, session: UUID, continuing: Bool) async -> ConciergeAnswer? {
        guard let advisor = self.coordinator.advisorHandle else { return nil }
        let coordinator = self.coordinator
        let writer = self.recordWriter
        let metrics = self.metrics
        let concierge = Concierge(
            reader: self.reader, advisor: advisor, topicMap: self.config.topicMap, modules: self.config.modules,
            decisions: { coordinator.counters }, record: { writer.deliver(record: $0) }, observe: { metrics.observe($0) })
        return await concierge.answer(question, session: session, continuing: continuing)
    }
}
