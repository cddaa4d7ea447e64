package import Foundation
import LibPQ

/// A row of `invocations` with its whole current state (written on every change).
package struct InvocationRecord: Sendable, Equatable {
    package let invocationID: UUID
    package let decisionID: UUID
    package let module: String
    package let params: String
    package let publishedAt: Int64?
    package let completedAt: Int64?
    package let status: String
    package let attempts: Int
    package let result: String?
    package let triggerKind: String
    package let scopeKey: String

    package init(
        invocationID: UUID, decisionID: UUID, module: String, params: String, publishedAt: Int64?, completedAt: Int64?,
        status: String, attempts: Int, result: String?, triggerKind: String, scopeKey: String
    ) {
        self.invocationID = invocationID
        self.decisionID = decisionID
        self.module = module
        self.params = params
        self.publishedAt = publishedAt
        self.completedAt = completedAt
        self.status = status
        self.attempts = attempts
        self.result = result
        self.triggerKind = triggerKind
        self.scopeKey = scopeKey
    }

    func payload() -> [UInt8] {
        var json = JSONWriter()
        json.field("record", string: "invocation")
        json.field("invocation_id", string: self.invocationID.uuidString.lowercased())
        json.field("decision_id", string: self.decisionID.uuidString.lowercased())
        json.field("module", string: self.module)
        json.field("params", string: self.params)
        if let at = self.publishedAt { json.field("published_at", integer: at) }
        if let at = self.completedAt { json.field("completed_at", integer: at) }
        json.field("status", string: self.status)
        json.field("attempts", integer: Int64(self.attempts))
        if let result = self.result { json.field("result", string: result) }
        json.field("trigger_kind", string: self.triggerKind)
        json.field("scope", string: self.scopeKey)
        return json.finish()
    }

    init?(_ object: [String: Any]) {
        guard let id = (object["invocation_id"] as? String).flatMap(UUID.init(uuidString:)),
            let decision = (object["decision_id"] as? String).flatMap(UUID.init(uuidString:)),
            let module = object["module"] as? String, let params = object["params"] as? String,
            let status = object["status"] as? String, let attempts = (object["attempts"] as? NSNumber)?.intValue
        else { return nil }
        self.init(
            invocationID: id, decisionID: decision, module: module, params: params,
            publishedAt: (object["published_at"] as? NSNumber)?.int64Value, completedAt: (object["completed_at"] as? NSNumber)?.int64Value,
            status: status, attempts: attempts, result: object["result"] as? String,
            triggerKind: object["trigger_kind"] as? String ?? "", scopeKey: object["scope"] as? String ?? "")
    }
}

/// A row of `outcomes`: the whole statistics of one (trigger kind, module).
package struct OutcomeRecord: Sendable, Equatable {
    package let triggerKind: String
    package let module: String
    package let statistics: OutcomeStatistics

    package init(triggerKind: String, module: String, statistics: OutcomeStatistics) {
        self.triggerKind = triggerKind
        self.module = module
        self.statistics = statistics
    }

    func payload() -> [UInt8] {
        var json = JSONWriter()
        json.field("record", string: "outcome")
        json.field("trigger_kind", string: self.triggerKind)
        json.field("module", string: self.module)
        json.field("invocations", integer: Int64(self.statistics.invocations))
        json.field("successes", integer: Int64(self.statistics.successes))
        json.field("benefit_sum", number: self.statistics.benefitSum)
        json.field("benefit_sq_sum", number: self.statistics.benefitSquareSum)
        return json.finish()
    }

    init?(_ object: [String: Any]) {
        guard let kind = object["trigger_kind"] as? String, let module = object["module"] as? String,
            let invocations = (object["invocations"] as? NSNumber)?.intValue, let successes = (object["successes"] as? NSNumber)?.intValue
        else { return nil }
        self.init(
            triggerKind: kind, module: module,
            statistics: OutcomeStatistics(
                invocations: invocations, successes: successes, benefitSum: (object["benefit_sum"] as? NSNumber)?.doubleValue ?? 0,
                benefitSquareSum: (object["benefit_sq_sum"] as? NSNumber)?.doubleValue ?? 0))
    }
}

/// A row of `approvals`: who approved or rejected a pending decision, or that it expired.
package struct ApprovalRecord: Sendable, Equatable {
    package enum State: String, Sendable {
        case approved
        case rejected
        case expired
    }

    package let decisionID: UUID
    package let state: State
    package let by: String?
    /// `mqtt`, `http` or `timer`.
    package let via: String
    package let at: Int64

    package init(decisionID: UUID, state: State, by: String?, via: String, at: Int64) {
        self.decisionID = decisionID
        self.state = state
        self.by = by
        self.via = via
        self.at = at
    }

    func payload() -> [UInt8] {
        var json = JSONWriter()
        json.field("record", string: "approval")
        json.field("decision_id", string: self.decisionID.uuidString.lowercased())
        json.field("state", string: self.state.rawValue)
        if let by = self.by { json.field("by", string: by) }
        json.field("via", string: self.via)
        json.field("at", integer: self.at)
        return json.finish()
    }

    init?(_ object: [String: Any]) {
        guard let id = (object["decision_id"] as? String).flatMap(UUID.init(uuidString:)),
            let state = (object["state"] as? String).flatMap(State.init(rawValue:)), let via = object["via"] as? String,
            let at = (object["at"] as? NSNumber)?.int64Value
        else { return nil }
        self.init(decisionID: id, state: state, by: object["by"] as? String, via: via, at: at)
    }
}

enum InvocationStore {
    // Each kind in one multi-row statement (arrays unnested server-side), like alerts and decisions.
    // A batch holds at most one record per key (``Record/write(_:on:)`` keeps the last), as
    // `ON CONFLICT DO UPDATE` may not touch a row twice in one statement.

    static func write(_ invocations: [InvocationRecord], instance: String?, on connection: PostgresConnection) throws {
        guard !invocations.isEmpty else { return }
        try connection.query(
            """
            INSERT INTO invocations (invocation_id, decision_id, module, params, published_at, completed_at, status, attempts,
                                     result, trigger_kind, scope, instance)
            SELECT id, decision, module, params::jsonb, to_timestamp(published::double precision / 1000),
                   to_timestamp(completed::double precision / 1000), status, attempts, result::jsonb, kind, scope, $12::text
            FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::text[], $8::bigint[],
                        $9::text[], $10::text[], $11::text[])
                AS r(id, decision, module, params, published, completed, status, attempts, result, kind, scope)
            ON CONFLICT (invocation_id) DO UPDATE SET
                published_at = EXCLUDED.published_at, completed_at = EXCLUDED.completed_at, status = EXCLUDED.status,
                attempts = EXCLUDED.attempts, result = EXCLUDED.result, instance = EXCLUDED.instance
            """,
            [
                PostgresArray(invocations.map { $0.invocationID.uuidString.lowercased() }),
                PostgresArray(invocations.map { $0.decisionID.uuidString.lowercased() }), PostgresArray(invocations.map(\.module)),
                PostgresArray(invocations.map { StorableJSON.jsonb($0.params) }), PostgresNullableInt64Array(invocations.map(\.publishedAt)),
                PostgresNullableInt64Array(invocations.map(\.completedAt)), PostgresArray(invocations.map(\.status)),
                PostgresArray(invocations.map { Int64($0.attempts) }), PostgresNullableTextArray(invocations.map { StorableJSON.jsonb($0.result) }),
                PostgresArray(invocations.map(\.triggerKind)), PostgresArray(invocations.map(\.scopeKey)), instance,
            ])
    }

    static func write(outcomes: [OutcomeRecord], on connection: PostgresConnection) throws {
        guard !outcomes.isEmpty else { return }
        try connection.query(
            """
            INSERT INTO outcomes (trigger_kind, module, invocations, successes, benefit_sum, benefit_sq_sum, updated_at)
            SELECT kind, module, n, s, benefit, square, now()
            FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::float8[], $6::float8[])
                AS r(kind, module, n, s, benefit, square)
            ON CONFLICT (trigger_kind, module) DO UPDATE SET
                invocations = EXCLUDED.invocations, successes = EXCLUDED.successes, benefit_sum = EXCLUDED.benefit_sum,
                benefit_sq_sum = EXCLUDED.benefit_sq_sum, updated_at = now()
            """,
            [
                PostgresArray(outcomes.map(\.triggerKind)), PostgresArray(outcomes.map(\.module)),
                PostgresArray(outcomes.map { Int64($0.statistics.invocations) }), PostgresArray(outcomes.map { Int64($0.statistics.successes) }),
                PostgresArray(outcomes.map { Optional($0.statistics.benefitSum) }),
                PostgresArray(outcomes.map { Optional($0.statistics.benefitSquareSum) }),
            ])
    }

    static func write(approvals: [ApprovalRecord], on connection: PostgresConnection) throws {
        guard !approvals.isEmpty else { return }
        try connection.query(
            """
            INSERT INTO approvals (decision_id, state, by_whom, via, at)
            SELECT id, state, by_whom, via, to_timestamp(at_ms::double precision / 1000)
            FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[]) AS r(id, state, by_whom, via, at_ms)
            ON CONFLICT (decision_id) DO UPDATE SET state = EXCLUDED.state, by_whom = EXCLUDED.by_whom, via = EXCLUDED.via,
                at = EXCLUDED.at
            """,
            [
                PostgresArray(approvals.map { $0.decisionID.uuidString.lowercased() }), PostgresArray(approvals.map(\.state.rawValue)),
                PostgresNullableTextArray(approvals.map(\.by)), PostgresArray(approvals.map(\.via)), PostgresArray(approvals.map(\.at)),
            ])
    }

    /// What the decision side reloads at start: the learned statistics and the invocations still
    /// pending (with their decision's time, for approval expiry).
    static func load(on connection: PostgresConnection) throws -> DecisionMemory {
        var memory = DecisionMemory()
        let outcomes = try connection.query(
            "SELECT trigger_kind, module, invocations, successes, benefit_sum, benefit_sq_sum FROM outcomes")
        for row in try RowDecoder.decode(Remembered.Outcome.self, from: outcomes) {
            memory.statistics[OutcomeStatistics.Key(triggerKind: row.triggerKind, module: row.module)] = OutcomeStatistics(
                invocations: row.invocations, successes: row.successes, benefitSum: row.benefitSum ?? 0,
                benefitSquareSum: row.benefitSquareSum ?? 0)
        }
        let pending = try connection.query(
            """
            SELECT i.invocation_id, i.decision_id, i.module, i.params::text AS params,
                   (extract(epoch FROM i.published_at) * 1000)::bigint AS published_at, i.attempts,
                   coalesce(i.trigger_kind, d.trigger->>'kind', '') AS trigger_kind, coalesce(i.scope, '') AS scope,
                   d.trigger::text AS trigger, (extract(epoch FROM d.ts) * 1000)::bigint AS decided_at
            FROM invocations i JOIN decisions d USING (decision_id)
            WHERE i.status = 'pending'
            ORDER BY d.ts
            """)
        for row in try RowDecoder.decode(Remembered.Pending.self, from: pending) {
            guard let module = ModuleName(rawValue: row.module) else { continue }
            var invocation = Invocation(
                id: row.invocationID, decisionID: row.decisionID, module: module, triggerKind: row.triggerKind, scopeKey: row.scope,
                params: row.params, trigger: row.trigger ?? "{}")
            invocation.attempts = row.attempts
            invocation.publishedAt = row.publishedAt
            memory.pending.append((invocation, row.decidedAt))
        }
        let last = try connection.query(
            """
            SELECT module, coalesce(scope, '') AS scope, coalesce(trigger_kind, '') AS trigger_kind,
                   (extract(epoch FROM max(published_at)) * 1000)::bigint AS at
            FROM invocations WHERE published_at > now() - interval '7 days'
            GROUP BY module, scope, trigger_kind
            """)
        for row in try RowDecoder.decode(Remembered.LastInvoked.self, from: last) {
            guard let module = ModuleName(rawValue: row.module) else { continue }
            memory.lastInvoked[CooldownKey(module, row.scope)] = max(memory.lastInvoked[CooldownKey(module, row.scope)] ?? .min, row.at)
            memory.lastInvokedForKind[CooldownKey(module, row.triggerKind)] = max(
                memory.lastInvokedForKind[CooldownKey(module, row.triggerKind)] ?? .min, row.at)
        }
        // A schedule fires once in its minute, across restarts too: every firing left a decision.
        let fired = try connection.query(
            """
            SELECT trigger->>'name' AS name, max((trigger->>'time')::bigint) / 60000 AS minute
            FROM decisions WHERE trigger->>'kind' = 'schedule' AND ts > now() - interval '2 days'
            GROUP BY 1
            """)
        for row in try RowDecoder.decode(Remembered.ScheduleFired.self, from: fired) {
            guard let name = row.name, let minute = row.minute else { continue }
            memory.scheduleFired[name] = minute
        }
        return memory
    }

    /// The rows of ``load(on:)``'s queries.
    private enum Remembered {
        struct Outcome: Decodable {
            let triggerKind: String
            let module: String
            let invocations: Int
            let successes: Int
            let benefitSum: Double?
            let benefitSquareSum: Double?

            enum CodingKeys: String, CodingKey {
                case triggerKind = "trigger_kind", module, invocations, successes, benefitSum = "benefit_sum"
                case benefitSquareSum = "benefit_sq_sum"
            }
        }

        struct Pending: Decodable {
            let invocationID: UUID
            let decisionID: UUID
            let module: String
            let params: String
            let publishedAt: Int64?
            let attempts: Int
            let triggerKind: String
            let scope: String
            let trigger: String?
            let decidedAt: Int64

            enum CodingKeys: String, CodingKey {
                case invocationID = "invocation_id", decisionID = "decision_id", module, params, publishedAt = "published_at", attempts
                case triggerKind = "trigger_kind", scope, trigger, decidedAt = "decided_at"
            }
        }

        struct LastInvoked: Decodable {
            let module: String
            let scope: String
            let triggerKind: String
            let at: Int64

            enum CodingKeys: String, CodingKey { case module, scope, triggerKind = "trigger_kind", at }
        }

        struct ScheduleFired: Decodable {
            let name: String?
            let minute: Int64?
        }
    }
}

/// The decision side's state as the record holds it.
package struct DecisionMemory: Sendable {
    package var statistics: [OutcomeStatistics.Key: OutcomeStatistics] = [:]
    /// Pending invocations and when their decision was made.
    package var pending: [(invocation: Invocation, decidedAt: Int64)] = []
    /// Last invocation per module and scope, and per module and trigger kind.
    package var lastInvoked: [CooldownKey: Int64] = [:]
    package var lastInvokedForKind: [CooldownKey: Int64] = [:]
    /// The minute (epoch minutes) each schedule rule last fired in, by rule name.
    package var scheduleFired: [String: Int64] = [:]

    package init() {}
}

/// A row of `llm_exchanges`: one call to the LLM, what was sent, what came back, the reasoning kept
/// apart, and how it ended.
package struct LLMExchangeRecord: Sendable, Equatable {
    package let exchangeID: UUID
    package let decisionID: UUID?
    package let ts: Int64
    package let provider: String
    package let model: String
    package let request: String
    package let response: String?
    package let reasoning: String?
    package let status: String
    package let latencyMilliseconds: Int
    package let error: String?
    /// `POST /orchestrate`: the session, the person's question and the answer given.
    package var sessionID: UUID? = nil
    package var question: String? = nil
    package var answer: String? = nil

    package init(
        exchangeID: UUID, decisionID: UUID?, ts: Int64, provider: String, model: String, request: String, response: String?,
        reasoning: String?, status: String, latencyMilliseconds: Int, error: String?
    ) {
        self.exchangeID = exchangeID
        self.decisionID = decisionID
        self.ts = ts
        self.provider = provider
        self.model = model
        self.request = request
        self.response = response
        self.reasoning = reasoning
        self.status = status
        self.latencyMilliseconds = latencyMilliseconds
        self.error = error
    }

    func payload() -> [UInt8] {
        var json = JSONWriter()
        json.field("record", string: "llm_exchange")
        json.field("exchange_id", string: self.exchangeID.uuidString.lowercased())
        if let id = self.decisionID { json.field("decision_id", string: id.uuidString.lowercased()) }
        json.field("ts", integer: self.ts)
        json.field("provider", string: self.provider)
        json.field("model", string: self.model)
        json.field("request", string: self.request)
        if let response = self.response { json.field("response", string: response) }
        if let reasoning = self.reasoning { json.field("reasoning", string: reasoning) }
        json.field("status", string: self.status)
        json.field("latency_ms", integer: Int64(self.latencyMilliseconds))
        if let error = self.error { json.field("error", string: error) }
        if let id = self.sessionID { json.field("session_id", string: id.uuidString.lowercased()) }
        if let question = self.question { json.field("question", string: question) }
        if let answer = self.answer { json.field("answer", string: answer) }
        return json.finish()
    }

    init?(_ object: [String: Any]) {
        guard let id = (object["exchange_id"] as? String).flatMap(UUID.init(uuidString:)), let ts = (object["ts"] as? NSNumber)?.int64Value,
            let provider = object["provider"] as? String, let model = object["model"] as? String,
            let request = object["request"] as? String, let status = object["status"] as? String
        else { return nil }
        self.init(
            exchangeID: id, decisionID: (object["decision_id"] as? String).flatMap(UUID.init(uuidString:)), ts: ts, provider: provider,
            model: model, request: request, response: object["response"] as? String, reasoning: object["reasoning"] as? String,
            status: status, latencyMilliseconds: (object["latency_ms"] as? NSNumber)?.intValue ?? 0, error: object["error"] as? String)
        self.sessionID = (object["session_id"] as? String).flatMap(UUID.init(uuidString:))
        self.question = object["question"] as? String
        self.answer = object["answer"] as? String
    }
}

extension InvocationStore {
    static func write(exchanges: [LLMExchangeRecord], on connection: PostgresConnection) throws {
        for e in exchanges {
            if let session = e.sessionID {
                try connection.query(
                    "INSERT INTO sessions (session_id) VALUES ($1) ON CONFLICT (session_id) DO UPDATE SET updated_at = now()",
                    [session.uuidString.lowercased()])
            }
            try connection.query(
                """
                INSERT INTO llm_exchanges (exchange_id, decision_id, ts, provider, model, request, response, reasoning, status, latency_ms, error,
                                           session_id, question, answer)
                VALUES ($1, $2, to_timestamp($3::double precision / 1000), $4, $5, $6::jsonb, $7::jsonb, $8, $9, $10, $11, $12, $13, $14)
                ON CONFLICT (exchange_id) DO NOTHING
                """,
                [
                    e.exchangeID.uuidString.lowercased(), e.decisionID?.uuidString.lowercased(), e.ts, e.provider, e.model,
                    StorableJSON.checkedJSONB(e.request), StorableJSON.checkedJSONB(e.response), e.reasoning, e.status, e.latencyMilliseconds,
                    e.error, e.sessionID?.uuidString.lowercased(), e.question, e.answer,
                ])
        }
    }
}
