package import Foundation
package import LibPQ

/// Which episodes `GET /alerts` lists (ISA-18.2 states): `active` (raised), `unacknowledged`
/// and `acknowledged` (raised ones), `shelved` (a shelf standing now), `suppressed` (raised,
/// by design or out of service), `cleared`, or `all`.
package enum AlertListState: String, Sendable, CaseIterable {
    case active, unacknowledged, acknowledged, shelved, suppressed, cleared, all
}

/// The operator's side of the `alerts` table: acknowledgements and shelving (ISA-18.2), the shelves
/// to restore at start, and the alerts listed by the API and the concierge.
enum AlertJournalStore {
    struct Shelved: Decodable {
        let tag: String
        let kind: String
        let until: Int64
    }

    /// An episode's columns, as ``Episode`` decodes them.
    static let episodeColumns =
        "alert_id::text AS alert_id, tag, topic, kind, severity, (extract(epoch FROM raised_at) * 1000)::bigint AS raised_at"

    /// An episode's row, with what a statement adds to it (`until`, `ended`).
    struct Episode: Decodable {
        let alert_id: String
        let tag: String
        let topic: String
        let kind: String
        let severity: String
        let raised_at: Int64
        let until: Int64?
        let ended: Int64?

        var episode: AlertEpisode? {
            guard let id = UUID(uuidString: self.alert_id), let kind = AlertKind(rawValue: self.kind),
                let severity = AlertSeverity(rawValue: self.severity)
            else { return nil }
            return AlertEpisode(alertID: id, tag: self.tag, topic: self.topic, kind: kind, severity: severity, raisedAt: self.raised_at)
        }
    }

    /// `UPDATE … acked_at = now()` once; `.already` when it was, `.unknown` when there is no such alert.
    static func acknowledge(_ id: UUID, by: String?, on connection: PostgresConnection) throws -> AlertDesk.Outcome {
        let rows = try connection.query(
            "UPDATE alerts SET acked_at = now(), acked_by = $2 WHERE alert_id = $1 AND acked_at IS NULL RETURNING \(Self.episodeColumns)",
            [id.uuidString.lowercased(), by])
        if let episode = try RowDecoder.decode(Episode.self, from: rows).first?.episode { return .done(episode) }
        let exists = try connection.query("SELECT 1 FROM alerts WHERE alert_id = $1", [id.uuidString.lowercased()])
        return exists.rows.isEmpty ? .unknown : .already
    }

    /// Shelves the alert's tag and kind until now + `duration`; nil for an unknown alert.
    static func shelve(
        _ id: UUID, for duration: Duration, by: String?, reason: String?, on connection: PostgresConnection
    ) throws -> (episode: AlertEpisode, until: Int64)? {
        let rows = try connection.query(
            """
            UPDATE alerts SET shelved_until = now() + make_interval(secs => $2), shelved_by = $3, shelve_reason = $4,
                              unshelved_at = NULL, unshelved_by = NULL, unshelve_reason = NULL
            WHERE alert_id = $1
            RETURNING \(Self.episodeColumns), (extract(epoch FROM shelved_until) * 1000)::bigint AS until
            """, [id.uuidString.lowercased(), Double(duration.milliseconds) / 1000, by, reason])
        guard let row = try RowDecoder.decode(Episode.self, from: rows).first, let episode = row.episode, let until = row.until else { return nil }
        return (episode, until)
    }

    /// Ends every shelf of the alert's tag and kind now (`shelved_until` = now, with
    /// `unshelved_at`, `unshelved_by`, `unshelve_reason`): `.already` when none was standing.
    static func unshelve(_ id: UUID, by: String?, reason: String?, on connection: PostgresConnection) throws -> AlertDesk.Outcome {
        let rows = try connection.query(
            """
            WITH target AS (SELECT tag, kind FROM alerts WHERE alert_id = $1),
                 ended AS (
                   UPDATE alerts a SET shelved_until = now(), unshelved_at = now(), unshelved_by = $2, unshelve_reason = $3
                   FROM target t WHERE a.tag = t.tag AND a.kind = t.kind AND a.shelved_until > now()
                   RETURNING a.alert_id)
            SELECT \(Self.episodeColumns), (SELECT count(*) FROM ended) AS ended FROM alerts WHERE alert_id = $1
            """, [id.uuidString.lowercased(), by, reason])
        guard let row = try RowDecoder.decode(Episode.self, from: rows).first, let episode = row.episode else { return .unknown }
        return (row.ended ?? 0) > 0 ? .done(episode) : .already
    }

    /// `out_of_service`: a row while the tag is out; false when nothing changed.
    static func setOutOfService(tag: String, _ outOfService: Bool, by: String?, reason: String?, on connection: PostgresConnection) throws -> Bool {
        let rows =
            outOfService
            ? try connection.query(
                "INSERT INTO out_of_service (tag, since, by_whom, reason) VALUES ($1, now(), $2, $3) ON CONFLICT (tag) DO NOTHING RETURNING tag",
                [tag, by, reason])
            : try connection.query("DELETE FROM out_of_service WHERE tag = $1 RETURNING tag", [tag])
        return !rows.rows.isEmpty
    }

    struct OutOfServiceRow: Decodable {
        let tag: String
        let since: Int64
        let by_whom: String?
        let reason: String?
    }

    static func outOfService(on connection: PostgresConnection) throws -> [OutOfServiceTag] {
        let rows = try connection.query(
            "SELECT tag, (extract(epoch FROM since) * 1000)::bigint AS since, by_whom, reason FROM out_of_service ORDER BY tag LIMIT 100000")
        return try RowDecoder.decode(OutOfServiceRow.self, from: rows).map { OutOfServiceTag(tag: $0.tag, since: $0.since, by: $0.by_whom, reason: $0.reason) }
    }

    /// What is shelved now (`alerts.shelved_until` in the future).
    static func shelved(on connection: PostgresConnection) throws -> [ShelvedAlert] {
        let rows = try connection.query(
            "SELECT tag, kind, (extract(epoch FROM shelved_until) * 1000)::bigint AS until FROM alerts WHERE shelved_until > now()")
        return try RowDecoder.decode(Shelved.self, from: rows).compactMap(ShelvedAlert.init)
    }

    /// Episodes newest first, in `state`; of the given severities and of the unit (its tags,
    /// `unit/…`) when they are given.
    static func list(
        state: AlertListState = .active, limit: Int, severities: [AlertSeverity] = [], unit: String? = nil, on connection: PostgresConnection
    ) throws -> [AlertListing] {
        let rows = try connection.query(
            """
            SELECT alert_id::text AS alert_id, tag, topic, kind, severity, state, (extract(epoch FROM ts) * 1000)::bigint AS ts,
                   (extract(epoch FROM raised_at) * 1000)::bigint AS raised_at, (extract(epoch FROM cleared_at) * 1000)::bigint AS cleared_at,
                   (extract(epoch FROM acked_at) * 1000)::bigint AS acked_at, acked_by,
                   (extract(epoch FROM shelved_until) * 1000)::bigint AS shelved_until, shelved_by, shelve_reason, suppressed, value, score, message
            FROM alerts WHERE CASE $1
                WHEN 'all' THEN true
                WHEN 'cleared' THEN state = 'cleared'
                WHEN 'unacknowledged' THEN state = 'raised' AND acked_at IS NULL
                WHEN 'acknowledged' THEN state = 'raised' AND acked_at IS NOT NULL
                WHEN 'shelved' THEN shelved_until > now()
                WHEN 'suppressed' THEN state = 'raised' AND suppressed IS NOT NULL
                ELSE state = 'raised' END
              AND ($3::text IS NULL OR severity = ANY (string_to_array($3, ',')))
              AND ($4::text IS NULL OR starts_with(tag, $4 || '/'))
            ORDER BY alerts.raised_at DESC LIMIT $2
            """,
            [state.rawValue, limit, severities.isEmpty ? nil : severities.map(\.rawValue).joined(separator: ","), unit])
        return try RowDecoder.decode(AlertListing.self, from: rows)
    }
}

extension ShelvedAlert {
    fileprivate init?(_ row: AlertJournalStore.Shelved) {
        guard let kind = AlertKind(rawValue: row.kind) else { return nil }
        self.init(tag: row.tag, kind: kind, until: row.until)
    }
}

/// An alert episode as `GET /alerts` lists it (docs/api.md): its row of `alerts`, times in epoch ms;
/// what is unknown or not finite is `null`.
package struct AlertListing: Codable, Sendable, Equatable {
    package let alertID: String
    package let tag: String
    package let topic: String
    package let kind: String
    package let severity: String
    package let state: String
    package let ts: Int64
    package let raisedAt: Int64
    package let clearedAt: Int64?
    package let ackedAt: Int64?
    package let ackedBy: String?
    package let shelvedUntil: Int64?
    package let shelvedBy: String?
    package let shelveReason: String?
    /// `by_design` or `out_of_service` when the episode was not annunciated.
    package let suppressed: String?
    package let value: Double?
    package let score: Double?
    package let message: String

    enum CodingKeys: String, CodingKey {
        case alertID = "alert_id", tag, topic, kind, severity, state, ts
        case raisedAt = "raised_at", clearedAt = "cleared_at", ackedAt = "acked_at", ackedBy = "acked_by"
        case shelvedUntil = "shelved_until", shelvedBy = "shelved_by", shelveReason = "shelve_reason", suppressed, value, score, message
    }

    package func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(self.alertID, forKey: .alertID)
        try c.encode(self.tag, forKey: .tag)
        try c.encode(self.topic, forKey: .topic)
        try c.encode(self.kind, forKey: .kind)
        try c.encode(self.severity, forKey: .severity)
        try c.encode(self.state, forKey: .state)
        try c.encode(self.ts, forKey: .ts)
        try c.encode(self.raisedAt, forKey: .raisedAt)
        try c.encode(self.clearedAt, forKey: .clearedAt)
        try c.encode(self.ackedAt, forKey: .ackedAt)
        try c.encode(self.ackedBy, forKey: .ackedBy)
        try c.encode(self.shelvedUntil, forKey: .shelvedUntil)
        try c.encode(self.shelvedBy, forKey: .shelvedBy)
        try c.encode(self.shelveReason, forKey: .shelveReason)
        try c.encode(self.suppressed, forKey: .suppressed)
        try c.encode(self.value.flatMap { $0.isFinite ? $0 : nil }, forKey: .value)
        try c.encode(self.score.flatMap { $0.isFinite ? $0 : nil }, forKey: .score)
        try c.encode(self.message, forKey: .message)
    }
}
