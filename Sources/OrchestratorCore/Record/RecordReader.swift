package import Foundation
package import LibPQ
package import Logging

/// Reads from the record, for everything that is not the writer: the start-up memories (tag state,
/// the decision side's memory, shelved alerts), the API's history, the operator's actions. All of it
/// runs on the ``DatabasePool``'s few connections and threads — never a connection per call, never
/// blocking libpq work on the cooperative pool.
package final class RecordReader: Sendable {
    package let pool: DatabasePool
    private let migrate: Bool
    private let logger: Logger

    package init(pool: DatabasePool, migrate: Bool = true, logger: Logger) {
        self.pool = pool
        self.migrate = migrate
        self.logger = logger
    }

    /// The newest `limit` tag states, to warm the detectors up; nil if the database is away. Brings a
    /// new database's schema up to date first (the shelves read after it need it).
    package func tagState(limit: Int = .max) async -> [TagSnapshot]? {
        let migrate = self.migrate
        return await self.startUpRead("tag_state not loaded; detectors start cold") { connection in
            if migrate { try Migrations.apply(on: connection) }
            return try TagStateStore.load(on: connection, limit: limit)
        }
    }

    /// The episodes still `raised` in the record that were raised before `before` (epoch ms: by a
    /// previous run), at most `limit`; nil if the database is away.
    package func openEpisodes(raisedBefore before: Int64, limit: Int = 100_000) async -> [AlertEpisode]? {
        await self.startUpRead("alert episodes left open by the previous run not loaded; they stay open") { connection in
            let rows = try connection.query(
                """
                SELECT \(AlertJournalStore.episodeColumns) FROM alerts
                WHERE state = 'raised' AND raised_at < to_timestamp($1 / 1000.0) ORDER BY raised_at LIMIT $2
                """, [before, limit])
            return try RowDecoder.decode(AlertJournalStore.Episode.self, from: rows).compactMap(\.episode)
        }
    }

    /// The decision side's memory (learned outcomes, pending invocations, last invocations, schedules
    /// fired); nil if the database is away. Read it once the spool has drained, or the previous run's
    /// last records are not seen.
    package func decisionMemory() async -> DecisionMemory? {
        let migrate = self.migrate
        return await self.startUpRead("decision memory not loaded; outcomes start from their priors") { connection in
            if migrate { try Migrations.apply(on: connection) }
            return try InvocationStore.load(on: connection)
        }
    }

    /// Writes the invocations another instance published (heard on MQTT) that the record lacks,
    /// with their decisions — the mirror's when it was heard, else one made from the invocation —
    /// under this instance's lease; rows the record has are left as they are. Returns how many were
    /// written; nil if the database is away.
    func recordMissing(_ invocations: [InvocationRecord], decisions: [UUID: DecisionRecord], as writer: Record.Writer) async -> Int? {
        guard !invocations.isEmpty else { return 0 }
        return await self.startUpRead("invocations another instance published are not in the record") { connection in
            let ids = invocations.map { $0.invocationID.uuidString.lowercased() }
            let present = Set(
                try connection.query("SELECT invocation_id::text FROM invocations WHERE invocation_id = ANY($1::uuid[])", [PostgresArray(ids)])
                    .rows.compactMap { $0.first ?? nil })
            let missing = invocations.filter { !present.contains($0.invocationID.uuidString.lowercased()) }
            guard !missing.isEmpty else { return 0 }
            var records: [Record] = []
            for invocation in missing {
                var trigger = JSONWriter()
                trigger.field("kind", string: invocation.triggerKind)
                records.append(
                    .decision(
                        decisions[invocation.decisionID]
                            ?? DecisionRecord(
                                decisionID: invocation.decisionID, ts: invocation.publishedAt ?? 0, module: invocation.module, action: "invoke",
                                source: "rules", trigger: String(decoding: trigger.finish(), as: UTF8.self),
                                reasons: #"[{"step":"takeover","verdict":"pass","detail":"heard on MQTT: published by the previous active instance, whose record did not reach the database"}]"#,
                                confidence: nil, latencyMicroseconds: nil)))
                records.append(.invocation(invocation))
            }
            try Record.write(records, on: connection, as: writer)
            return missing.count
        }
    }

    /// Which of these alerts some recorded decision invoked a module for (`decisions.trigger`'s
    /// `alert_id`); nil if the database is away.
    func invokedAlerts(_ ids: [UUID]) async -> Set<UUID>? {
        guard !ids.isEmpty else { return [] }
        return await self.startUpRead("decisions of open alarms not read; they are decided on again") { connection in
            let rows = try connection.query(
                "SELECT DISTINCT trigger->>'alert_id' FROM decisions WHERE action = 'invoke' AND trigger->>'alert_id' = ANY($1::text[])",
                [PostgresArray(ids.map { $0.uuidString.lowercased() })])
            return Set(rows.rows.compactMap { ($0.first ?? nil).flatMap(UUID.init(uuidString:)) })
        }
    }

    /// A read at start that may fail (the database away): logged with `consequence`, nil.
    private func startUpRead<T: Sendable>(_ consequence: String, _ body: @escaping @Sendable (PostgresConnection) throws -> T) async -> T? {
        do {
            return try await self.perform(body)
        } catch {
            self.logger.warning("\(consequence)", metadata: ["error": "\(error)"])
            return nil
        }
    }
}

extension RecordReader {
    /// Why a read or an action on the record did not happen.
    package enum Unavailable: Error, Equatable {
        /// The pool's queue was full.
        case busy
    }

    /// Runs blocking libpq work on a pool connection; throws ``Unavailable/busy`` when the queue is
    /// full, and the database's error when it is away.
    package func perform<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) throws -> T) async throws -> T {
        guard let result = await self.pool.run(body) else { throw Unavailable.busy }
        return try result.get()
    }

    /// The newest alerts (`GET /alerts`), raised ones only unless `all`.
    package func alerts(
        state: AlertListState = .active, limit: Int, severities: [AlertSeverity] = [], unit: String? = nil
    ) async throws -> [AlertListing] {
        try await self.perform { try AlertJournalStore.list(state: state, limit: limit, severities: severities, unit: unit, on: $0) }
    }

    /// One page of decisions, with the counts and module statistics of its time range if asked.
    package func decisions(
        _ query: History.DecisionQuery, summary: Bool
    ) async throws -> (page: History.DecisionPage, counts: [History.Count], modules: [History.ModuleStats]) {
        try await self.perform { connection in
            let page = try History.decisions(query, on: connection)
            guard summary else { return (page, [], []) }
            return (
                page, try History.counts(from: query.from, to: query.to, on: connection),
                try History.moduleStats(from: query.from, to: query.to, on: connection)
            )
        }
    }

    /// What the concierge tells the model: the raised alerts, newest first, and the earlier
    /// questions and answers of a session.
    package func conciergeContext(session: UUID?) async throws -> (alerts: [AlertListing], previous: [(question: String, answer: String)]) {
        try await self.perform { connection in
            let alerts = try AlertJournalStore.list(state: .active, limit: 20, on: connection)
            guard let session else { return (alerts, []) }
            let history = try connection.query(
                "SELECT question, answer FROM llm_exchanges WHERE session_id = $1 AND answer IS NOT NULL ORDER BY ts DESC LIMIT 5",
                [session.uuidString.lowercased()])
            return (alerts, history.rows.reversed().map { ($0[0] ?? "", $0[1] ?? "") })
        }
    }
}

/// Acknowledgements and shelves, kept in `alerts`.
extension RecordReader: AlertJournal {
    package func acknowledge(alert id: UUID, by: String?) async throws -> AlertDesk.Outcome {
        try await self.perform { try AlertJournalStore.acknowledge(id, by: by, on: $0) }
    }

    package func shelve(alert id: UUID, for duration: Duration, by: String?, reason: String?) async throws -> (episode: AlertEpisode, until: Int64)? {
        try await self.perform { try AlertJournalStore.shelve(id, for: duration, by: by, reason: reason, on: $0) }
    }

    package func unshelve(alert id: UUID, by: String?, reason: String?) async throws -> AlertDesk.Outcome {
        try await self.perform { try AlertJournalStore.unshelve(id, by: by, reason: reason, on: $0) }
    }

    package func setOutOfService(tag: String, _ outOfService: Bool, by: String?, reason: String?) async throws -> Bool {
        try await self.perform { try AlertJournalStore.setOutOfService(tag: tag, outOfService, by: by, reason: reason, on: $0) }
    }

    package func outOfServiceTags() async throws -> [OutOfServiceTag] {
        try await self.perform { try AlertJournalStore.outOfService(on: $0) }
    }

    package func shelvedAlerts() async throws -> [ShelvedAlert] {
        try await self.perform { try AlertJournalStore.shelved(on: $0) }
    }
}
