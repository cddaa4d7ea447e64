import LibPQ

/// Reads and writes `tag_state`: each tag's latest value and running statistics.
enum TagStateStore {
    /// Rows per statement: 10,000 tags' snapshots as one statement built ~10 MB of array text.
    static let rowsPerStatement = 1_000

    /// Upserts snapshots, `rowsPerStatement` per statement (arrays unnested server-side).
    static func upsert(_ snapshots: [TagSnapshot], on connection: PostgresConnection) throws {
        var start = 0
        while start < snapshots.count {
            let end = min(start + Self.rowsPerStatement, snapshots.count)
            try Self.upsertStatement(snapshots[start..<end], on: connection)
            start = end
        }
    }

    private static func upsertStatement(_ snapshots: ArraySlice<TagSnapshot>, on connection: PostgresConnection) throws {
        try connection.query(
            """
            INSERT INTO tag_state (tag, ts, value, quality, samples, ewma_mean, ewma_variance, updated_at)
            SELECT tag, to_timestamp(ms::double precision / 1000), value, quality, samples, mean, variance, now()
            FROM unnest($1::text[], $2::bigint[], $3::float8[], $4::text[], $5::bigint[], $6::float8[], $7::float8[])
                AS s(tag, ms, value, quality, samples, mean, variance)
            ON CONFLICT (tag) DO UPDATE
            SET ts = EXCLUDED.ts, value = EXCLUDED.value, quality = EXCLUDED.quality, samples = EXCLUDED.samples,
                ewma_mean = EXCLUDED.ewma_mean, ewma_variance = EXCLUDED.ewma_variance, updated_at = now()
            WHERE tag_state.ts <= EXCLUDED.ts
            """,
            [
                PostgresArray(snapshots.map(\.tag)), PostgresArray(snapshots.map(\.time)),
                PostgresArray(snapshots.map { Optional($0.value) }), PostgresArray(snapshots.map(\.quality.name)),
                PostgresArray(snapshots.map { Int64($0.samples) }), PostgresArray(snapshots.map { Optional($0.ewmaMean) }),
                PostgresArray(snapshots.map { Optional($0.ewmaVariance) }),
            ])
    }

    /// The newest `limit` snapshots (by sample time), newest first.
    static func load(on connection: PostgresConnection, limit: Int = .max) throws -> [TagSnapshot] {
        let rows = try connection.query(
            """
            SELECT tag, (extract(epoch FROM ts) * 1000)::bigint AS ts, value, quality, samples, ewma_mean, ewma_variance
            FROM tag_state ORDER BY ts DESC LIMIT $1
            """, [Int64(min(limit, Int(Int64.max)))])
        return try RowDecoder.decode(Stored.self, from: rows).map { row in
            TagSnapshot(
                tag: row.tag, time: row.ts, value: row.value ?? .nan, quality: SampleQuality(recorded: row.quality), samples: row.samples,
                ewmaMean: row.ewmaMean ?? .nan, ewmaVariance: row.ewmaVariance ?? .nan)
        }
    }

    /// A row of `tag_state`.
    private struct Stored: Decodable {
        let tag: String
        let ts: Int64
        let value: Double?
        let quality: String?
        let samples: Int
        let ewmaMean: Double?
        let ewmaVariance: Double?

        enum CodingKeys: String, CodingKey {
            case tag, ts, value, quality, samples, ewmaMean = "ewma_mean", ewmaVariance = "ewma_variance"
        }
    }
}

extension SampleQuality {
    /// The quality as `tag_state` stores it; anything else reads as good.
    fileprivate init(recorded text: String?) {
        switch text {
        case "bad": self = .bad
        case "uncertain": self = .uncertain
        default: self = .good
        }
    }
}
