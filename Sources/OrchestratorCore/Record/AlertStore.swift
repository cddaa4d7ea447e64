import LibPQ

/// Writes alert transitions to `alerts`: one row per episode, idempotent on `alert_id`.
enum AlertStore {
    /// One row to write: an episode's raise, its clear, or both merged.
    struct Row {
        var event: AlertEvent
        var cleared: AlertEvent?
    }

    /// Merges a batch into one row per alert id (a raise and its clear in the same batch become one
    /// row), keeping the batch order of first appearance.
    static func rows(_ batch: [AlertEvent]) -> [Row] {
        var rows: [Row] = []
        var index: [String: Int] = [:]
        for event in batch {
            let id = event.id
            if let at = index[id] {
                if event.state == .cleared {
                    rows[at].cleared = event
                } else if rows[at].event.state == .cleared {
                    // A raise after its clear (replayed out of order): the raise carries the episode.
                    rows[at] = Row(event: event, cleared: rows[at].event)
                }
            } else {
                index[id] = rows.count
                rows.append(event.state == .cleared ? Row(event: event, cleared: event) : Row(event: event, cleared: nil))
            }
        }
        return rows
    }

    /// Writes a batch with one statement: arrays unnested server-side, upserted so that replays
    /// change nothing and a clear always wins over a raise.
    static func write(_ batch: [AlertEvent], on connection: PostgresConnection) throws {
        let rows = Self.rows(batch)
        guard !rows.isEmpty else { return }
        func optional(_ values: [Double]) -> [Double?] { values.map { $0.isFinite ? $0 : nil } }
        try connection.query(
            """
            INSERT INTO alerts (alert_id, tag, topic, kind, severity, state, ts, raised_at, cleared_at,
                                value, score, message, cleared_value, cleared_message, suppressed)
            SELECT id, tag, topic, kind, severity, CASE WHEN cleared_ms IS NULL THEN 'raised' ELSE 'cleared' END,
                   to_timestamp(ts_ms::double precision / 1000), to_timestamp(raised_ms::double precision / 1000),
                   to_timestamp(cleared_ms::double precision / 1000), value, score, message, cleared_value, cleared_message, suppressed
            FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[],
                        $8::bigint[], $9::float8[], $10::float8[], $11::text[], $12::float8[], $13::text[], $14::text[])
                AS r(id, tag, topic, kind, severity, ts_ms, raised_ms, cleared_ms, value, score, message,
                     cleared_value, cleared_message, suppressed)
            ON CONFLICT (alert_id) DO UPDATE
            SET state = CASE WHEN EXCLUDED.state = 'cleared' THEN 'cleared' ELSE alerts.state END,
                cleared_at = COALESCE(EXCLUDED.cleared_at, alerts.cleared_at),
                cleared_value = COALESCE(EXCLUDED.cleared_value, alerts.cleared_value),
                cleared_message = COALESCE(EXCLUDED.cleared_message, alerts.cleared_message)
            """,
            [
                PostgresArray(rows.map(\.event.id)), PostgresArray(rows.map(\.event.tag)),
                PostgresArray(rows.map(\.event.topic)), PostgresArray(rows.map(\.event.kind.rawValue)),
                PostgresArray(rows.map(\.event.severity.rawValue)), PostgresArray(rows.map(\.event.timestamp)),
                PostgresArray(rows.map(\.event.raisedAt)),
                PostgresNullableInt64Array(rows.map { $0.cleared.map { $0.clearedAt ?? $0.timestamp } }),
                PostgresArray(optional(rows.map(\.event.value))), PostgresArray(optional(rows.map(\.event.score))),
                PostgresArray(rows.map(\.event.message)),
                PostgresArray(rows.map { $0.cleared.flatMap { $0.value.isFinite ? $0.value : nil } }),
                PostgresNullableTextArray(rows.map { $0.cleared?.message }),
                PostgresNullableTextArray(rows.map { $0.event.suppression?.rawValue }),
            ])
    }
}

/// `bigint[]` with NULLs.
struct PostgresNullableInt64Array: PostgresEncodable {
    let postgresText: String
    init(_ values: [Int64?]) {
        self.postgresText = "{" + values.map { $0.map(String.init) ?? "NULL" }.joined(separator: ",") + "}"
    }
}

/// `text[]` with NULLs.
struct PostgresNullableTextArray: PostgresEncodable {
    let postgresText: String
    init(_ values: [String?]) {
        let quoted = values.map { value -> String in
            guard let value else { return "NULL" }
            // Reuse the escaping of PostgresArray on a one-element array, minus its braces.
            return String(PostgresArray([value]).postgresText.dropFirst().dropLast())
        }
        self.postgresText = "{" + quoted.joined(separator: ",") + "}"
    }
}
