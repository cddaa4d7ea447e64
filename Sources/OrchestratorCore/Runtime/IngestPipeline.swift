import Foundation
package import Logging
import Synchronization

/// The live path for one message: topic → route → payload → samples → detectors → alert episodes
/// → sinks (MQTT publisher, record writer, console).
///
/// ### Threading
/// ``handle(topic:payload:receivedAt:)`` runs synchronously on the caller's thread (libmosquitto's
/// network thread in `dang run`); the per-tag state sits behind one uncontended lock, not an actor
/// hop per message. Sinks are called after the lock is released, in order.
package final class IngestPipeline: TagDataSource, Sendable {
    struct State: ~Copyable {
        var routes: [String: Route] = [:]
        /// The hot path: topic bytes straight to the tag's slot.
        var topicSlots = TopicSlots()
        var engine: DetectionEngine
        /// The alert stage: open episodes, made from the engine's condition changes.
        var alerts = AlertBook()
        /// Scratch: the condition changes of the call in progress.
        var conditions: [ConditionEvent] = []
        var counters = IngestCounters()
        var sparkplug = SparkplugSession()
        /// Data gaps for `kind: data_gap` triggers (nil when no trigger wants them).
        var gaps: DataGapCollector?
        /// By slot: whether the tag is one some `suppress_when` names (its values go to the alert
        /// stage). Empty without any.
        var isSuppressor: [Bool] = []
        /// With `sharding.shards`: the shards this instance holds; the tags of the others are not
        /// its own (``takeShard(_:seeding:)``, ``releaseShard(_:)``).
        var heldShards: Set<Int> = []
    }

    let state: Mutex<State>
    private let router: TopicRouter
    private let config: OrchestratorConfig
    private let sinks: [any AlertSink]
    /// Publishes Sparkplug commands (NCMD rebirth requests); set by the orchestrator.
    private let commandPublisher = Mutex<(@Sendable (String, [UInt8]) -> Void)?>(nil)
    private let logger: Logger
    private let clock: @Sendable () -> Int64
    /// With `sharding.shards`: which shard each tag belongs to; nil: every tag is this instance's.
    package let shardMap: ShardMap?

    /// - Parameter clock: wall-clock epoch milliseconds (injected so tests can fix time).
    package init(
        config: OrchestratorConfig, sinks: [any AlertSink], logger: Logger,
        clock: @escaping @Sendable () -> EpochMilliseconds = { .now() }
    ) {
        self.config = config
        var engine = DetectionEngine(settings: config.detection, topicMap: config.topicMap)
        // Every process unit of the topic map with two or more tags is monitored as a whole.
        let units = config.topicMap.units
        engine.reserveCapacity(tags: units.reduce(0) { $0 + $1.tags.count }, units: units.count)
        for (unit, tags) in units {
            let slots = tags.compactMap { engine.slot(for: $0) }
            _ = engine.addUnit(name: unit, slots: slots)
        }
        var state = State(engine: engine)
        state.sparkplug = SparkplugSession(reorderTimeout: config.topics.sparkplugReorderTimeout)
        Self.watchSuppressors(config.topicMap.suppressions, in: &state)
        Self.collectGaps(for: config.triggers, in: &state)
        self.state = Mutex(state)
        self.router = TopicRouter(map: config.topicMap)
        self.shardMap = config.availability.isSharded ? ShardMap(count: config.availability.shards, topicMap: config.topicMap) : nil
        self.sinks = sinks
        self.logger = logger
        self.clock = clock
    }

    /// Sinks given a message's events only once its handler has returned (``deliverAfterMessage()``).
    private let afterMessageSinks = Mutex<[any AlertSink]>([])
    private let afterMessage = Mutex<[AlertEvent]>([])
    private let hasAfterMessage = Atomic<Bool>(false)

    /// Adds a sink that gets the events of an MQTT message only when ``deliverAfterMessage()`` runs:
    /// the MQTT client calls it after the message's handler has returned and the alerts it
    /// published are on the wire, so the decisions they trigger (this sink) do not hold them back.
    /// Events from the timer (staleness, units) reach it at once.
    package func attachAfterMessage(_ sink: any AlertSink) {
        self.afterMessageSinks.withLock { $0.append(sink) }
    }

    /// Gives the after-message sinks, in order, the events of the messages handled since the last call.
    /// Cheap when there are none (one atomic load): it runs after every message.
    package func deliverAfterMessage() {
        guard self.hasAfterMessage.load(ordering: .acquiring) else { return }
        let events = self.afterMessage.withLock { pending -> [AlertEvent] in
            defer { pending.removeAll(keepingCapacity: true) }
            self.hasAfterMessage.store(false, ordering: .relaxed)
            return pending
        }
        let late = self.afterMessageSinks.withLock { $0 }
        for event in events {
            for sink in late { sink.deliver(event) }
        }
    }

    private func deliver(_ events: [AlertEvent], fromMessage: Bool = false) {
        guard !events.isEmpty else { return }
        let sinks = self.sinks
        for event in events {
            for sink in sinks { sink.deliver(event) }
        }
        let late = self.afterMessageSinks.withLock { $0 }
        guard !late.isEmpty else { return }
        if fromMessage {
            self.afterMessage.withLock { $0.append(contentsOf: events) }
            self.hasAfterMessage.store(true, ordering: .releasing)
        } else {
            for event in events {
                for sink in late { sink.deliver(event) }
            }
        }
    }

    private let gapSinks = Mutex<[@Sendable (DataGap) -> Void]>([])

    /// Wires the decision side in: the alerts of each message once its handler has returned, and
    /// every data gap once it has settled.
    package func attachDecisions(_ coordinator: ModuleCoordinator) {
        self.attachAfterMessage(coordinator)
        self.attachGapSink { coordinator.dataMissing($0) }
    }

    /// Gets every data gap once it has settled (``tick(now:)``), for `kind: data_gap` triggers.
    package func attachGapSink(_ sink: @escaping @Sendable (DataGap) -> Void) {
        self.gapSinks.withLock { $0.append(sink) }
    }

    /// The broker connection: while it is away, no tag's silence is the tag's own, so staleness is
    /// held back (one gateway alarm, `orchestrator/broker` from ``SystemAlerts``, stands for it
    /// instead of one `stale` alarm per periodic tag); once it is back,
    /// silence counts from the reconnection, so a tag goes stale only if it stays silent for its
    /// own `stale_after` periods after it. `lostAt`: when an established connection was lost.
    private let broker = Mutex<(away: Bool, back: Int64, lostAt: Int64?, connected: Bool)>((false, .min, nil, false))

    /// Tells the pipeline the broker connection was lost (`connected` false) or made, at `now`. Back
    /// from losing an established connection, the interval's data may be missing:
    /// ``brokerOutage(from:to:)`` (a backfill's job).
    package func brokerConnection(connected: Bool, at now: Int64) {
        let outage = self.broker.withLock { broker -> Int64? in
            if connected {
                if broker.away { broker.back = now }
                broker.away = false
                broker.connected = true
                defer { broker.lostAt = nil }
                return broker.lostAt
            }
            if broker.connected && broker.lostAt == nil { broker.lostAt = now }
            broker.away = true
            broker.connected = false
            return nil
        }
        if let outage { self.brokerOutage(from: outage, to: now) }
    }

    /// The broker was away from `from` to `to` (the orchestrator's clock): every known tag's data
    /// for the interval may be missing (a QoS 0 publisher's is).
    package func brokerOutage(from: Int64, to: Int64) {
        self.state.withLock { state in
            guard state.gaps != nil else { return }
            // The tags that had reported (a mapped tag never heard of has no gap of ours to fill).
            var tags: [String] = []
            for (slot, tag) in state.engine.tagNames.enumerated() where !tag.isEmpty && state.engine.lastSampleTime(slot: Int32(slot)) != nil {
                tags.append(tag)
            }
            state.gaps?.outage(from: from, to: to, tags: tags, now: to)
        }
    }

    /// The tags `suppress_when` rules name: their values go to the alert stage.
    private static func watchSuppressors(_ rules: [String: SuppressWhen], in state: inout State) {
        var suppressors: [String: Int32] = [:]
        for tag in Set(rules.values.map(\.tag)) {
            if let slot = state.engine.slot(for: tag) { suppressors[tag] = slot }
        }
        state.alerts.watchSuppressors(suppressors, rules: rules)
        state.isSuppressor = Array(repeating: false, count: Int(suppressors.values.max() ?? -1) + 1)
        for slot in suppressors.values { state.isSuppressor[Int(slot)] = true }
    }

    /// Data gaps are collected while a `kind: data_gap` trigger wants them, down to the smallest
    /// `min_gap`; a collector already running keeps what it holds when that does not change.
    private static func collectGaps(for triggers: [TriggerRule], in state: inout State) {
        guard let minimum = triggers.filter({ $0.kind == .dataGap }).map(\.minGap).min() else {
            state.gaps = nil
            return
        }
        if state.gaps?.minimum != max(1, minimum.milliseconds) { state.gaps = DataGapCollector(minimum: minimum.milliseconds) }
    }

    /// Takes a reloaded topic map and triggers (``Orchestrator/reload()``): tag entries (limits,
    /// metadata, detector settings) and `suppress_when` rules apply from the next sample; every
    /// detector keeps what it learned. Returns the tags whose entry changed.
    @discardableResult
    package func reconfigure(topicMap: TopicMap, triggers: [TriggerRule]) -> [String] {
        self.state.withLock { state in
            let changed = state.engine.reconfigure(topicMap: topicMap)
            Self.watchSuppressors(topicMap.suppressions, in: &state)
            Self.collectGaps(for: triggers, in: &state)
            return changed
        }
    }

    /// Filters to subscribe to.
    package var subscriptions: [String] {
        self.sensorSubscriptions + self.sparkplugSubscriptions
    }

    /// The plant and market data filters of the topic map.
    package var sensorSubscriptions: [String] { self.router.subscriptions }

    /// `spBv1.0/#` when Sparkplug B is ingested.
    package var sparkplugSubscriptions: [String] { self.config.topics.sparkplug ? ["\(SparkplugSession.namespace)/#"] : [] }

    /// Where Sparkplug rebirth requests go (the MQTT client).
    package func attachCommandPublisher(_ publish: @escaping @Sendable (String, [UInt8]) -> Void) {
        self.commandPublisher.withLock { $0 = publish }
    }

    private static let sparkplugPrefix = Array(SparkplugSession.topicPrefix.utf8)

    private static func isSparkplug(_ topic: UnsafeRawBufferPointer) -> Bool {
        topic.count >= Self.sparkplugPrefix.count
            && Self.sparkplugPrefix.withUnsafeBytes { memcmp($0.baseAddress!, topic.baseAddress!, $0.count) } == 0
    }

    /// Handles one message. Never throws and never traps on bad input: every refusal is counted
    /// and logged (rate-limited), and good data in the same stream is unaffected.
    package func handle(topic topicBytes: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer, receivedAt: Int64? = nil) {
        guard payload.count <= self.config.topics.maxPayloadBytes else {
            self.reject(.tooLarge, topic: String(decoding: topicBytes, as: UTF8.self))
            return
        }
        if self.config.topics.sparkplug && Self.isSparkplug(topicBytes) {
            // (Sparkplug B belongs to shard 0.)
            if self.shardMap != nil && !self.state.withLock({ $0.heldShards.contains(0) }) { return }
            self.handleSparkplug(topic: String(decoding: topicBytes, as: UTF8.self), payload: payload, now: receivedAt ?? self.clock())
            return
        }
        let parsed = SamplePayloadParser.parse(payload)
        let now = receivedAt ?? self.clock()
        var events: [AlertEvent] = []

        // The hot path: one sample on a topic seen before — no String, no route, no tag lookup.
        if case .success(.single(let ts, let value, let quality)) = parsed {
            let hash = TopicSlots.hash(topicBytes)
            var refused: PayloadRejection? = nil
            let handled = self.state.withLock { state -> Bool in
                guard let (entry, slot) = state.topicSlots.find(topicBytes, hash: hash) else { return false }
                state.counters.messages += 1
                refused = self.ingest(
                    slot: slot, value: value, quality: quality, sampleTime: ts ?? now, receiptTime: ts == nil, topic: .cached(entry),
                    now: now, state: &state, events: &events)
                return true
            }
            if handled {
                if let refused { self.logRejection(refused.rawValue, topic: String(decoding: topicBytes, as: UTF8.self)) }
                self.deliver(events, fromMessage: true)
                return
            }
        }

        let topic = String(decoding: topicBytes, as: UTF8.self)
        var rejection: PayloadRejection? = nil
        var unknownTopic = false
        var tagLimit = false

        self.state.withLock { state in
            state.counters.messages += 1
            let route: Route
            if let cached = state.routes[topic] {
                route = cached
            } else {
                route = self.router.route(topic)
                if state.routes.count < self.config.detection.maxTags * 2 { state.routes[topic] = route }
            }
            routing: switch (route, parsed) {
            case (.unknown, _):
                state.counters.unknownTopics += 1
                unknownTopic = true
            case (_, .failure(let reason)):
                state.counters.rejected[reason, default: 0] += 1
                rejection = reason
                // A NaN/Inf or an impossible time on a known tag is also that tag's data-quality problem.
                if reason == .nonFinite, case .tag(let tag) = route, let slot = self.slot(for: tag, now: now, in: &state, tagLimit: &tagLimit, rejection: &rejection) {
                    state.engine.ingest(
                        slot: slot, value: .nan, quality: .good, sampleTime: now, receiptTime: true, topic: topic, now: now,
                        into: &state.conditions)
                    state.alerts.apply(&state.conditions, into: &events)
                    self.count(events, in: &state)
                } else if reason == .badTimestamp, case .tag(let tag) = route,
                    let slot = self.slot(for: tag, now: now, in: &state, tagLimit: &tagLimit, rejection: &rejection)
                {
                    state.engine.reportDataQuality(.futureTimestamp, slot: slot, topic: topic, now: now, into: &state.conditions)
                    state.alerts.apply(&state.conditions, into: &events)
                    self.count(events, in: &state)
                }
            case (.tag(let tag), .success(.single(let ts, let value, let quality))):
                guard let slot = self.slot(for: tag, now: now, in: &state, tagLimit: &tagLimit, rejection: &rejection) else { break routing }
                state.topicSlots.insert(topicBytes, hash: TopicSlots.hash(topicBytes), slot: slot)
                // From now on the topic cache answers for this topic: one entry, not two.
                state.routes[topic] = nil
                if let refused = self.ingest(
                    slot: slot, value: value, quality: quality, sampleTime: ts ?? now, receiptTime: ts == nil, topic: .text(topic),
                    now: now, state: &state, events: &events)
                {
                    rejection = refused
                }
            case (.batch(let base), .success(.batch(let ts, let values, let quality))):
                for (name, value) in values {
                    guard Self.isValidTagName(name) else {
                        state.counters.rejected[.malformedJSON, default: 0] += 1
                        rejection = .malformedJSON
                        continue
                    }
                    guard let slot = self.slot(for: "\(base)/\(name)", now: now, in: &state, tagLimit: &tagLimit, rejection: &rejection)
                    else { continue }
                    if !value.isFinite {
                        // Refused and counted, and that tag's data-quality problem.
                        state.counters.rejected[.nonFinite, default: 0] += 1
                        rejection = .nonFinite
                    }
                    if let refused = self.ingest(
                        slot: slot, value: value, quality: quality, sampleTime: ts ?? now, receiptTime: ts == nil, topic: .text(topic),
                        now: now, state: &state, events: &events)
                    {
                        rejection = refused
                    }
                }
            case (.tag, .success(.batch)), (.batch, .success(.single)):
                // A batch on a single tag's topic, or a single value on a unit's topic.
                state.counters.rejected[.malformedJSON, default: 0] += 1
                rejection = .malformedJSON
            }
            if tagLimit { state.counters.tagLimitRejections += 1 }
        }

        if let rejection { self.logRejection(rejection.rawValue, topic: topic) }
        if unknownTopic { self.logRejection("unknown_topic", topic: topic) }
        if tagLimit { self.logRejection("tag_limit", topic: topic) }
        self.deliver(events, fromMessage: true)
    }

    /// One Sparkplug B message: births, data, deaths, sequence checks (``SparkplugSession``).
    private func handleSparkplug(topic: String, payload: UnsafeRawBufferPointer, now: Int64) {
        self.sparkplug(topic: topic, now: now) { state in
            state.counters.messages += 1
            return state.sparkplug.handle(topic: topic, payload: payload, now: now)
        }
    }

    /// The timer's part of Sparkplug B: gaps that waited the reorder timeout in vain.
    func expireSparkplugGaps(now: Int64) {
        self.sparkplug(topic: SparkplugSession.namespace, now: now, fromMessage: false) { $0.sparkplug.expire(now: now) }
    }

    /// The connection Sparkplug B comes on was lost (Sparkplug 3.0 §5.3): every node must be born
    /// again, and every Sparkplug tag's last value is uncertain until its next sample. No alarm per
    /// tag: the gateway's broker alarm is the one.
    package func sparkplugConnectionLost() {
        let tags = self.state.withLock { state -> [String] in
            let tags = state.sparkplug.connectionLost()
            state.engine.markLastUsable(tags)
            return tags
        }
        if !tags.isEmpty {
            self.logger.warning("Sparkplug connection lost: every node must be born again; its tags are uncertain until then", metadata: ["tags": "\(tags.count)"])
        }
    }

    /// Applies what the Sparkplug session made of a message (or of the timer) under the lock, then
    /// logs, asks for rebirths and delivers the alert events outside it.
    private func sparkplug(topic: String, now: Int64, fromMessage: Bool = true, _ step: (inout State) -> SparkplugSession.Outcome) {
        var events: [AlertEvent] = []
        var rejection: PayloadRejection? = nil
        var rebirths: [(group: String, edge: String)] = []
        var tagLimit = false
        self.state.withLock { state in
            let outcome = step(&state)
            if let reason = outcome.rejection {
                rejection = PayloadRejection(rawValue: reason) ?? .sparkplugPayload
                state.counters.rejected[rejection!, default: 0] += 1
            }
            for sample in outcome.samples {
                guard let slot = self.slot(for: sample.tag, now: now, in: &state, tagLimit: &tagLimit, rejection: &rejection) else { continue }
                if let refused = self.ingest(
                    slot: slot, value: sample.value, quality: sample.quality, sampleTime: sample.time ?? now, receiptTime: sample.time == nil,
                    topic: .text(topic), now: now, state: &state, events: &events)
                {
                    rejection = refused
                }
            }
            for sample in outcome.historical {
                guard self.config.ingest.accepts(sampleTime: sample.time, now: now) else {
                    state.counters.rejected[.futureTimestamp, default: 0] += 1
                    rejection = .futureTimestamp
                    continue
                }
                guard let slot = self.slot(for: sample.tag, now: now, in: &state, tagLimit: &tagLimit, rejection: &rejection) else { continue }
                state.engine.recordHistory(slot: slot, time: sample.time, value: sample.value)
                state.counters.historicalSamples += 1
            }
            if !outcome.dead.isEmpty {
                let before = events.count
                state.engine.markStale(outcome.dead, topic: topic, now: now, into: &state.conditions)
                state.alerts.apply(&state.conditions, into: &events)
                self.count(events[before...], in: &state)
            }
            for problem in outcome.problems {
                let before = events.count
                state.engine.reportDataQuality(.sequence, tag: problem.node, topic: topic, now: now, into: &state.conditions)
                state.alerts.apply(&state.conditions, into: &events)
                state.counters.tags = state.engine.tagCount
                self.count(events[before...], in: &state)
            }
            if tagLimit { state.counters.tagLimitRejections += 1 }
            rebirths = outcome.rebirths
        }
        if let rejection { self.logRejection(rejection.rawValue, topic: topic) }
        if tagLimit { self.logRejection("tag_limit", topic: topic) }
        if self.config.topics.sparkplugRebirth, !rebirths.isEmpty, let publish = self.commandPublisher.withLock({ $0 }) {
            for rebirth in rebirths {
                publish("\(SparkplugSession.namespace)/\(rebirth.group)/NCMD/\(rebirth.edge)", SparkplugSession.rebirthCommand(now: now))
                self.logger.notice("Sparkplug rebirth requested", metadata: ["sparkplug.node": "\(rebirth.group)/\(rebirth.edge)"])
            }
        }
        self.deliver(events, fromMessage: fromMessage)
    }

    /// The topic a sample came on: its text, or its entry in `topicSlots` (read only when an
    /// alert event needs it, so the hot path copies no String per sample).
    private enum SampleTopic {
        case text(String)
        case cached(Int)
    }

    /// Feeds one sample to its tag. Returns the reason it was refused, if it was (the caller logs
    /// it once the lock is released).
    private func ingest(
        slot: Int32, value: Double, quality: SampleQuality, sampleTime: Int64, receiptTime: Bool, topic: SampleTopic, now: Int64,
        state: inout State, events: inout [AlertEvent]
    ) -> PayloadRejection? {
        // One rule for every input format: a time far ahead of the clock (or one PostgreSQL cannot
        // store) is refused and is its tag's data-quality event; it never moves the tag's clock.
        if !receiptTime, !self.config.ingest.accepts(sampleTime: sampleTime, now: now) {
            state.counters.rejected[.futureTimestamp, default: 0] += 1
            let before = events.count
            let text = self.text(of: topic, in: state)
            state.engine.reportDataQuality(.futureTimestamp, slot: slot, topic: text, now: now, into: &state.conditions)
            state.alerts.apply(&state.conditions, into: &events)
            self.count(events[before...], in: &state)
            return .futureTimestamp
        }
        state.counters.samples += 1
        if quality == .bad { state.counters.badQualitySamples += 1 }
        if state.gaps != nil, quality != .bad, value.isFinite, let previous = state.engine.lastSampleTime(slot: slot), sampleTime > previous {
            let tag = state.engine.tagNames[Int(slot)]
            state.gaps?.tagSample(tag, previous: previous, time: sampleTime, now: now)
        }
        if Int(slot) < state.isSuppressor.count, state.isSuppressor[Int(slot)], quality != .bad, value.isFinite {
            state.alerts.noteSuppressor(slot: slot, value: value)
        }
        _ = state.engine.detect(slot: slot, value: value, quality: quality, sampleTime: sampleTime, receiptTime: receiptTime, now: now)
        let before = events.count
        if state.engine.hasChanges {
            let text = self.text(of: topic, in: state)
            state.engine.emitChanges(slot: slot, topic: text, sampleTime: sampleTime, now: now, into: &state.conditions)
            state.alerts.apply(&state.conditions, into: &events)
        }
        // After a restart: the previous run's open episodes of this tag not raised again by now.
        if state.alerts.isAdopting {
            state.alerts.sampleSeen(tag: state.engine.tagNames[Int(slot)], value: value, sampleTime: sampleTime, now: now, into: &events)
        }
        if events.count > before { self.count(events[before...], in: &state) }
        return nil
    }

    private func text(of topic: SampleTopic, in state: borrowing State) -> String {
        switch topic {
        case .text(let topic): topic
        case .cached(let entry): state.topicSlots.topic(entry)
        }
    }

    private func count(_ events: some Collection<AlertEvent>, in state: inout State) {
        for event in events {
            if event.state == .raised { state.counters.alertsRaised += 1 } else { state.counters.alertsCleared += 1 }
            state.counters.alerts[AlertTally(kind: event.kind, severity: event.severity, transition: .init(event.state)), default: 0] += 1
        }
    }

    /// The timer-driven part of detection, called about once a second: staleness (held back while
    /// the broker is away), and the unit monitors' baseline collection and tests on the latest
    /// values of their tags.
    package func tick(now: Int64? = nil) {
        let now = now ?? self.clock()
        if self.config.topics.sparkplug { self.expireSparkplugGaps(now: now) }
        var events: [AlertEvent] = []
        let broker = self.broker.withLock { (away: $0.away, back: $0.back) }
        let gaps = self.state.withLock { state -> [DataGap] in
            if !broker.away { state.engine.checkStaleness(now: now, silentSince: broker.back, into: &state.conditions) }
            state.engine.evaluateUnits(at: now, into: &state.conditions)
            state.alerts.apply(&state.conditions, into: &events)
            state.alerts.closeUnadopted(now: now, into: &events)
            self.count(events, in: &state)
            return state.gaps?.settled(now: now) ?? []
        }
        self.deliver(events)
        if !gaps.isEmpty {
            let sinks = self.gapSinks.withLock { $0 }
            for gap in gaps {
                self.logger.notice(
                    "data gap", metadata: ["cause": "\(gap.cause.rawValue)", "from": "\(gap.from)", "to": "\(gap.to)", "tags": "\(gap.tags.count)"])
                for sink in sinks { sink(gap) }
            }
        }
    }

    /// The state of every tag that received a sample since the last call.
    package func snapshots() -> [TagSnapshot] {
        self.state.withLock { $0.engine.snapshots() }
    }

    /// The episodes a previous run left raised (from `alerts` at start): each is adopted by the same
    /// condition raised again — same alert id, not published again — or closed (a `cleared` event,
    /// recorded and published) after its tag's next samples, or after `within` (docs/detection.md,
    /// "After a restart").
    package func adopt(_ episodes: [AlertEpisode], within: Duration) {
        let now = self.clock()
        self.state.withLock { $0.alerts.adopt(episodes, until: now + within.milliseconds) }
    }

    /// Takes a tag out of service (its raises are recorded, not annunciated nor acted on), or puts
    /// it back.
    package func setOutOfService(tag: String, _ outOfService: Bool) {
        self.state.withLock { $0.alerts.setOutOfService(tag: tag, outOfService) }
    }

    /// Tags out of service now.
    package var outOfServiceCount: Int { self.state.withLock { $0.alerts.outOfServiceCount } }

    /// Episodes a previous run left open: still waiting, taken over, and closed, since the start.
    package var adoption: (waiting: Int, adopted: Int, closed: Int) {
        self.state.withLock { ($0.alerts.waitingCount, $0.alerts.adoptedCount, $0.alerts.closedAtStartCount) }
    }

    /// Takes one shard in (`sharding.shards`), seeded with its `tag_state` before any of its
    /// samples, the others as they are.
    package func takeShard(_ shard: Int, seeding snapshots: [TagSnapshot] = []) {
        _ = self.changeShards(seeding: snapshots) { $0.union([shard]) }
    }

    /// Lets one shard go, the others as they are: its tags are forgotten — detectors, history, unit
    /// monitors, open episodes (the new holder carries them on, so nothing is cleared or published)
    /// — and their samples dropped from now on. Returns how many tags and episodes were let go.
    @discardableResult
    package func releaseShard(_ shard: Int) -> (tags: Int, episodes: Int) {
        self.changeShards { $0.subtracting([shard]) }
    }

    private func changeShards(seeding snapshots: [TagSnapshot] = [], _ change: (Set<Int>) -> Set<Int>) -> (tags: Int, episodes: Int) {
        guard let shardMap = self.shardMap else { return (0, 0) }
        return self.state.withLock { state in
            let held = change(state.heldShards)
            let lost = state.heldShards.subtracting(held)
            let gained = held.subtracting(state.heldShards)
            state.heldShards = held
            let seeds = snapshots.filter { gained.contains(shardMap.shard(ofTag: $0.tag)) }
            if !seeds.isEmpty {
                state.engine.seed(seeds, now: self.clock())
                state.counters.tags = state.engine.tagCount
            }
            guard !lost.isEmpty else { return (0, 0) }
            let parked = state.engine.park { lost.contains(shardMap.shard(ofTag: $0)) }
            state.topicSlots.remove(slots: parked)
            state.routes.removeAll()
            let episodes = state.alerts.drop(slots: parked)
            return (parked.filter { $0 >= 0 }.count, episodes)
        }
    }

    /// Warms up tags that have seen nothing yet (from `tag_state` at start).
    package func seed(_ snapshots: [TagSnapshot]) {
        self.state.withLock { state in
            let snapshots = self.shardMap.map { map in snapshots.filter { state.heldShards.contains(map.shard(ofTag: $0.tag)) } } ?? snapshots
            state.engine.seed(snapshots, now: self.clock())
            state.counters.tags = state.engine.tagCount
        }
    }

    /// The tag's slot, made on first sight; `nil` when the tag is refused: longer than
    /// `ingest.max_tag_bytes` (counted here, `rejection` set) or past `detection.max_tags`
    /// (`tagLimit` set; the caller counts it once per message).
    private func slot(
        for tag: String, now: Int64, in state: inout State, tagLimit: inout Bool, rejection: inout PayloadRejection?
    ) -> Int32? {
        if let shardMap = self.shardMap, !state.heldShards.contains(shardMap.shard(ofTag: tag)) {
            // Another instance's (what a wildcard brings, or a message in flight when a shard moved).
            state.counters.otherShard += 1
            return nil
        }
        guard tag.utf8.count <= self.config.ingest.maxTagBytes else {
            state.counters.rejected[.tagTooLong, default: 0] += 1
            rejection = .tagTooLong
            return nil
        }
        let slot = state.engine.slot(for: tag, now: now)
        state.counters.tags = state.engine.tagCount
        if slot == nil { tagLimit = true }
        return slot
    }

    /// Forgets tags outside the topic map that got no sample for `ingest.evict_idle_after` (their
    /// slots are reused; their last state is returned for `tag_state`). Called now and then.
    package func evictIdle(now: Int64? = nil) -> [TagSnapshot] {
        let idle = self.config.ingest.evictIdleAfter
        guard idle > .zero else { return [] }
        let now = now ?? self.clock()
        let (snapshots, evicted, tags) = self.state.withLock { state -> ([TagSnapshot], Int, Int) in
            // Saturating: a clock near Int64.min must not wrap into a cutoff that evicts everything.
            let (cutoff, overflow) = now.subtractingReportingOverflow(idle.milliseconds)
            let result = state.engine.evictIdle(before: overflow ? .min : cutoff, keeping: state.alerts.openSlots)
            if !result.slots.isEmpty {
                state.topicSlots.remove(slots: result.slots)
                state.alerts.forget(slots: result.slots)
                state.counters.evictedTags += result.slots.count
            }
            state.counters.tags = state.engine.tagCount
            return (result.snapshots, result.slots.count, state.engine.tagCount)
        }
        if evicted > 0 {
            self.logger.notice("idle tags forgotten (state kept in tag_state)", metadata: ["tags.evicted": "\(evicted)", "tags": "\(tags)"])
        }
        return snapshots
    }

    /// A batch entry's name becomes part of a tag identifier and of an alert topic: 1–256 bytes,
    /// no `/`, `+`, `#` and no control characters (NUL would truncate C strings).
    static func isValidTagName(_ name: String) -> Bool {
        let bytes = name.utf8
        return !bytes.isEmpty && bytes.count <= 256
            && !bytes.contains { $0 < 0x20 || $0 == 0x7F || $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "#") }
    }

    private func reject(_ reason: PayloadRejection, topic: String) {
        self.state.withLock {
            $0.counters.messages += 1
            $0.counters.rejected[reason, default: 0] += 1
        }
        self.logRejection(reason.rawValue, topic: topic)
    }

    /// Logs the 1st…10th rejection, then every power of two, so a flood of bad input cannot flood the log.
    private func logRejection(_ reason: String, topic: String) {
        let total = self.state.withLock { $0.counters.totalRejected }
        guard total.isWorthLogging else { return }
        self.logger.warning(
            "message rejected",
            metadata: [
                "reason": "\(reason)", "mqtt.topic": "\(topic.prefix(256))", "ingest.rejected_total": "\(total)",
            ])
    }
}
