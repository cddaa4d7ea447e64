import Foundation
import LibPQ
import Synchronization
import Testing

@testable import OrchestratorCore

/// The record against a real PostgreSQL when what it is given, or the database itself, misbehaves
/// (issue 16): nothing refused for one row's data is lost, and nothing the whole database refuses
/// empties the spool.
@Suite(.timeLimit(.minutes(2)))
struct RecordHardeningTests {
    func settings() async throws -> DatabaseSettings {
        var settings = DatabaseSettings()
        settings.url = try await TestServices.freshDatabase()
        settings.flushInterval = .milliseconds(10)
        settings.spoolDirectory = FileManager.default.temporaryDirectory.appendingPathComponent("dang-spool-\(UUID().uuidString)").path
        return settings
    }

    func decision(trigger: String = "{}", ts: Int64 = 1_790_000_000_000) -> DecisionRecord {
        DecisionRecord(
            decisionID: UUID(), ts: ts, module: "etl", action: "invoke", source: "api", trigger: trigger, reasons: "[]",
            confidence: nil, latencyMicroseconds: nil)
    }

    @Test func `NUL in a manual request, its params and a module's result land in jsonb; nothing stays pending`() async throws {
        let settings = try await self.settings()
        let writer = RecordWriter(settings: settings, logger: testLogger)
        let running = Task { await writer.run() }
        let decision = self.decision(trigger: #"{"kind":"manual","by":"op\u0000erator","scope":"\u0000"}"#)
        let invocation = UUID()
        writer.deliver(decision: decision)
        writer.deliver(record: .invocation(InvocationRecord(
            invocationID: invocation, decisionID: decision.decisionID, module: "etl", params: #"{"note":"a\u0000b"}"#,
            publishedAt: 1_790_000_000_000, completedAt: nil, status: "pending", attempts: 1, result: nil, triggerKind: "manual",
            scopeKey: "")))
        writer.deliver(record: .invocation(InvocationRecord(
            invocationID: invocation, decisionID: decision.decisionID, module: "etl", params: #"{"note":"a\u0000b"}"#,
            publishedAt: 1_790_000_000_000, completedAt: 1_790_000_001_000, status: "ok", attempts: 1,
            result: #"{"rows":3,"log":"\u0000\ud800"}"#, triggerKind: "manual", scopeKey: "")))
        try await eventually("written") { writer.counters.written == 3 }
        writer.stop()
        await running.value
        #expect(writer.counters.rejectedRecords == 0)
        let connection = try PostgresConnection(conninfo: settings.url)
        let rows = try connection.query("SELECT trigger->>'by' FROM decisions WHERE decision_id = $1", [decision.decisionID.uuidString.lowercased()])
        #expect(rows.rows == [[#"op\u0000erator"#]])
        let invocations = try connection.query(
            "SELECT status, params->>'note', result->>'log', result->>'rows' FROM invocations WHERE invocation_id = $1",
            [invocation.uuidString.lowercased()])
        #expect(invocations.rows.first?[0] == "ok")
        #expect(invocations.rows.first?[1] == #"a\u0000b"#)
        #expect(invocations.rows.first?[2] == #"\u0000\ud800"#)
        #expect(invocations.rows.first?[3] == "3")
    }

    @Test func `a row refused for its own data is set aside in the dead-letter file, counted and alerted; its batch lands`() async throws {
        let settings = try await self.settings()
        let writer = RecordWriter(settings: settings, logger: testLogger)
        let sink = CollectingAlerts()
        let systemAlerts = SystemAlerts(sinks: [writer, sink])
        systemAlerts.follow(writer, spoolDirectory: settings.spoolDirectory)
        defer { withExtendedLifetime(systemAlerts) {} }
        let running = Task { await writer.run() }
        let good = (0..<20).map { _ in self.decision() }
        // A time PostgreSQL cannot store (22008): refused for this row alone.
        let bad = self.decision(ts: Int64.max / 2)
        for (index, decision) in good.enumerated() {
            writer.deliver(decision: decision)
            if index == 10 { writer.deliver(decision: bad) }
        }
        try await eventually("written") { writer.counters.written == 21 && writer.counters.rejectedRecords == 1 }  // and its alert
        try await eventually("alerted") { sink.events.withLock { $0 }.contains { $0.kind == .system && $0.tag == "orchestrator/record" } }
        writer.stop()
        await running.value
        let file = URL(fileURLWithPath: settings.spoolDirectory).appendingPathComponent("dead-letter.jsonl")
        let lines = try String(contentsOf: file, encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 1)
        let line = try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any]
        #expect(line?["sqlstate"] as? String == "22008")
        #expect(line?["record_id"] as? String == bad.decisionID.uuidString.lowercased())
        #expect((line?["record"] as? [String: Any])?["decision_id"] as? String == bad.decisionID.uuidString.lowercased())
    }

    @Test func `a database-wide error (missing table, read-only standby) keeps the spool and backs off; the rows land when it is fixed`() async throws {
        let settings = try await self.settings()
        let admin = try PostgresConnection(conninfo: settings.url)
        try Migrations.apply(on: admin)
        // Like a revoked grant or a half-restored database: the table is not there (42P01).
        try admin.query("ALTER TABLE decisions RENAME TO decisions_away")
        let writer = RecordWriter(settings: settings, migrate: false, logger: testLogger)
        let running = Task { await writer.run() }
        let decisions = (0..<50).map { _ in self.decision() }
        for decision in decisions { writer.deliver(decision: decision) }
        try await eventually("spooled and tried") { writer.counters.spooled == 50 && writer.counters.failedBatches >= 1 }
        try await Task.sleep(for: .milliseconds(300))
        #expect(writer.counters.rejectedRecords == 0)
        #expect(writer.counters.written == 0)
        #expect(writer.counters.spooledBytes > 0)
        // A fail-over to a read-only standby (25006) is no reason to drop rows either. Read-only
        // first, then the table back (by this older, writable session): the writer, retrying with
        // backoff, must never find the table there and its session writable.
        try admin.query("ALTER DATABASE \(try Self.databaseName(settings.url)) SET default_transaction_read_only = on")
        try admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
        try admin.query("ALTER TABLE decisions_away RENAME TO decisions")
        try await Task.sleep(for: .seconds(2))
        #expect(writer.counters.rejectedRecords == 0)
        #expect(writer.counters.written == 0)
        try admin.query("ALTER DATABASE \(try Self.databaseName(settings.url)) SET default_transaction_read_only = off")
        try admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
        try await eventually("written", timeout: .seconds(60)) { writer.counters.written == 50 && writer.counters.spooledBytes == 0 }
        writer.stop()
        await running.value
        #expect(try admin.query("SELECT count(*) FROM decisions").rows == [["50"]])
        #expect(writer.counters.rejectedRecords == 0)
    }

    @Test func `an idle writer notices a database that went away within seconds, and its return`() async throws {
        let settings = try await self.settings()
        let admin = try PostgresConnection(conninfo: settings.url)
        try Migrations.apply(on: admin)
        let writer = RecordWriter(settings: settings, migrate: false, logger: testLogger)
        let running = Task { await writer.run() }
        try await eventually("connected") { writer.counters.connected }
        // Nothing is written from here on: only the idle probe can notice.
        // From the server's own database: a database cannot refuse connections to itself.
        let name = try Self.databaseName(settings.url)
        let server = try PostgresConnection(conninfo: TestServices.shared.databaseURL)
        try server.query("ALTER DATABASE \(name) ALLOW_CONNECTIONS false")
        try server.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", [name])
        try await eventually("disconnect noticed while idle", timeout: .seconds(5)) { !writer.counters.connected }
        try server.query("ALTER DATABASE \(name) ALLOW_CONNECTIONS true")
        try await eventually("connected again", timeout: .seconds(20)) { writer.counters.connected }
        writer.stop()
        await running.value
    }

    static func databaseName(_ url: String) throws -> String {
        let components = try #require(URLComponents(string: url))
        return String(components.path.dropFirst())
    }
}

final class CollectingAlerts: AlertSink, Sendable {
    let events = Mutex<[AlertEvent]>([])
    func deliver(_ event: AlertEvent) { self.events.withLock { $0.append(event) } }
}

@Suite(.timeLimit(.minutes(1)))
struct TagStateBoundsTests {
    @Test func `tag_state seeds newest first up to max_tags, and has retention`() async throws {
        let connection = try await PostgresConnection(conninfo: TestServices.freshDatabase())
        try Migrations.apply(on: connection)
        let snapshots = (0..<10).map { i in
            TagSnapshot(tag: "junk/\(i)", time: 1_790_000_000_000 + Int64(i) * 1000, value: 1, quality: .good, samples: 5, ewmaMean: 1, ewmaVariance: 0.1)
        }
        try TagStateStore.upsert(snapshots, on: connection)
        #expect(try TagStateStore.load(on: connection, limit: 3).map(\.tag) == ["junk/9", "junk/8", "junk/7"])
        // Rows not updated for longer than the rule are deleted; fresh ones stay.
        try connection.query("UPDATE tag_state SET updated_at = now() - interval '40 days' WHERE tag IN ('junk/0', 'junk/1')")
        let deleted = try Retention.run([Retention.Rule(table: "tag_state", keep: .seconds(30 * 86400))], on: connection)
        #expect(deleted["tag_state"] == 2)
        #expect(try TagStateStore.load(on: connection).count == 8)
        #expect(DatabaseSettings().retention.contains { $0.table == "tag_state" })
    }
}
