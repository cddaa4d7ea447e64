import Foundation
import LibPQ
import Testing

@testable import DangTools
@testable import OrchestratorCore

@Suite(.timeLimit(.minutes(1)))
struct PostgresTests {
    @Test func `migrations apply once and are idempotent`() async throws {
        let connection = try await PostgresConnection(conninfo: TestServices.freshDatabase())
        let first = try Migrations.apply(on: connection)
        #expect(first.applied == Migrations.all.map(\.version))
        let second = try Migrations.apply(on: connection)
        #expect(second.applied.isEmpty)
        #expect(second.current == Migrations.latestVersion)
        let tables = try connection.query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1")
        #expect(tables.rows.map { $0[0]! } == [
            "alerts", "approvals", "decisions", "invocations", "leases", "llm_exchanges", "out_of_service", "outcomes", "schema_migrations", "sessions",
            "tag_state",
        ])
    }

    @Test func `a schema newer than this build is refused`() async throws {
        let connection = try await PostgresConnection(conninfo: TestServices.freshDatabase())
        try Migrations.apply(on: connection)
        try connection.query("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", [Migrations.latestVersion + 1, "future"])
        #expect(throws: MigrationError.self) { try Migrations.apply(on: connection) }
    }

    @Test func `parameters are bound, never spliced into SQL`() async throws {
        let connection = try await PostgresConnection(conninfo: TestServices.freshDatabase())
        let hostile = "x'); DROP TABLE t; --\u{1F600}"
        try connection.query("CREATE TABLE t (s text, d double precision, n bigint)")
        try connection.query("INSERT INTO t VALUES ($1, $2, $3)", [hostile, 1.5, nil])
        let rows = try connection.query("SELECT s, d, n FROM t")
        #expect(rows.rows == [[hostile, "1.5", nil]])
        // NUL cannot cross libpq's C strings: it arrives as U+FFFD instead of cutting the value short.
        try connection.query("INSERT INTO t VALUES ($1, $2, $3)", ["a\u{0}b", 2.0, 7])
        #expect(try connection.query("SELECT s FROM t WHERE n = 7").rows == [["a\u{FFFD}b"]])
    }

    @Test func `every connection speaks UTF-8, whatever the connection string or environment asks`() async throws {
        let url = try await TestServices.freshDatabase()
        let separator = url.contains("?") ? "&" : "?"
        let connection = try PostgresConnection(conninfo: url + separator + "client_encoding=LATIN1")
        #expect(try connection.query("SHOW client_encoding").rows == [["UTF8"]])
        try connection.query("CREATE TABLE t (s text)")
        try connection.query("INSERT INTO t VALUES ($1)", ["Ü°C \u{1F525}"])
        #expect(try connection.query("SELECT s FROM t").rows == [["Ü°C \u{1F525}"]])
    }

    @Test func `a failed transaction rolls back`() async throws {
        let connection = try await PostgresConnection(conninfo: TestServices.freshDatabase())
        try connection.query("CREATE TABLE t (n int PRIMARY KEY)")
        #expect(throws: PostgresError.self) {
            try connection.withTransaction { connection in
                try connection.query("INSERT INTO t VALUES ($1)", [1])
                try connection.query("INSERT INTO t VALUES ($1)", [1])
            }
        }
        #expect(try connection.query("SELECT count(*) FROM t").rows == [["0"]])
        let error = #expect(throws: PostgresError.self) {
            try connection.query("INSERT INTO t VALUES ($1)", ["not a number"])
        }
        #expect(error?.sqlState == "22P02")
        #expect(error?.isTransient == false)
    }

    @Test(arguments: [
        "postgres://dang:hunter2@127.0.0.1:1/none?connect_timeout=2",
        "postgres://dang:hunter2@[::1/db",  // libpq quotes a malformed URI in its error
        "host=127.0.0.1 port=1 password=hunter2 connect_timeout=2 bogus=1",
    ])
    func `connection errors do not echo the password`(conninfo: String) {
        let error = #expect(throws: PostgresError.self) { try PostgresConnection(conninfo: conninfo) }
        #expect(error?.code == .connectionFailed)
        #expect(error?.description.contains("hunter2") == false)
        #expect(error?.description.isEmpty == false)
    }
}

@Suite(.timeLimit(.minutes(1)))
struct SpoolRecoveryTests {
    func events(_ count: Int) -> [AlertEvent] {
        (0..<count).flatMap { i -> [AlertEvent] in
            let id = UUID()
            let raised = AlertEvent(
                alertID: id, state: .raised, severity: .warning, kind: .anomaly, tag: "t\(i % 50)'); DROP TABLE alerts; --",
                topic: "plant/x", timestamp: Int64(i) * 1000, raisedAt: Int64(i) * 1000, clearedAt: nil, value: Double(i),
                score: 0.9, message: "m\(i)")
            let cleared = AlertEvent(
                alertID: id, state: .cleared, severity: .warning, kind: .anomaly, tag: raised.tag, topic: "plant/x",
                timestamp: Int64(i) * 1000 + 500, raisedAt: Int64(i) * 1000, clearedAt: Int64(i) * 1000 + 500,
                value: Double(i), score: 0.1, message: "c\(i)")
            return [raised, cleared]
        }
    }

    @Test func `records written while the database is away are spooled, survive a restart, and land exactly once`() async throws {
        let name = "spool_\(UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: ""))"
        var components = try #require(URLComponents(string: TestServices.shared.databaseURL))
        components.path = "/\(name)"
        var settings = DatabaseSettings()
        settings.url = components.string!
        settings.flushInterval = .milliseconds(10)
        settings.spoolDirectory = FileManager.default.temporaryDirectory.appendingPathComponent("dang-spool-\(UUID().uuidString)").path
        let events = self.events(5000)  // 10,000 records: 5,000 episodes raised and cleared

        let decisions = (0..<1000).map { i in
            DecisionRecord(
                decisionID: UUID(), ts: Int64(i) * 1000, module: i % 2 == 0 ? "forecasting" : nil, action: "invoke",
                source: "rules", trigger: #"{"kind":"equipment","tag":"t\#(i)\"'"}"#, reasons: "[]",
                confidence: 0.9, latencyMicroseconds: 150)
        }
        // 1. The database does not exist yet: everything goes to the spool; the writer stops.
        let first = RecordWriter(settings: settings, logger: testLogger)
        let running = Task { await first.run() }
        for (index, event) in events.enumerated() {
            first.deliver(event)
            if index % 10 == 0 { first.deliver(decision: decisions[index / 10]) }
        }
        try await eventually("all spooled") { first.counters.spooled == events.count + decisions.count }
        first.stop()
        await running.value
        #expect(first.counters.written == 0)
        #expect(first.counters.dropped == 0)

        // 2. The database returns; a new writer (a restarted orchestrator) replays the spool.
        try PostgresConnection(conninfo: TestServices.shared.databaseURL).execute(script: "CREATE DATABASE \(name)")
        let second = RecordWriter(settings: settings, logger: testLogger)
        let replaying = Task { await second.run() }
        let total = events.count + decisions.count
        try await eventually("spool replayed", timeout: .seconds(30)) { second.counters.written == total && second.counters.spooledBytes == 0 }
        // Replaying the same records again (a crash before the offset was saved) changes nothing.
        for event in events.prefix(100) { second.deliver(event) }
        // A record whose JSON is not JSON lands all the same, its text kept as {"raw": …}.
        second.deliver(
            decision: DecisionRecord(
                decisionID: UUID(), ts: 0, module: nil, action: "skip", source: "rules", trigger: "{not json", reasons: "[]",
                confidence: nil, latencyMicroseconds: nil))
        second.deliver(decision: DecisionRecord(
            decisionID: UUID(), ts: 0, module: nil, action: "defer", source: "api", trigger: "{}", reasons: "[]",
            confidence: nil, latencyMicroseconds: nil))
        try await eventually("duplicates written") { second.counters.written == total + 102 && second.counters.rejectedRecords == 0 }
        second.stop()
        await replaying.value

        let connection = try PostgresConnection(conninfo: settings.url)
        let rows = try connection.query("SELECT count(*), count(*) FILTER (WHERE state = 'cleared'), count(DISTINCT alert_id) FROM alerts")
        #expect(rows.rows == [["5000", "5000", "5000"]])
        let hostile = try connection.query("SELECT tag FROM alerts WHERE message = 'm7'")
        #expect(hostile.rows == [["t7'); DROP TABLE alerts; --"]])
        #expect(try connection.query("SELECT count(*), count(module) FROM decisions").rows == [["1002", "500"]])
        #expect(try connection.query("SELECT trigger->>'tag' FROM decisions WHERE ts = to_timestamp(7)").rows == [[#"t7"'"#]])
    }
}

@Suite(.timeLimit(.minutes(1)))
struct TagStateTests {
    @Test func `snapshots are upserted in one statement, newer wins, and a restart warms up from them`() async throws {
        let url = try await TestServices.freshDatabase()
        let connection = try PostgresConnection(conninfo: url)
        try Migrations.apply(on: connection)
        let hostile = "r1/\"quoted\"\\back{brace},comma'; DROP TABLE tag_state; -- Ü°C \u{1F525}\\\""
        let first = [
            TagSnapshot(tag: hostile, time: 2000, value: 1.5, quality: .good, samples: 10, ewmaMean: 1.4, ewmaVariance: 0.01),
            TagSnapshot(tag: "r1/a/u1/T", time: 2000, value: .nan, quality: .bad, samples: 3, ewmaMean: 5, ewmaVariance: 0.5),
        ]
        try TagStateStore.upsert(first, on: connection)
        // An older snapshot never overwrites a newer one; a newer one does.
        try TagStateStore.upsert(
            [TagSnapshot(tag: hostile, time: 1000, value: 9, quality: .good, samples: 99, ewmaMean: 9, ewmaVariance: 9)], on: connection)
        try TagStateStore.upsert(
            [TagSnapshot(tag: "r1/a/u1/T", time: 3000, value: 6, quality: .uncertain, samples: 4, ewmaMean: 5.5, ewmaVariance: 0.4)],
            on: connection)
        let loaded = try TagStateStore.load(on: connection).sorted { $0.tag < $1.tag }
        #expect(loaded.map(\.tag) == ["r1/a/u1/T", hostile].sorted())
        let byTag = Dictionary(uniqueKeysWithValues: loaded.map { ($0.tag, $0) })
        #expect(byTag[hostile]?.samples == 10)
        #expect(byTag[hostile]?.ewmaMean == 1.4)
        #expect(byTag["r1/a/u1/T"]?.time == 3000)
        #expect(byTag["r1/a/u1/T"]?.quality == .uncertain)

        var engine = DetectionEngine(settings: DetectionSettings(), topicMap: TopicMap())
        engine.seed(loaded)
        var conditions: [ConditionEvent] = []
        let found = engine.slot(for: hostile)
        let slot = try #require(found)
        engine.ingest(slot: slot, value: 1.45, quality: .good, sampleTime: 5000, topic: "t", now: 5000, into: &conditions)
        let snapshots = engine.snapshots()
        let snapshot = try #require(snapshots.first { $0.tag == hostile })
        #expect(snapshot.samples == 11)  // continued from the stored 10, not from zero
    }
}

@Suite(.timeLimit(.minutes(1)))
struct RetentionTests {
    @Test func `old finished rows are deleted in batches; open alerts and referenced decisions stay`() async throws {
        let connection = try await PostgresConnection(conninfo: TestServices.freshDatabase())
        try Migrations.apply(on: connection)
        try connection.execute(script: """
            INSERT INTO alerts (alert_id, tag, topic, kind, severity, state, ts, raised_at)
            SELECT gen_random_uuid(), 't', 'p', 'limit', 'warning', 'cleared', now() - interval '100 days', now() - interval '100 days'
            FROM generate_series(1, 2500);
            INSERT INTO alerts (alert_id, tag, topic, kind, severity, state, ts, raised_at)
            VALUES (gen_random_uuid(), 'open', 'p', 'limit', 'warning', 'raised', now() - interval '100 days', now() - interval '100 days'),
                   (gen_random_uuid(), 'recent', 'p', 'limit', 'warning', 'cleared', now(), now());
            INSERT INTO decisions (decision_id, ts, action, source) VALUES
                ('00000000-0000-0000-0000-000000000001', now() - interval '400 days', 'skip', 'rules'),
                ('00000000-0000-0000-0000-000000000002', now() - interval '400 days', 'invoke', 'rules');
            INSERT INTO invocations (invocation_id, decision_id, module, published_at, status)
            VALUES (gen_random_uuid(), '00000000-0000-0000-0000-000000000002', 'forecasting', now(), 'ok');
            """)
        let deleted = try Retention.run(
            [.init(table: "alerts", keep: .seconds(90 * 86400)), .init(table: "decisions", keep: .seconds(365 * 86400))],
            batch: 1000, on: connection)
        #expect(deleted["alerts"] == 2500)
        #expect(deleted["decisions"] == 1)
        #expect(try connection.query("SELECT tag FROM alerts ORDER BY tag").rows == [["open"], ["recent"]])
        #expect(try connection.query("SELECT count(*) FROM decisions").rows == [["1"]])
    }
}

@Suite(.timeLimit(.minutes(1)))
struct HistoryTests {
    @Test func `decisions filter, page by keyset without gaps or repeats, and aggregate`() async throws {
        let connection = try await PostgresConnection(conninfo: TestServices.freshDatabase())
        try Migrations.apply(on: connection)
        // 250 decisions one minute apart; every other one invoked; outcomes cycle ok/ok/error.
        try connection.execute(script: """
            INSERT INTO decisions (decision_id, ts, module, action, source, trigger, reasons, confidence, latency_us)
            SELECT md5(i::text)::uuid, timestamptz '2026-01-01' + i * interval '1 minute',
                   (ARRAY['forecasting','analysis','optimization'])[1 + i % 3],
                   CASE WHEN i % 2 = 0 THEN 'invoke' ELSE 'skip' END,
                   (ARRAY['rules','llm','api'])[1 + i % 3 % 2 + (i % 5 = 0)::int],
                   jsonb_build_object('kind', (ARRAY['equipment','market'])[1 + i % 2]), '[]', 0.9, 120
            FROM generate_series(0, 249) i;
            INSERT INTO invocations (invocation_id, decision_id, module, published_at, completed_at, status, attempts)
            SELECT md5('inv' || i)::uuid, md5(i::text)::uuid, (ARRAY['forecasting','analysis','optimization'])[1 + i % 3],
                   timestamptz '2026-01-01' + i * interval '1 minute',
                   timestamptz '2026-01-01' + i * interval '1 minute' + (i % 10 + 1) * interval '100 milliseconds',
                   (ARRAY['ok','ok','error'])[1 + (i / 2) % 3], 1
            FROM generate_series(0, 249, 2) i;
            """)
        var query = History.DecisionQuery()
        query.limit = 100
        var seen: [String] = []
        var pages = 0
        repeat {
            let page = try History.decisions(query, on: connection)
            seen += page.rows.map(\.decision.decisionID.uuidString)
            #expect(page.rows.map(\.decision.ts) == page.rows.map(\.decision.ts).sorted(by: >))
            query.after = page.next
            pages += 1
        } while query.after != nil
        #expect(pages == 3)
        #expect(seen.count == 250 && Set(seen).count == 250)

        var filtered = History.DecisionQuery()
        filtered.module = "analysis"
        filtered.triggerKind = "market"
        filtered.outcome = "none"
        let page = try History.decisions(filtered, on: connection)
        #expect(!page.rows.isEmpty)
        #expect(page.rows.allSatisfy { $0.decision.module == "analysis" && $0.decision.trigger.contains("market") && $0.outcome == "none" })
        var window = History.DecisionQuery()
        window.from = 1_767_225_600_000 + 10 * 60_000  // 2026-01-01 00:10
        window.to = 1_767_225_600_000 + 20 * 60_000
        #expect(try History.decisions(window, on: connection).rows.count == 10)

        let counts = try History.counts(from: nil, to: nil, on: connection)
        #expect(counts.reduce(0) { $0 + $1.count } == 250)
        let stats = try History.moduleStats(from: nil, to: nil, on: connection)
        #expect(stats.map(\.module) == ["analysis", "forecasting", "optimization"])
        #expect(stats.reduce(0) { $0 + $1.invocations } == 125)
        for module in stats { #expect((module.p50 ?? 0) >= 100 && (module.p99 ?? 0) <= 1000, "\(module)") }
        // 84 of the 125 invocations are ok (statuses cycle ok, ok, error).
        let ok = stats.reduce(0.0) { $0 + $1.successRate * Double($1.invocations) }
        #expect(abs(ok - 84) < 1e-9)
    }

    @Test func `a chained decision keeps its parent through the writer (and the spool's format) to the listing`() async throws {
        let connection = try await PostgresConnection(conninfo: TestServices.freshDatabase())
        try Migrations.apply(on: connection)
        let parent = DecisionRecord(
            decisionID: UUID(), ts: 1_790_000_000_000, module: "forecasting", action: "invoke", source: "rules", trigger: #"{"kind":"equipment"}"#,
            reasons: "[]", confidence: 0.9, latencyMicroseconds: 10)
        let child = DecisionRecord(
            decisionID: UUID(), ts: 1_790_000_001_000, module: "optimization", action: "invoke", source: "rules",
            trigger: #"{"kind":"chained","depth":1}"#, reasons: "[]", confidence: 0.8, latencyMicroseconds: 10, parentDecisionID: parent.decisionID)
        // Through the spool's record format, as a batch replayed after an outage would be.
        let replayed = try #require(Record(payload: Record.decision(child).payload()))
        try Record.write([.decision(parent), replayed], on: connection)
        let rows = try History.decisions(History.DecisionQuery(), on: connection).rows
        #expect(rows.first?.decision.parentDecisionID == parent.decisionID)
        #expect(rows.last?.decision.parentDecisionID == nil)
    }
}

@Suite(.timeLimit(.minutes(1)))
struct DecisionStoreTests {
    @Test func `decisions are written with their JSON, idempotently`() async throws {
        let connection = try await PostgresConnection(conninfo: TestServices.freshDatabase())
        try Migrations.apply(on: connection)
        let decision = DecisionRecord(
            decisionID: UUID(), ts: 1000, module: "etl", action: "invoke", source: "schedule",
            trigger: #"{"kind":"schedule","note":"a \"quoted\" word"}"#, reasons: #"[{"step":"cooldown","ok":true}]"#,
            confidence: 0.75, latencyMicroseconds: 42)
        try Record.write([.decision(decision), .decision(decision)], on: connection)
        let rows = try connection.query("SELECT module, trigger->>'note', reasons->0->>'step', confidence, latency_us FROM decisions")
        #expect(rows.rows == [["etl", #"a "quoted" word"#, "cooldown", "0.75", "42"]])
        #expect(Record(payload: Record.decision(decision).payload()) == .decision(decision))
        let tricky = DecisionRecord(
            decisionID: UUID(), ts: 2000, module: nil, action: "invoke", source: "rules",
            trigger: #"{"kind":"equipment","tag":"t7\"'); DROP TABLE decisions; --"}"#, reasons: "[]", confidence: 0.9, latencyMicroseconds: 150)
        let roundTripped = try #require(Record(payload: Record.decision(tricky).payload()))
        try Record.write([roundTripped], on: connection)
        #expect(try connection.query("SELECT trigger->>'tag' FROM decisions WHERE ts = to_timestamp(2)").rows == [[#"t7"'); DROP TABLE decisions; --"#]])
    }

    @Test func `the minute each schedule last fired in is read back from its decisions`() async throws {
        let connection = try await PostgresConnection(conninfo: TestServices.freshDatabase())
        try Migrations.apply(on: connection)
        let now = Int64((Date().timeIntervalSince1970 * 1000).rounded())
        func decision(rule: String, kind: String, at time: Int64) -> Record {
            .decision(
                DecisionRecord(
                    decisionID: UUID(), ts: time, module: "etl", action: "invoke", source: kind == "schedule" ? "schedule" : "rules",
                    trigger: #"{"name":"\#(rule)","kind":"\#(kind)","source":"schedule","time":\#(time)}"#, reasons: "[]",
                    confidence: nil, latencyMicroseconds: nil))
        }
        try Record.write(
            [
                decision(rule: "nightly", kind: "schedule", at: now - 3_600_000), decision(rule: "nightly", kind: "schedule", at: now - 1_000),
                decision(rule: "hourly", kind: "schedule", at: now - 120_000), decision(rule: "furnace", kind: "equipment", at: now),
            ], on: connection)
        let memory = try InvocationStore.load(on: connection)
        #expect(memory.scheduleFired == ["nightly": (now - 1_000) / 60_000, "hourly": (now - 120_000) / 60_000])
    }

    @Test func `invocations, outcomes and approvals are upserted many rows per statement, NULLs kept, the latest state winning`() async throws {
        let connection = try await PostgresConnection(conninfo: TestServices.freshDatabase())
        try Migrations.apply(on: connection)
        let decisions = (0..<3).map { n in
            DecisionRecord(
                decisionID: UUID(), ts: 1000 + Int64(n), module: "forecasting", action: "invoke", source: "rules", trigger: "{}",
                reasons: "[]", confidence: nil, latencyMicroseconds: nil)
        }
        func invocation(_ n: Int, status: String, published: Int64?, result: String?, attempts: Int) -> InvocationRecord {
            InvocationRecord(
                invocationID: UUID(uuidString: "00000000-0000-0000-0000-00000000000\(n)")!, decisionID: decisions[n].decisionID,
                module: "forecasting", params: #"{"tag":"r1/\"quoted\"/TI-\#(n)"}"#, publishedAt: published, completedAt: nil,
                status: status, attempts: attempts, result: result, triggerKind: "equipment", scopeKey: "r1/cdu/cdu1")
        }
        try Record.write(
            decisions.map { .decision($0) } + [
                .invocation(invocation(0, status: "pending", published: nil, result: nil, attempts: 0)),
                .invocation(invocation(1, status: "pending", published: 2000, result: nil, attempts: 1)),
                .invocation(invocation(1, status: "ok", published: 2000, result: #"{"status":"ok","note":"a \"b\""}"#, attempts: 1)),
                .invocation(invocation(2, status: "timeout", published: 3000, result: nil, attempts: 3)),
                .outcome(OutcomeRecord(triggerKind: "equipment", module: "forecasting", statistics: OutcomeStatistics(
                    invocations: 2, successes: 1, benefitSum: 0.5, benefitSquareSum: 0.25))),
                .outcome(OutcomeRecord(triggerKind: "market", module: "analysis", statistics: OutcomeStatistics(
                    invocations: 1, successes: 0, benefitSum: 0, benefitSquareSum: 0))),
                .approval(ApprovalRecord(decisionID: decisions[0].decisionID, state: .approved, by: nil, via: "timer", at: 4000)),
                .approval(ApprovalRecord(decisionID: decisions[1].decisionID, state: .rejected, by: "shift lead", via: "http", at: 5000)),
            ], on: connection)
        // A later batch moves one invocation on and updates an outcome.
        try Record.write(
            [
                .invocation(invocation(0, status: "ok", published: 6000, result: "{}", attempts: 1)),
                .outcome(OutcomeRecord(triggerKind: "equipment", module: "forecasting", statistics: OutcomeStatistics(
                    invocations: 3, successes: 2, benefitSum: 1, benefitSquareSum: 0.5))),
            ], on: connection)
        let invocations = try connection.query(
            """
            SELECT status, attempts, (extract(epoch FROM published_at) * 1000)::bigint, result->>'note', params->>'tag', scope
            FROM invocations ORDER BY invocation_id
            """)
        #expect(invocations.rows == [
            ["ok", "1", "6000", nil, #"r1/"quoted"/TI-0"#, "r1/cdu/cdu1"],
            ["ok", "1", "2000", #"a "b""#, #"r1/"quoted"/TI-1"#, "r1/cdu/cdu1"],
            ["timeout", "3", "3000", nil, #"r1/"quoted"/TI-2"#, "r1/cdu/cdu1"],
        ])
        #expect(try connection.query("SELECT trigger_kind, module, invocations, successes, benefit_sum FROM outcomes ORDER BY 1").rows == [
            ["equipment", "forecasting", "3", "2", "1"], ["market", "analysis", "1", "0", "0"],
        ])
        #expect(try connection.query("SELECT state, by_whom, via FROM approvals ORDER BY at").rows == [
            ["approved", nil, "timer"], ["rejected", "shift lead", "http"],
        ])
    }
}

@Suite(.timeLimit(.minutes(2)))
struct DatabaseOutageTests {
    @Test func `PostgreSQL stopped in the middle of a stream of 10,000 alerts and decisions: every record lands exactly once`() async throws {
        // A database server of this test's own, so it can be stopped without disturbing the others.
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("dang-outage-\(getpid())-\(UUID().uuidString.prefix(8))").path
        let script = TestServices.repositoryRoot.appendingPathComponent("scripts/services.sh").path
        let started = try ChildProcess.run(["/bin/bash", script, "start", directory])
        #expect(started.status == 0)
        defer { _ = try? ChildProcess.run(["/bin/bash", script, "stop", directory, "--purge"]) }
        let url = try #require(started.output.split(separator: "\n").first { $0.hasPrefix("DATABASE_URL=") }.map { String($0.dropFirst(13)) })
        let pgData = "\(directory)/pg/data"
        func pgCtl(_ action: String) throws {
            let bin = try #require(try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql").sorted().last)
            let ctl = "/usr/lib/postgresql/\(bin)/bin/pg_ctl"
            let command = getuid() == 0 ? ["/usr/sbin/runuser", "-u", "postgres", "--", ctl] : [ctl]
            let result = try ChildProcess.run(command + ["-D", pgData, "-m", "fast", "-w", action])
            #expect(result.status == 0, "\(result.output)")
        }

        var settings = DatabaseSettings()
        settings.url = url
        settings.flushInterval = .milliseconds(10)
        settings.batchSize = 200
        settings.spoolDirectory = "\(directory)/spool"
        let writer = RecordWriter(settings: settings, logger: testLogger)
        let running = Task { await writer.run() }
        try await eventually("writer connected") { writer.counters.connected }

        let ids = (0..<5000).map { _ in UUID() }
        for (i, id) in ids.enumerated() {
            writer.deliver(
                AlertEvent(
                    alertID: id, state: .raised, severity: .warning, kind: .limit, tag: "t\(i)", topic: "p", timestamp: Int64(i),
                    raisedAt: Int64(i), clearedAt: nil, value: 1, score: 1, message: "m"))
            writer.deliver(
                decision: DecisionRecord(
                    decisionID: id, ts: Int64(i), module: nil, action: "skip", source: "rules", trigger: "{}", reasons: "[]",
                    confidence: nil, latencyMicroseconds: nil))
            if i == 1500 {
                try pgCtl("stop")  // the server goes away mid-stream
            }
            if i == 3500 {
                try pgCtl("restart")  // `restart` reuses the options of the first start (postmaster.opts)
            }
            if i % 100 == 0 { try await Task.sleep(for: .milliseconds(2)) }
        }
        do {
            try await eventually("every record written", timeout: .seconds(60)) {
                writer.counters.written == 10_000 && writer.counters.spooledBytes == 0
            }
        } catch {
            Issue.record("writer counters: \(writer.counters)")
            throw error
        }
        writer.stop()
        await running.value
        #expect(writer.counters.spooled > 0)  // the outage really happened
        #expect(writer.counters.dropped == 0)
        let connection = try PostgresConnection(conninfo: url)
        #expect(try connection.query("SELECT count(*), count(DISTINCT alert_id) FROM alerts").rows == [["5000", "5000"]])
        #expect(try connection.query("SELECT count(*), count(DISTINCT decision_id) FROM decisions").rows == [["5000", "5000"]])
    }
}
