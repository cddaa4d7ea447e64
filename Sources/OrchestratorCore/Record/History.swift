package import LibPQ
package import Foundation

/// Queries over the decision record: the data layer for `GET /decisions` and for audits.
/// Every filter is a bound parameter; an absent filter is a NULL that matches everything.
package enum History {
    /// Joins each decision `d` to its latest invocation as `i` — `status`, `invocation_id`,
    /// `attempts`, `latency_ms` (published → completed), its result's size and the result itself
    /// when it is at most ``resultShown`` bytes — (fixed SQL text).
    private static let latestOutcome = """
        LEFT JOIN LATERAL (
            SELECT status, invocation_id, attempts, latency_ms, octet_length(text) AS result_bytes,
                   CASE WHEN octet_length(text) <= \(resultShown) THEN text END AS result
            FROM (
                SELECT status, invocation_id, attempts, published_at,
                       (extract(epoch FROM (completed_at - published_at)) * 1000)::bigint AS latency_ms, result::text AS text
                FROM invocations WHERE decision_id = d.decision_id
                ORDER BY published_at DESC NULLS LAST LIMIT 1
            ) latest
        ) i ON true
        """

    /// Filters for ``decisions(_:on:)``; all optional.
    package struct DecisionQuery: Sendable {
        package var from: Int64?
        package var to: Int64?
        package var module: String?
        package var triggerKind: String?
        /// The status of the decision's latest invocation (`ok`, `error`, `timeout`, …), or `none`.
        package var outcome: String?
        package var source: String?
        package var limit = 100
        /// Keyset cursor: continue after this row (from the previous page's ``DecisionPage/next``).
        package var after: Cursor?

        package init() {}
    }

    /// Position of a row in the (ts, decision_id) descending order.
    /// Where a page ended: the last decision's time (epoch microseconds, PostgreSQL's resolution)
    /// and id. On the wire an opaque, URL-safe token (``token``, ``init(token:)``).
    package struct Cursor: Sendable, Equatable {
        package let microseconds: Int64
        package let decisionID: UUID

        package init(microseconds: Int64, decisionID: UUID) {
            self.microseconds = microseconds
            self.decisionID = decisionID
        }

        /// Base64url (no padding) of `v1:<microseconds>:<decision id>`: nothing a URL or a form
        /// encoder changes (no `+`, `/`, `=` or space).
        package var token: String {
            let text = "v1:\(self.microseconds):\(self.decisionID.uuidString.lowercased())"
            return Data(text.utf8).base64EncodedString()
                .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        }

        /// A token this server gave; nil for anything else.
        package init?(token: String) {
            guard token.count <= 200, token.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) else { return nil }
            var base64 = token.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
            base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
            guard let data = Data(base64Encoded: base64), let text = String(data: data, encoding: .utf8) else { return nil }
            let parts = text.split(separator: ":", omittingEmptySubsequences: false)
            // Within ±10,000 years of 1970: a forged time beyond what PostgreSQL stores is refused
            // here (400), not by the database (which would look like an outage).
            guard parts.count == 3, parts[0] == "v1", let micros = Int64(parts[1]), abs(Double(micros)) < 3.2e17,
                let id = UUID(uuidString: String(parts[2]))
            else { return nil }
            self.init(microseconds: micros, decisionID: id)
        }
    }

    /// A decision with the status of its latest invocation (`none` when it has none).
    package struct DecisionRow: Sendable, Equatable {
        package let decision: DecisionRecord
        package let outcome: String
        /// Its latest invocation, when it has one.
        package var invocation: Invocation? = nil
    }

    /// A decision's latest invocation: its id, how many times it was sent, and how long it took
    /// from publication to its result (nil while it runs, or when it timed out).
    package struct Invocation: Sendable, Equatable {
        package let id: UUID
        package let attempts: Int
        package let latencyMilliseconds: Int64?
        /// The module's result (JSON text) when it has one of at most ``History/resultShown`` bytes.
        package var result: String? = nil
        /// The size of the result in bytes, nil while there is none.
        package var resultBytes: Int? = nil
    }

    /// The largest result `GET /decisions` carries whole; a larger one is only sized (the whole
    /// result stays in the record, and on the result topic).
    package static let resultShown = 8192

    package struct DecisionPage: Sendable {
        package let rows: [DecisionRow]
        /// Cursor of the next page, `nil` on the last one.
        package let next: Cursor?
    }

    /// Decisions newest first, filtered, one page at a time (keyset pagination: stable under inserts).
    package static func decisions(_ query: DecisionQuery, on connection: PostgresConnection) throws -> DecisionPage {
        let limit = max(1, min(query.limit, 10_000))
        let rows = try connection.query(
            """
            SELECT d.decision_id::text AS decision_id, (extract(epoch FROM d.ts) * 1000)::bigint AS ts_ms, d.module, d.action,
                   d.source, d.trigger::text AS trigger, d.reasons::text AS reasons, d.confidence, d.latency_us,
                   d.parent_decision_id::text AS parent_decision_id, coalesce(i.status, 'none') AS outcome,
                   ((extract(epoch FROM d.ts) * 1000000)::numeric)::bigint AS ts_us,
                   i.invocation_id::text AS invocation_id, i.attempts, i.latency_ms, i.result_bytes, i.result
            FROM decisions d
            \(Self.latestOutcome)
            WHERE ($1::bigint IS NULL OR d.ts >= to_timestamp($1::double precision / 1000))
              AND ($2::bigint IS NULL OR d.ts < to_timestamp($2::double precision / 1000))
              AND ($3::text IS NULL OR d.module = $3)
              AND ($4::text IS NULL OR d.trigger->>'kind' = $4)
              AND ($5::text IS NULL OR coalesce(i.status, 'none') = $5)
              AND ($6::text IS NULL OR d.source = $6)
              AND ($7::bigint IS NULL OR (d.ts, d.decision_id) < (timestamptz 'epoch' + $7::bigint * interval '1 microsecond', $8::uuid))
            ORDER BY d.ts DESC, d.decision_id DESC
            LIMIT $9
            """,
            [
                query.from, query.to, query.module, query.triggerKind, query.outcome, query.source, query.after?.microseconds,
                query.after?.decisionID.uuidString.lowercased(), limit + 1,
            ])
        let decoded = try RowDecoder.decode(Listed.self, from: rows)
        var page = decoded.map { row in
            DecisionRow(
                decision: DecisionRecord(
                    decisionID: row.decisionID, ts: row.ts, module: row.module, action: row.action, source: row.source,
                    trigger: row.trigger ?? "{}", reasons: row.reasons ?? "[]", confidence: row.confidence,
                    latencyMicroseconds: row.latencyMicroseconds, parentDecisionID: row.parentDecisionID),
                outcome: row.outcome,
                invocation: row.invocationID.map {
                    Invocation(
                        id: $0, attempts: row.attempts ?? 0, latencyMilliseconds: row.invocationLatency, result: row.result,
                        resultBytes: row.resultBytes)
                })
        }
        var next: Cursor? = nil
        if page.count > limit {
            page.removeLast()
            let last = decoded[limit - 1]
            next = Cursor(microseconds: last.microseconds, decisionID: last.decisionID)
        }
        return DecisionPage(rows: page, next: next)
    }

    /// A row of ``decisions(_:on:)``'s query.
    private struct Listed: Decodable {
        let decisionID: UUID
        let ts: Int64
        let module: String?
        let action: String
        let source: String
        let trigger: String?
        let reasons: String?
        let confidence: Double?
        let latencyMicroseconds: Int64?
        let parentDecisionID: UUID?
        let outcome: String
        let microseconds: Int64
        let invocationID: UUID?
        let attempts: Int?
        let invocationLatency: Int64?
        let resultBytes: Int?
        let result: String?

        enum CodingKeys: String, CodingKey {
            case decisionID = "decision_id", ts = "ts_ms", module, action, source, trigger, reasons, confidence
            case latencyMicroseconds = "latency_us", parentDecisionID = "parent_decision_id", outcome, microseconds = "ts_us"
            case invocationID = "invocation_id", attempts, invocationLatency = "latency_ms", resultBytes = "result_bytes", result
        }
    }

    package struct Count: Sendable, Equatable, Decodable {
        package let module: String
        package let triggerKind: String
        package let outcome: String
        package let count: Int

        enum CodingKeys: String, CodingKey { case module, triggerKind = "trigger_kind", outcome, count }
    }

    /// Decisions counted per module × trigger kind × outcome over a time range.
    package static func counts(from: Int64?, to: Int64?, on connection: PostgresConnection) throws -> [Count] {
        let rows = try connection.query(
            """
            SELECT coalesce(d.module, '-') AS module, coalesce(d.trigger->>'kind', '-') AS trigger_kind,
                   coalesce(i.status, 'none') AS outcome, count(*) AS count
            FROM decisions d
            \(Self.latestOutcome)
            WHERE ($1::bigint IS NULL OR d.ts >= to_timestamp($1::double precision / 1000))
              AND ($2::bigint IS NULL OR d.ts < to_timestamp($2::double precision / 1000))
            GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
            """, [from, to])
        return try RowDecoder.decode(Count.self, from: rows)
    }

    package struct ModuleStats: Sendable, Equatable, Decodable {
        package let module: String
        package let invocations: Int
        /// Share of finished invocations with status `ok`.
        package let successRate: Double
        /// Latency (published → completed) percentiles in milliseconds.
        package let p50: Double?
        package let p95: Double?
        package let p99: Double?

        enum CodingKeys: String, CodingKey { case module, invocations, successRate = "success_rate", p50, p95, p99 }
    }

    /// Invocation success rate and latency percentiles per module over a time range.
    package static func moduleStats(from: Int64?, to: Int64?, on connection: PostgresConnection) throws -> [ModuleStats] {
        let rows = try connection.query(
            """
            SELECT module, count(*) AS invocations,
                   coalesce(avg(CASE WHEN status = 'ok' THEN 1.0 ELSE 0.0 END) FILTER (WHERE status <> 'pending'), 0) AS success_rate,
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM completed_at - published_at) * 1000) AS p50,
                   percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM completed_at - published_at) * 1000) AS p95,
                   percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM completed_at - published_at) * 1000) AS p99
            FROM invocations
            WHERE ($1::bigint IS NULL OR published_at >= to_timestamp($1::double precision / 1000))
              AND ($2::bigint IS NULL OR published_at < to_timestamp($2::double precision / 1000))
            GROUP BY module ORDER BY module
            """, [from, to])
        return try RowDecoder.decode(ModuleStats.self, from: rows)
    }
}
