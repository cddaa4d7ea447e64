package import Foundation
package import LibPQ

/// One decision as recorded: a row of `decisions` (docs/record.md, "Schema").
package struct DecisionRecord: Sendable, Equatable {
    package let decisionID: UUID
    /// Epoch milliseconds.
    package let ts: Int64
    package let module: String?
    /// `invoke`, `skip` or `defer`.
    package let action: String
    /// `rules`, `llm`, `api` or `schedule`.
    package let source: String
    /// JSON object text.
    package let trigger: String
    /// JSON array text: the verdict of each selection step.
    package let reasons: String
    package let confidence: Double?
    package let latencyMicroseconds: Int64?
    /// A chained decision: the decision whose invocation's result fired it.
    package let parentDecisionID: UUID?

    package init(
        decisionID: UUID, ts: Int64, module: String?, action: String, source: String, trigger: String, reasons: String,
        confidence: Double?, latencyMicroseconds: Int64?, parentDecisionID: UUID? = nil
    ) {
        self.parentDecisionID = parentDecisionID
        self.decisionID = decisionID
        self.ts = ts
        self.module = module
        self.action = action
        self.source = source
        self.trigger = trigger
        self.reasons = reasons
        self.confidence = confidence
        self.latencyMicroseconds = latencyMicroseconds
    }
}

/// What the record writer writes: each kind with its own table, all through the same queue,
/// batches and spool.
package enum Record: Sendable, Equatable {
    case alert(AlertEvent)
    case decision(DecisionRecord)
    case invocation(InvocationRecord)
    case outcome(OutcomeRecord)
    case approval(ApprovalRecord)
    case llmExchange(LLMExchangeRecord)

    /// The spool's record format: JSON, with `"record"` naming the kind (absent: an alert).
    package func payload() -> [UInt8] {
        switch self {
        case .alert(let event):
            return event.jsonPayload()
        case .decision(let d):
            var json = JSONWriter()
            json.field("record", string: "decision")
            json.field("decision_id", string: d.decisionID.uuidString.lowercased())
            json.field("ts", integer: d.ts)
            if let module = d.module { json.field("module", string: module) }
            json.field("action", string: d.action)
            json.field("source", string: d.source)
            json.field("trigger", string: d.trigger)
            json.field("reasons", string: d.reasons)
            if let confidence = d.confidence { json.field("confidence", number: confidence) }
            if let latency = d.latencyMicroseconds { json.field("latency_us", integer: latency) }
            if let parent = d.parentDecisionID { json.field("parent_decision_id", string: parent.uuidString.lowercased()) }
            return json.finish()
        case .invocation(let invocation):
            return invocation.payload()
        case .outcome(let outcome):
            return outcome.payload()
        case .approval(let approval):
            return approval.payload()
        case .llmExchange(let exchange):
            return exchange.payload()
        }
    }

    package init?(payload bytes: [UInt8]) {
        guard let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] else { return nil }
        switch object["record"] as? String {
        case "invocation":
            guard let record = InvocationRecord(object) else { return nil }
            self = .invocation(record)
            return
        case "outcome":
            guard let record = OutcomeRecord(object) else { return nil }
            self = .outcome(record)
            return
        case "approval":
            guard let record = ApprovalRecord(object) else { return nil }
            self = .approval(record)
            return
        case "llm_exchange":
            guard let record = LLMExchangeRecord(object) else { return nil }
            self = .llmExchange(record)
            return
        default:
            break
        }
        if object["record"] as? String == "decision" {
            guard let id = (object["decision_id"] as? String).flatMap(UUID.init(uuidString:)),
                let ts = (object["ts"] as? NSNumber)?.int64Value, let action = object["action"] as? String,
                let source = object["source"] as? String, let trigger = object["trigger"] as? String,
                let reasons = object["reasons"] as? String
            else { return nil }
            self = .decision(
                DecisionRecord(
                    decisionID: id, ts: ts, module: object["module"] as? String, action: action, source: source,
                    trigger: trigger, reasons: reasons, confidence: (object["confidence"] as? NSNumber)?.doubleValue,
                    latencyMicroseconds: (object["latency_us"] as? NSNumber)?.int64Value,
                    parentDecisionID: (object["parent_decision_id"] as? String).flatMap(UUID.init(uuidString:))))
        } else {
            guard let event = AlertEvent(json: bytes) else { return nil }
            self = .alert(event)
        }
    }

    var id: String {
        switch self {
        case .alert(let event): event.id
        case .decision(let d): d.decisionID.uuidString.lowercased()
        case .invocation(let i): i.invocationID.uuidString.lowercased()
        case .outcome(let o): "\(o.triggerKind)/\(o.module)"
        case .approval(let a): a.decisionID.uuidString.lowercased()
        case .llmExchange(let e): e.exchangeID.uuidString.lowercased()
        }
    }

    /// Who writes (``RecordWriter``): its instance id, on decision and invocation rows, and with
    /// `ha.enabled` the lease it holds — every batch is written only while that lease is still its
    /// own (fencing: a former active that lost the lease cannot write after the new one took over).
    package struct Writer: Sendable, Equatable {
        package var instance: String?
        /// The leases it acts under: the active one's, and with `sharding.shards` those of the
        /// shards it holds. Empty: no fence (a single instance).
        package var leases: [Lease]

        package struct Lease: Sendable, Equatable {
            /// The row: `active`, or a shard's.
            package let name: String
            package let holder: String
            package let epoch: Int64

            package init(name: String = "active", holder: String, epoch: Int64) {
                self.name = name
                self.holder = holder
                self.epoch = epoch
            }
        }

        package init(instance: String? = nil, lease: Lease? = nil) {
            self.instance = instance
            self.leases = lease.map { [$0] } ?? []
        }

        package init(instance: String?, leases: [Lease]) {
            self.instance = instance
            self.leases = leases
        }
    }

    /// A batch refused because one of the writer's leases is no longer current.
    package struct Fenced: Error, CustomStringConvertible {
        /// The leases no longer held (name and the epoch the writer acted under).
        package let lost: [Writer.Lease]
        package var epoch: Int64 { self.lost.first?.epoch ?? 0 }
        package var description: String {
            let leases = self.lost.map { "\($0.name) (epoch \($0.epoch))" }.joined(separator: ", ")
            return "the lease \(leases) is no longer this instance's: the write is refused"
        }
    }

    /// Writes a batch: each kind in one multi-row statement, all in one transaction.
    package static func write(_ batch: [Record], on connection: PostgresConnection, as writer: Writer = Writer()) throws {
        var alerts: [AlertEvent] = []
        var decisions: [DecisionRecord] = []
        // Invocation, outcome and approval records carry their whole state: the last one of a
        // batch for a key is the one that counts.
        var invocations: [UUID: InvocationRecord] = [:]
        var invocationOrder: [UUID] = []
        var outcomes: [String: OutcomeRecord] = [:]
        var approvals: [UUID: ApprovalRecord] = [:]
        var exchanges: [LLMExchangeRecord] = []
        for record in batch {
            switch record {
            case .alert(let event): alerts.append(event)
            case .decision(let decision): decisions.append(decision)
            case .invocation(let invocation):
                if invocations.updateValue(invocation, forKey: invocation.invocationID) == nil {
                    invocationOrder.append(invocation.invocationID)
                }
            case .outcome(let outcome): outcomes["\(outcome.triggerKind)\u{0}\(outcome.module)"] = outcome
            case .approval(let approval): approvals[approval.decisionID] = approval
            case .llmExchange(let exchange): exchanges.append(exchange)
            }
        }
        try connection.withTransaction { connection in
            if !writer.leases.isEmpty {
                // FOR SHARE: a takeover (an UPDATE of these rows) waits for this transaction, or this
                // transaction sees the new epoch and writes nothing.
                let names = "{" + writer.leases.map(\.name).joined(separator: ",") + "}"
                let current = try connection.query(
                    "SELECT name, holder, epoch FROM leases WHERE name = ANY($1::text[]) FOR SHARE", [names])
                let held = Set(current.rows.compactMap { row -> String? in
                    guard let name = row[0], let holder = row[1], let epoch = row[2] else { return nil }
                    return "\(name)\u{0}\(holder)\u{0}\(epoch)"
                })
                let lost = writer.leases.filter { !held.contains("\($0.name)\u{0}\($0.holder)\u{0}\($0.epoch)") }
                guard lost.isEmpty else { throw Fenced(lost: lost) }
            }
            try AlertStore.write(alerts, on: connection)
            try DecisionStore.write(decisions, instance: writer.instance, on: connection)
            try InvocationStore.write(invocationOrder.compactMap { invocations[$0] }, instance: writer.instance, on: connection)
            try InvocationStore.write(outcomes: Array(outcomes.values), on: connection)
            try InvocationStore.write(approvals: Array(approvals.values), on: connection)
            try InvocationStore.write(exchanges: exchanges, on: connection)
        }
    }
}

enum DecisionStore {
    static func write(_ decisions: [DecisionRecord], instance: String?, on connection: PostgresConnection) throws {
        guard !decisions.isEmpty else { return }
        try connection.query(
            """
            INSERT INTO decisions (decision_id, ts, module, action, source, trigger, reasons, confidence, latency_us,
                                   parent_decision_id, instance)
            SELECT id, to_timestamp(ms::double precision / 1000), module, action, source, trigger::jsonb, reasons::jsonb,
                   confidence, latency, parent, $11::text
            FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                        $8::float8[], $9::bigint[], $10::uuid[])
                AS r(id, ms, module, action, source, trigger, reasons, confidence, latency, parent)
            ON CONFLICT (decision_id) DO NOTHING
            """,
            [
                PostgresArray(decisions.map { $0.decisionID.uuidString.lowercased() }), PostgresArray(decisions.map(\.ts)),
                PostgresNullableTextArray(decisions.map(\.module)), PostgresArray(decisions.map(\.action)),
                PostgresArray(decisions.map(\.source)), PostgresArray(decisions.map { StorableJSON.jsonb($0.trigger) }),
                PostgresArray(decisions.map { StorableJSON.jsonb($0.reasons) }), PostgresArray(decisions.map(\.confidence)),
                PostgresNullableInt64Array(decisions.map(\.latencyMicroseconds)),
                PostgresNullableTextArray(decisions.map { $0.parentDecisionID?.uuidString.lowercased() }), instance,
            ])
    }
}
