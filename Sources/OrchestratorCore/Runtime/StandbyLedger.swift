import Foundation
import Synchronization

/// What a standby raised while it stood by (docs/availability.md): it detects everything, publishes
/// and records nothing, and keeps here the raise of every episode still open — so that at a
/// takeover each is matched with the active's episode for the same condition (and takes its id) or,
/// when the record has none, announced then.
///
/// It also hears what the active announced on `{prefix}/alert/#`: the episodes the active raised
/// and cleared, whether or not its records reached the database before it was killed or cut off
/// (its spool is on its own disk).
package final class StandbyLedger: AlertSink, Sendable {
    private let open = Mutex<[UUID: AlertEvent]>([:])
    private let heard = Mutex<Heard>(Heard())
    private let acting: @Sendable () -> Bool
    /// With `sharding.shards`: what other instances announce is kept while this one acts too (for
    /// the shards it may take over), and taken by shard.
    private let hearsWhileActing: Bool

    private struct Heard {
        /// The active's raises not cleared since, by alert id.
        var open: [UUID: AlertEvent] = [:]
        /// Its latest clears (at most `maxClears`, the oldest forgotten first).
        var clears: [UUID: AlertEvent] = [:]
        var clearOrder: [UUID] = []
        /// Its decisions (`{prefix}/decision`) and invocations (`{prefix}/cmd/…`), the latest
        /// `maxInvocations` of each.
        var decisions: [UUID: DecisionRecord] = [:]
        var decisionOrder: [UUID] = []
        var invocations: [UUID: InvocationRecord] = [:]
        var invocationOrder: [UUID] = []
        /// Module results (`{prefix}/result/{module}`) the active may not have recorded: topic and
        /// payload, by invocation id, the latest `maxInvocations`.
        var results: [UUID: (topic: String, payload: [UInt8])] = [:]
        var resultOrder: [UUID] = []
    }

    /// At most this many open episodes and clears are kept from the wire.
    static let maxHeard = 100_000
    static let maxClears = 10_000
    /// At most this many invocations and decisions: an invocation carries its data windows (tens
    /// of KiB), and what the record may lack at a takeover is the last seconds' only.
    static let maxInvocations = 1_000

    /// - Parameter acting: whether this instance publishes and records (then nothing is kept).
    package init(acting: @escaping @Sendable () -> Bool, hearsWhileActing: Bool = false) {
        self.acting = acting
        self.hearsWhileActing = hearsWhileActing
    }

    /// Whether what is heard on the wire is kept now.
    private var keepsHeard: Bool { self.hearsWhileActing || !self.acting() }

    package func deliver(_ event: AlertEvent) {
        guard !self.acting() else { return }
        self.open.withLock { open in
            if event.state == .raised { open[event.alertID] = event } else { open[event.alertID] = nil }
        }
    }

    /// The raises still open, oldest first, and forgets them.
    package func take() -> [AlertEvent] {
        self.open.withLock { open in
            defer { open.removeAll() }
            return open.values.sorted { $0.raisedAt < $1.raisedAt }
        }
    }

    package var count: Int { self.open.withLock { $0.count } }

    /// An alert the active published (`{prefix}/alert/…`); ignored while this instance acts, and
    /// when it is not one.
    func hear(_ payload: [UInt8]) {
        guard self.keepsHeard, payload.count <= 65_536, let event = AlertEvent(json: payload) else { return }
        self.heard.withLock { heard in
            switch event.state {
            case .raised:
                guard heard.open.count < Self.maxHeard || heard.open[event.alertID] != nil else { return }
                heard.open[event.alertID] = event
            case .cleared:
                heard.open[event.alertID] = nil
                if heard.clears.updateValue(event, forKey: event.alertID) == nil { heard.clearOrder.append(event.alertID) }
                Self.trim(&heard.clears, order: &heard.clearOrder, to: Self.maxClears)
            }
        }
    }

    /// A decision the active mirrored on `{prefix}/decision`.
    func hearDecision(_ payload: [UInt8]) {
        guard self.keepsHeard, payload.count <= 1 << 20, case .decision(let decision)? = Record(payload: payload) else { return }
        self.heard.withLock { heard in
            if heard.decisions.updateValue(decision, forKey: decision.decisionID) == nil { heard.decisionOrder.append(decision.decisionID) }
            Self.trim(&heard.decisions, order: &heard.decisionOrder, to: Self.maxInvocations)
        }
    }

    /// An invocation the active published on `{prefix}/cmd/{module}` (docs/mqtt-contract.md): what
    /// its row would say, published and pending.
    func hearInvocation(_ payload: [UInt8]) {
        guard self.keepsHeard, payload.count <= 1 << 22, let message = JSONValue(parsing: payload),
            let id = message.string("invocation_id").flatMap(UUID.init(uuidString:)),
            let decision = message.string("decision_id").flatMap(UUID.init(uuidString:)),
            let module = message.string("module", limit: 64), let published = message["ts"]?.number.flatMap({ Int64(exactly: $0.rounded()) }),
            let params = message["params"]
        else { return }
        let attempt = message["attempt"]?.number ?? 1
        let record = InvocationRecord(
            invocationID: id, decisionID: decision, module: module, params: params.text, publishedAt: published,
            completedAt: nil, status: "pending", attempts: attempt.isFinite ? Int(exactly: attempt.rounded()) ?? 1 : 1,
            result: nil, triggerKind: message["trigger"]?.string("kind", limit: 64) ?? "manual", scopeKey: params.string("scope", limit: 1024) ?? "")
        self.heard.withLock { heard in
            if heard.invocations.updateValue(record, forKey: id) == nil { heard.invocationOrder.append(id) }
            Self.trim(&heard.invocations, order: &heard.invocationOrder, to: Self.maxInvocations)
        }
    }

    /// A module's result (`{prefix}/result/{module}`): kept as it came, for the takeover to hand
    /// to the coordinator if its invocation is still pending then.
    func hearResult(topic: String, payload: [UInt8]) {
        guard self.keepsHeard, payload.count <= 1 << 20, let message = JSONValue(parsing: payload),
            let id = message.string("invocation_id").flatMap(UUID.init(uuidString:))
        else { return }
        self.heard.withLock { heard in
            if heard.results.updateValue((topic, payload), forKey: id) == nil { heard.resultOrder.append(id) }
            Self.trim(&heard.results, order: &heard.resultOrder, to: Self.maxInvocations)
        }
    }

    /// Keeps the latest `limit` entries.
    private static func trim<Value>(_ values: inout [UUID: Value], order: inout [UUID], to limit: Int) {
        guard order.count > limit else { return }
        let forgotten = order.prefix(order.count - limit)
        for id in forgotten { values[id] = nil }
        order.removeFirst(forgotten.count)
    }

    /// What the active announced: its raises still open, its clears, the invocations it published
    /// with their decisions, and the results modules sent it; forgets them.
    func takeHeard() -> Taken {
        self.take(tag: { _ in true }, scope: { _ in true }, keepingResults: false)
    }

    /// What was announced about one shard's units (``ShardMap``): its raises still open, its clears,
    /// its invocations (by scope) and their decisions (and those about its tags; those about no tag
    /// are shard 0's); forgets them. The modules' results are all given and kept (the caller hands
    /// on those of its pending invocations).
    func takeHeard(ofShard shard: Int, in map: ShardMap) -> Taken {
        self.take(tag: { map.shard(ofTag: $0) == shard }, scope: { map.shard(ofScope: $0) == shard }, keepingResults: true)
    }

    private func take(tag ours: (String) -> Bool, scope oursByScope: (String) -> Bool, keepingResults: Bool) -> Taken {
        self.heard.withLock { heard in
            let open = heard.open.values.filter { ours($0.tag) }.sorted { $0.raisedAt < $1.raisedAt }
            for event in open { heard.open[event.alertID] = nil }
            let clears = heard.clears.filter { ours($0.value.tag) }
            for id in clears.keys { heard.clears[id] = nil }
            heard.clearOrder.removeAll { clears[$0] != nil }
            let invocations = heard.invocationOrder.compactMap { heard.invocations[$0] }.filter { oursByScope($0.scopeKey) }
            let taken = Set(invocations.map(\.invocationID))
            for id in taken { heard.invocations[id] = nil }
            heard.invocationOrder.removeAll { taken.contains($0) }
            let invoked = Set(invocations.map(\.decisionID))
            let decisions = heard.decisions.filter { id, decision in
                invoked.contains(id) || (JSONValue(parsing: Array(decision.trigger.utf8))?.string("tag").map(ours) ?? oursByScope("all"))
            }
            for id in decisions.keys { heard.decisions[id] = nil }
            heard.decisionOrder.removeAll { decisions[$0] != nil }
            let results = heard.resultOrder.compactMap { id in heard.results[id].map { (id, $0.topic, $0.payload) } }
            if !keepingResults {
                heard.results = [:]
                heard.resultOrder = []
            }
            return Taken(open: open, clears: clears, invocations: invocations, decisions: decisions, results: results)
        }
    }

    /// What ``takeHeard()`` gives.
    struct Taken {
        /// The active's raises still open, oldest first.
        var open: [AlertEvent]
        var clears: [UUID: AlertEvent]
        var invocations: [InvocationRecord]
        var decisions: [UUID: DecisionRecord]
        /// Module results, as they came, in order.
        var results: [(invocation: UUID, topic: String, payload: [UInt8])]
    }
}
