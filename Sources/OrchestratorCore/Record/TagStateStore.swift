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

    /// Every stored snapshot.
    /// The newest `limit` snapshots (by sample time), newest first.
    static func load(on connection: PostgresConnection, limit: Int = .max) throws -> [TagSnapshot] {
        let rows = try connection.query(
            """
            SELECT tag, (extract(epoch FROM ts) * 1000)::bigint, value, quality, samples, ewma_mean, ewma_variance
            FROM tag_state ORDER BY ts DESC LIMIT $1
            """, [Int64(min(limit, Int(Int64.max)))])
        return rows.rows.compactMap { row in
            guard let tag = row[0], let ms = row[1].flatMap({ Int64($0) }), let samples = row[4].flatMap({ Int($0) }) else {
                return nil
            }
            let quality: SampleQuality =
                switch row[3] {
                case "bad": .bad
                case "uncertain": .uncertain
                default: .good
                }
            return TagSnapshot(
                tag: tag, time: ms, value: row[2].flatMap(Double.init) ?? .nan, quality: quality, samples: samples,
                ewmaMean: row[5].flatMap(Double.init) ?? .nan, ewmaVariance: row[6].flatMap(Double.init) ?? .nan)
        }
    }
}
