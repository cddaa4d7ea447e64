import Curl
import Foundation
import LibPQ
import Synchronization
import Testing

@testable import DangTools
@testable import OrchestratorCore

/// The HTTP API of a running orchestrator (real broker, database and, for questions, the fake LLM),
/// called over libcurl.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct APITests {
    static let operate = "operate-token"
    static let read = "read-token"

    struct Client {
        let port: Int

        func call(_ method: String, _ path: String, token: String? = APITests.operate, body: String? = nil) -> (status: Int, json: [String: Any], text: String) {
            var request = HTTPRequest(url: "http://127.0.0.1:\(self.port)\(path)")
            request.method = method
            request.totalTimeout = .seconds(10)
            if let token { request.headers.append("Authorization: Bearer \(token)") }
            if let body {
                request.headers.append("Content-Type: application/json")
                request.body = Array(body.utf8)
            }
            guard case .success(let response) = CurlTransfer.perform(request) else { return (0, [:], "") }
            let json = (try? JSONSerialization.jsonObject(with: Data(response.body))) as? [String: Any] ?? [:]
            return (response.status, json, String(decoding: response.body, as: UTF8.self))
        }
    }

    static func config(prefix: String, database: String, scenario: String? = nil) -> OrchestratorConfig {
        var config = DecisionLoopTests.config(prefix: prefix, database: database)
        config.api.token = Self.operate
        config.api.readToken = Self.read
        config.modules[.optimization]?.requiresApproval = true
        config.modules[.optimization]?.data = .none  // approvals are tested without plant data
        if let scenario {
            config.llm.baseURL = "http://127.0.0.1:\(LLMClientTests.fake.port)"
            config.llm.model = "fake:\(scenario)"
            config.llm.apiKey = "sk-test"
            config.llm.maxAttempts = 1
        } else {
            config.llm.apiKey = nil
        }
        return config
    }

    @Test func `status and metrics are open; acting needs the operate token; the read token may only read`() async throws {
        let database = try await TestServices.freshDatabase()
        let orchestrator = try Orchestrator(config: Self.config(prefix: "it-api", database: database), logger: testLogger)
        try await withRunningOrchestrator(orchestrator) {
            try await eventually("API listening", timeout: .seconds(30)) { orchestrator.apiListeningPort > 0 }
            try await eventually("orchestrator connected") { orchestrator.connectionStatus.connected }
            let api = Client(port: orchestrator.apiListeningPort)
            let status = api.call("GET", "/status", token: nil)
            #expect(status.status == 200)
            #expect((status.json["mqtt"] as? [String: Any])?["connected"] as? Bool == true)
            #expect((status.json["modules"] as? [String: Any])?["forecasting"] != nil)
            // The probes are open too: alive, and ready once the broker and the database are connected.
            let alive = api.call("GET", "/livez", token: nil)
            #expect(alive.status == 200 && alive.json["status"] as? String == "alive")
            try await eventually("ready") { api.call("GET", "/readyz", token: nil).status == 200 }
            let ready = api.call("GET", "/readyz", token: nil)
            #expect(ready.json["ready"] as? Bool == true && (ready.json["reasons"] as? [Any])?.isEmpty == true)
            // The console's files are open (they hold no data), and may load nothing but themselves.
            for path in ["/console", "/console.js", "/console.css"] {
                var request = HTTPRequest(url: "http://127.0.0.1:\(api.port)\(path)")
                request.method = "GET"
                guard case .success(let page) = CurlTransfer.perform(request) else {
                    Issue.record("\(path) did not answer")
                    continue
                }
                #expect(page.status == 200, "\(path)")
                #expect(page.headers["content-security-policy"]?.hasPrefix("default-src 'self'") == true, "\(path)")
                #expect(page.headers["x-content-type-options"] == "nosniff", "\(path)")
            }
            #expect(api.call("GET", "/console", token: nil).text.contains("<script src=\"/console.js\" defer></script>"))
            let metrics = api.call("GET", "/metrics", token: nil)
            #expect(metrics.status == 200 && metrics.text.contains("dang_ingest_samples_total"))
            #expect(metrics.text.contains("dang_invocation_latency_seconds") && metrics.text.contains("dang_llm_latency_seconds"))
            #expect(metrics.text.contains("dang_record_written_total") && metrics.text.contains("dang_record_spool_bytes"))
            #expect(metrics.text.contains("dang_database_pool_refused_total") && metrics.text.contains("dang_tags_evicted_total"))
            #expect(metrics.text.contains("dang_build_info{version=\"\(DangVersion.current)\"} 1"))
            #expect(metrics.text.contains("dang_ready 1"))
            #expect((status.json["ingest"] as? [String: Any])?["rejected_by_reason"] != nil)
            // Refusals are counted by reason in both.
            var topic = "it-api-in/\(DecisionLoopTests.furnace)"
            var payload = #"{"v": [1, 2"#
            topic.withUTF8 { t in payload.withUTF8 { p in orchestrator.pipeline.handle(topic: UnsafeRawBufferPointer(t), payload: UnsafeRawBufferPointer(p)) } }
            let reasons = (api.call("GET", "/status", token: nil).json["ingest"] as? [String: Any])?["rejected_by_reason"] as? [String: Any]
            #expect((reasons?["malformed_json"] as? NSNumber)?.intValue == 1, "\(reasons ?? [:])")
            #expect(api.call("GET", "/metrics", token: nil).text.contains(#"dang_ingest_rejected_total{reason="malformed_json"} 1"#))
            // Prometheus's shape: one TYPE line per family, no series twice, no total beside its parts.
            let exposition = api.call("GET", "/metrics", token: nil).text.split(separator: "\n")
            let families = exposition.filter { $0.hasPrefix("# TYPE ") }.map { $0.split(separator: " ")[2] }
            #expect(Set(families).count == families.count, "\(families)")
            let series = exposition.filter { !$0.hasPrefix("#") }.map { $0.split(separator: " ").dropLast().joined(separator: " ") }
            #expect(Set(series).count == series.count)
            #expect(!series.contains("dang_ingest_rejected_total") && !series.contains("dang_decisions_total"))
            for severity in ["info", "warning", "critical"] { #expect(series.contains("dang_alerts_active{severity=\"\(severity)\"}")) }

            #expect(api.call("POST", "/invoke/etl", token: nil).status == 401)
            #expect(api.call("POST", "/invoke/etl", token: "wrong").status == 401)
            #expect(api.call("POST", "/invoke/etl", token: Self.read).status == 403)
            #expect(api.call("POST", "/invoke/teleport").status == 404)
            #expect(api.call("POST", "/invoke/etl", body: "[1,2]").status == 400)
            let invoked = api.call("POST", "/invoke/etl", body: #"{"by":"planner","params":{"since":"2026-11-01"}}"#)
            #expect(invoked.status == 202)
            #expect(invoked.json["action"] as? String == "invoke")
            let id = try #require(invoked.json["decision_id"] as? String)

            try await eventually("decision recorded") {
                let page = api.call("GET", "/decisions?module=etl", token: Self.read)
                return (page.json["decisions"] as? [[String: Any]])?.first?["decision_id"] as? String == id
            }
            // With its invocation: published once, no result yet (no etl worker runs here).
            try await eventually("its invocation recorded") {
                let page = api.call("GET", "/decisions?module=etl", token: Self.read)
                let invocation = (page.json["decisions"] as? [[String: Any]])?.first?["invocation"] as? [String: Any]
                return (invocation?["attempts"] as? Int).map { $0 >= 1 } == true && invocation?["invocation_id"] is String
                    && invocation?.keys.contains("latency_ms") == true
            }
            // Its result, once a module answers, is shown with it (the console's decisions view).
            let invocationID = try #require(
                ((api.call("GET", "/decisions?module=etl", token: Self.read).json["decisions"] as? [[String: Any]])?.first?["invocation"]
                    as? [String: Any])?["invocation_id"] as? String)
            let worker = try TestPublisher()
            try await worker.waitUntilConnected()
            try worker.publish("it-api/result/etl", #"{"invocation_id": "\#(invocationID)", "status": "ok", "output": {"rows": 1200}}"#)
            try await eventually("its result shown") {
                let page = api.call("GET", "/decisions?module=etl", token: Self.read)
                let invocation = (page.json["decisions"] as? [[String: Any]])?.first?["invocation"] as? [String: Any]
                return ((invocation?["result"] as? [String: Any])?["output"] as? [String: Any])?["rows"] as? Int == 1200
                    && (invocation?["result_bytes"] as? Int ?? 0) > 20
            }
            #expect(api.call("GET", "/metrics", token: nil).text.contains(#"dang_decisions_total{module="etl",action="invoke"} 1"#))
            let summary = api.call("GET", "/decisions?summary=true&limit=5", token: Self.read)
            #expect(summary.status == 200 && summary.json["modules"] != nil)
            #expect(api.call("GET", "/decisions?limit=0", token: Self.read).status == 400)
            // Filters and cursors that cannot be read are 400s naming them, never unfiltered or a 503.
            // A well-formed token with a time no database stores (v1:9223372036854775807:<uuid>).
            let forged = Data("v1:9223372036854775807:00000000-0000-4000-8000-000000000000".utf8).base64EncodedString()
                .replacingOccurrences(of: "=", with: "").replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            for (query, name) in [("after=\(forged)", "after"), ("from=abc", "from"), ("to=9223372036854775807", "to"), ("to=1.5", "to"), ("module=teleport", "module"), ("outcome=great", "outcome"),
                ("source=fax", "source"), ("trigger_kind=x", "trigger_kind"), ("after=2026-01-01+00:00:00|x", "after"), ("summary=yes", "summary")]
            {
                let answer = api.call("GET", "/decisions?\(query)", token: Self.read)
                #expect(answer.status == 400, "\(query)")
                #expect((answer.json["error"] as? String)?.hasPrefix(name) == true, "\(query): \(answer.text)")
            }
            // Paging: the next cursor is an opaque URL-safe token that leads to the next page.
            _ = api.call("POST", "/invoke/etl", body: #"{"by":"planner","scope":"second"}"#)
            try await eventually("two etl decisions recorded") {
                ((api.call("GET", "/decisions?module=etl", token: Self.read).json["decisions"] as? [Any])?.count ?? 0) >= 2
            }
            let first = api.call("GET", "/decisions?module=etl&limit=1", token: Self.read)
            let next = try #require(first.json["next"] as? String)
            #expect(next.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") })
            let second = api.call("GET", "/decisions?module=etl&limit=1&after=\(next)", token: Self.read)
            #expect(second.status == 200)
            let ids = [first, second].compactMap { ($0.json["decisions"] as? [[String: Any]])?.first?["decision_id"] as? String }
            #expect(ids.count == 2 && ids[0] != ids[1])

            // An optimization needs approval: approved over HTTP, and on the record.
            let pending = api.call("POST", "/invoke/optimization", body: #"{"scope":"r1/cdu/cdu1"}"#)
            #expect(pending.status == 202 && pending.json["action"] as? String == "defer")
            let pendingID = try #require(pending.json["decision_id"] as? String)
            #expect(api.call("POST", "/approve/\(pendingID)", token: Self.read, body: "{}").status == 403)
            #expect(api.call("POST", "/approve/\(pendingID)", body: "").status == 400)
            #expect(api.call("POST", "/approve/\(pendingID)", body: "{}").status == 400)
            #expect(api.call("POST", "/approve/\(pendingID)", body: #"{"approve":true,"by":"shift lead"}"#).status == 200)
            #expect(api.call("POST", "/approve/\(pendingID)", body: #"{"approve":true}"#).status == 404)
            try await eventually("approval recorded") {
                (try? PostgresConnection(conninfo: database).query("SELECT by_whom, via FROM approvals").rows) == [["shift lead", "http"]]
            }
        }
    }

    @Test func `a database that is away is a plain 503: libpq's text (host, user) goes to the log, not to the client`() async throws {
        var config = Self.config(prefix: "it-api-away", database: "postgres://secret_user@127.0.0.1:1/secret_db?connect_timeout=1")
        config.database.spoolDirectory = FileManager.default.temporaryDirectory.appendingPathComponent("dang-spool-\(UUID().uuidString)").path
        let orchestrator = try Orchestrator(config: config, logger: testLogger)
        try await withRunningOrchestrator(orchestrator) {
            try await eventually("API listening", timeout: .seconds(30)) { orchestrator.apiListeningPort > 0 }
            let answer = Client(port: orchestrator.apiListeningPort).call("GET", "/decisions", token: Self.read)
            #expect(answer.status == 503)
            // Alive, but not ready, saying why (and not with libpq's text).
            let client = Client(port: orchestrator.apiListeningPort)
            #expect(client.call("GET", "/livez", token: nil).status == 200)
            let readiness = client.call("GET", "/readyz", token: nil)
            #expect(readiness.status == 503 && readiness.json["ready"] as? Bool == false)
            let reasons = readiness.json["reasons"] as? [String] ?? []
            #expect(reasons.contains { $0.hasPrefix("the database is not connected") }, "\(reasons)")
            #expect(!readiness.text.contains("secret"))
            #expect(answer.json["error"] as? String == "the database is unavailable")
            #expect(!answer.text.contains("secret_user") && !answer.text.contains("127.0.0.1") && !answer.text.contains("secret_db"))
        }
    }

    @Test func `alarms are listed, acknowledged over HTTP and MQTT, and shelved from annunciation`() async throws {
        let database = try await TestServices.freshDatabase()
        let orchestrator = try Orchestrator(config: Self.config(prefix: "it-alarm", database: database), logger: testLogger)
        let publisher = try TestPublisher()
        let alerts = try TestSubscriber(filters: ["it-alarm/alert/#"])
        try await publisher.waitUntilConnected()
        try await alerts.waitUntilConnected()
        try await withRunningOrchestrator(orchestrator) {
            try await eventually("API listening", timeout: .seconds(30)) { orchestrator.apiListeningPort > 0 }
            try await eventually("orchestrator connected") { orchestrator.connectionStatus.connected }
            try await Task.sleep(for: .milliseconds(200))
            let api = Client(port: orchestrator.apiListeningPort)
            try DecisionLoopTests.breach(publisher, prefix: "it-alarm")
            try await eventually("alert recorded") {
                ((api.call("GET", "/alerts", token: Self.read).json["alerts"] as? [[String: Any]]) ?? []).contains { $0["kind"] as? String == "limit" }
            }
            let active = try #require((api.call("GET", "/alerts", token: Self.read).json["alerts"] as? [[String: Any]])?.first { $0["kind"] as? String == "limit" })
            // The plant view's readings: the unit's tags with their limits and newest samples.
            let tags = (api.call("GET", "/tags?unit=r1/cdu/cdu1&samples=5", token: Self.read).json["tags"] as? [[String: Any]]) ?? []
            let furnace = try #require(tags.first { $0["tag"] as? String == DecisionLoopTests.furnace })
            #expect((furnace["limits"] as? [String: Any])?["hi"] as? Double == 372 && furnace["unit"] as? String == "degC")
            #expect((furnace["values"] as? [Double])?.count == 5 && (furnace["values"] as? [Double])?.last == 375)
            #expect(!tags.contains { ($0["tag"] as? String)?.hasPrefix("r1/cdu/cdu1/") != true })
            // The unit's monitor with it (learning: a unit trains on minutes of operation); an area has none.
            let monitor = try #require(api.call("GET", "/tags?unit=r1/cdu/cdu1&samples=5", token: Self.read).json["monitor"] as? [String: Any])
            #expect(monitor["name"] as? String == "r1/cdu/cdu1" && monitor["trained"] as? Bool == false && monitor["in_alarm"] as? Bool == false)
            #expect((monitor["tags"] as? [String])?.contains(DecisionLoopTests.furnace) == true && (monitor["baseline_size"] as? Int ?? 0) > 0)
            #expect(api.call("GET", "/tags?unit=r1/cdu&samples=5", token: Self.read).json["monitor"] is NSNull)
            for bad in ["", "?unit=", "?unit=r1/cdu/", "?unit=r1/cdu/cdu1&samples=0"] {
                #expect(api.call("GET", "/tags\(bad)", token: Self.read).status == 400, "\(bad)")
            }
            let id = try #require(active["alert_id"] as? String)
            // Filtered by severity and by unit (its tags only: a prefix of the unit's name is not it).
            func listed(_ query: String) -> [[String: Any]] {
                (api.call("GET", "/alerts?\(query)", token: Self.read).json["alerts"] as? [[String: Any]]) ?? []
            }
            let severity = try #require(active["severity"] as? String)
            #expect(listed("severity=\(severity)").contains { $0["alert_id"] as? String == id })
            #expect(listed("severity=info,\(severity)").contains { $0["alert_id"] as? String == id })
            let others = AlertSeverity.allCases.map(\.rawValue).filter { $0 != severity }.joined(separator: ",")
            #expect(!listed("severity=\(others)").contains { $0["alert_id"] as? String == id })
            #expect(listed("unit=r1/cdu/cdu1").contains { $0["alert_id"] as? String == id })
            #expect(listed("unit=r1/cdu/cdu").isEmpty && listed("unit=r1/fcc/fcc1").isEmpty)
            #expect(listed("unit=r1/cdu").isEmpty == false)  // an area holds its units' tags too
            for bad in ["severity=loud", "severity=", "unit=", "unit=r1/cdu/", "unit=r1%00x"] {
                let answer = api.call("GET", "/alerts?\(bad)", token: Self.read)
                #expect(answer.status == 400, "\(bad): \(answer.text)")
            }
            #expect(api.call("POST", "/alerts/\(id)/ack", token: Self.read, body: "{}").status == 403)
            #expect(api.call("POST", "/alerts/\(id)/ack", body: #"{"by":"operator 1"}"#).status == 200)
            #expect(api.call("POST", "/alerts/\(id)/ack", body: "{}").status == 409)
            // Counted by kind, severity and transition: the raise by the pipeline, the acknowledgement by the desk.
            let counted = api.call("GET", "/metrics", token: nil).text
            for transition in ["raised", "acknowledged"] {
                #expect(counted.contains(#"dang_alerts_total{kind="limit",severity="\#(severity)",transition="\#(transition)"} 1"#), "\(transition)")
            }
            #expect(counted.contains(#"dang_alerts_active{severity="\#(severity)"}"#))
            // Listed by lifecycle state.
            #expect(listed("state=acknowledged").contains { $0["alert_id"] as? String == id })
            #expect(!listed("state=unacknowledged").contains { $0["alert_id"] as? String == id })
            #expect(api.call("GET", "/alerts?state=standing", token: Self.read).status == 400)
            // The acknowledgement is a transition on the episode's own topic (once: the 409 is not).
            let topic = try #require(alerts.messages.first { ($0.json?["alert_id"] as? String) == id }?.topic)
            try await eventually("the acknowledgement published") {
                alerts.messages.contains { $0.topic == topic && ($0.json?["alert_id"] as? String) == id && ($0.json?["state"] as? String) == "acknowledged" }
            }
            let acked = try #require(alerts.messages.first { ($0.json?["alert_id"] as? String) == id && ($0.json?["state"] as? String) == "acknowledged" }?.json)
            #expect(acked["acked_by"] as? String == "operator 1" && acked["kind"] as? String == "limit" && acked["severity"] as? String == severity)
            #expect((acked["acked_at"] as? NSNumber)?.int64Value ?? 0 > 0)
            #expect(api.call("POST", "/alerts/\(UUID().uuidString)/ack", body: "{}").status == 404)

            // Shelved: the clear of this episode is recorded and still published (a subscriber saw it raised).
            #expect(api.call("POST", "/alerts/\(id)/shelve", body: #"{"duration":"forever"}"#).status == 400)
            let shelved = api.call("POST", "/alerts/\(id)/shelve", body: #"{"duration":"10m","by":"operator 1","reason":"transmitter being recalibrated"}"#)
            #expect(shelved.status == 200)
            try await eventually("the shelving published") {
                alerts.messages.contains { ($0.json?["alert_id"] as? String) == id && ($0.json?["state"] as? String) == "shelved" }
            }
            let shelving = try #require(alerts.messages.first { ($0.json?["alert_id"] as? String) == id && ($0.json?["state"] as? String) == "shelved" })
            #expect(shelving.topic == topic)
            #expect(shelving.json?["reason"] as? String == "transmitter being recalibrated" && shelving.json?["shelved_by"] as? String == "operator 1")
            #expect((shelving.json?["shelved_until"] as? NSNumber)?.int64Value == (shelved.json["shelved_until"] as? NSNumber)?.int64Value)
            #expect(listed("state=all").first { $0["alert_id"] as? String == id }?["shelve_reason"] as? String == "transmitter being recalibrated")
            #expect(listed("state=shelved").contains { $0["alert_id"] as? String == id })
            let before = alerts.messages.count
            let start: Int64 = 1_790_000_100_000
            for i in 0..<15 { try publisher.publish("it-alarm-in/r1/cdu/cdu1/TI-101", #"{"ts":\#(start + Int64(i) * 1000),"v":358}"#) }
            try await eventually("cleared in the record") {
                (try? PostgresConnection(conninfo: database).query("SELECT state FROM alerts WHERE alert_id = $1", [id]).rows.first?.first) == "cleared"
            }
            try await eventually("the clear published") {
                alerts.messages.dropFirst(before).contains { ($0.json?["alert_id"] as? String) == id && ($0.json?["state"] as? String) == "cleared" }
            }
            // A new raise of the shelved tag and kind is recorded but not annunciated.
            let beforeRaise = alerts.messages.count
            for i in 0..<5 { try publisher.publish("it-alarm-in/r1/cdu/cdu1/TI-101", #"{"ts":\#(start + 20_000 + Int64(i) * 1000),"v":380}"#) }
            try await eventually("raised again in the record") {
                (try? PostgresConnection(conninfo: database).query(
                    "SELECT count(*) FROM alerts WHERE tag = 'r1/cdu/cdu1/TI-101' AND kind = 'limit' AND state = 'raised'").rows.first?.first) == "1"
            }
            try await Task.sleep(for: .milliseconds(300))
            #expect(!alerts.messages.dropFirst(beforeRaise).contains {
                ($0.json?["tag"] as? String) == "r1/cdu/cdu1/TI-101" && ($0.json?["kind"] as? String) == "limit" && ($0.json?["state"] as? String) == "raised"
            })

            // Unshelved: a transition too, recorded, and the next raise is annunciated again.
            #expect(api.call("POST", "/alerts/\(id)/unshelve", token: Self.read, body: "{}").status == 403)
            #expect(api.call("POST", "/alerts/\(UUID().uuidString)/unshelve", body: "{}").status == 404)
            #expect(api.call("POST", "/alerts/\(id)/unshelve", body: #"{"by":"operator 2","reason":"recalibrated"}"#).status == 200)
            #expect(api.call("POST", "/alerts/\(id)/unshelve", body: "{}").status == 409)
            try await eventually("the unshelving published") {
                alerts.messages.contains {
                    ($0.json?["alert_id"] as? String) == id && ($0.json?["state"] as? String) == "unshelved" && ($0.json?["unshelved_by"] as? String) == "operator 2"
                        && ($0.json?["reason"] as? String) == "recalibrated"
                }
            }
            let unshelvedRow = try PostgresConnection(conninfo: database).query(
                "SELECT unshelved_by, unshelve_reason, shelved_until <= now() FROM alerts WHERE alert_id = $1", [id]).rows.first
            #expect(unshelvedRow == ["operator 2", "recalibrated", "t"])
            #expect(orchestrator.publisher.shelf.count == 0)

            // The same acknowledgement over MQTT, for another episode.
            let other = try #require(
                (try PostgresConnection(conninfo: database).query("SELECT alert_id::text FROM alerts WHERE alert_id <> $1 LIMIT 1", [id]).rows.first?.first)
                    .flatMap { $0 })
            try publisher.publish("it-alarm/ack/\(other)", #"{"by":"mqtt operator"}"#)
            try await eventually("acknowledged over MQTT") {
                (try? PostgresConnection(conninfo: database).query("SELECT acked_by FROM alerts WHERE alert_id = $1", [other]).rows.first?.first) == "mqtt operator"
            }

            // A flood of acknowledgements and reads: never a thread and a connection per message or
            // request (that exhausted max_connections and starved the record writer).
            let watcher = try PostgresConnection(conninfo: database)
            func connections() throws -> Int {
                let rows = try watcher.query("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
                return Int(rows.rows.first?.first.flatMap { $0 } ?? "0") ?? 0
            }
            // (The test's own connections above close asynchronously: their backends may linger a
            // moment on a loaded machine.)
            for _ in 0..<100 where try connections() > 1 + orchestrator.databasePool.size { try await Task.sleep(for: .milliseconds(50)) }
            // Plain threads for everything that blocks: the cooperative pool (two threads here) is
            // shared with the suites running alongside, whose timing tests must not starve.
            let flooded = Atomic<Bool>(false)
            Thread.detachNewThread {
                for _ in 0..<2000 { try? publisher.publish("it-alarm/ack/\(UUID().uuidString)", "{}") }
                flooded.store(true, ordering: .releasing)
            }
            let answers = Mutex<[Int]>([])
            for _ in 0..<40 {
                Thread.detachNewThread { let status = api.call("GET", "/alerts", token: Self.read).status; answers.withLock { $0.append(status) } }
            }
            var most = 0
            for _ in 0..<50 {
                most = max(most, try connections())
                try await Task.sleep(for: .milliseconds(20))
            }
            try await eventually("the flood published", timeout: .seconds(30)) { flooded.load(ordering: .acquiring) }
            try await eventually("every read answered", timeout: .seconds(30)) { answers.withLock { $0.count } == 40 }
            let statuses = answers.withLock { $0 }
            // The record writer's connection, the pool's (2), and nothing per message.
            #expect(most <= 1 + orchestrator.databasePool.size)
            #expect(orchestrator.databasePool.threads <= orchestrator.databasePool.size)
            #expect(statuses.allSatisfy { $0 == 200 || $0 == 503 })
            #expect(statuses.contains(200))
        }
    }

    @Test func `suppressed by design (the shipped suppress_when) and out of service: recorded, neither published nor acted on, visible`() async throws {
        let database = try await TestServices.freshDatabase()
        var config = Self.config(prefix: "it-suppress", database: database)
        config.triggers[0].alertKinds = []  // every warning or worse decides: a suppressed one must not
        let orchestrator = try Orchestrator(config: config, logger: testLogger)
        let publisher = try TestPublisher()
        let watcher = try TestSubscriber(filters: ["it-suppress/alert/#", "it-suppress/service/#"])
        try await publisher.waitUntilConnected()
        try await watcher.waitUntilConnected()
        @Sendable func row(_ tag: String) -> [String?]? {
            try? PostgresConnection(conninfo: database).query(
                "SELECT suppressed, state FROM alerts WHERE tag = $1 AND kind = 'limit' ORDER BY raised_at DESC LIMIT 1", [tag]
            ).rows.first
        }
        @Sendable func decided(_ tag: String) -> Bool {
            (try? PostgresConnection(conninfo: database).query("SELECT count(*) FROM decisions WHERE trigger::text LIKE '%' || $1 || '%'", [tag]).rows)
                != [["0"]]
        }
        try await withRunningOrchestrator(orchestrator) {
            try await eventually("API listening", timeout: .seconds(30)) { orchestrator.apiListeningPort > 0 }
            try await eventually("orchestrator connected") { orchestrator.connectionStatus.connected }
            let api = Client(port: orchestrator.apiListeningPort)
            let t0: Int64 = 1_790_000_000_000
            // The crude charge is down (FI-101 under 100 m3/h): the furnace's low fuel gas flow is
            // suppressed by design (topics/refinery.yaml).
            try publisher.publish("it-suppress-in/r1/cdu/cdu1/FI-101", #"{"ts":\#(t0),"v":40}"#)
            try await eventually("the charge seen") { orchestrator.pipeline.counters.samples >= 1 }
            try publisher.publish("it-suppress-in/r1/cdu/cdu1/FI-110", #"{"ts":\#(t0 + 1000),"v":900}"#)
            try await eventually("the suppressed alarm recorded") { row("r1/cdu/cdu1/FI-110") == ["by_design", "raised"] }
            let listed = (api.call("GET", "/alerts", token: Self.read).json["alerts"] as? [[String: Any]]) ?? []
            #expect(listed.first { $0["tag"] as? String == "r1/cdu/cdu1/FI-110" }?["suppressed"] as? String == "by_design")
            let suppressedList = (api.call("GET", "/alerts?state=suppressed", token: Self.read).json["alerts"] as? [[String: Any]]) ?? []
            #expect(suppressedList.map { $0["tag"] as? String } == ["r1/cdu/cdu1/FI-110"])
            // Out of service: TI-101, by the operate role only, once.
            let body = #"{"tag":"r1/cdu/cdu1/TI-101","out_of_service":true,"by":"technician","reason":"transmitter replaced"}"#
            #expect(api.call("POST", "/service", token: Self.read, body: body).status == 403)
            #expect(api.call("POST", "/service", body: #"{"tag":"r1/+/x","out_of_service":true}"#).status == 400)
            #expect(api.call("POST", "/service", body: #"{"tag":"r1/cdu/cdu1/TI-101"}"#).status == 400)
            #expect(api.call("POST", "/service", body: body).status == 200)
            #expect(api.call("POST", "/service", body: body).status == 409)
            let out = (api.call("GET", "/service", token: Self.read).json["out_of_service"] as? [[String: Any]]) ?? []
            #expect(out.count == 1 && out.first?["tag"] as? String == "r1/cdu/cdu1/TI-101" && out.first?["reason"] as? String == "transmitter replaced")
            try await eventually("the service state published") {
                watcher.messages.contains { $0.topic == "it-suppress/service/r1/cdu/cdu1/TI-101"
                    && ($0.json?["out_of_service"] as? Bool) == true && ($0.json?["by"] as? String) == "technician" }
            }
            // Retained: a console that subscribes later learns it.
            let late = try TestSubscriber(filters: ["it-suppress/service/#"])
            try await late.waitUntilConnected()
            try await eventually("retained") { late.messages.contains { $0.retained && ($0.json?["out_of_service"] as? Bool) == true } }
            try DecisionLoopTests.breach(publisher, prefix: "it-suppress")
            try await eventually("the out-of-service alarm recorded") { row(DecisionLoopTests.furnace) == ["out_of_service", "raised"] }
            // Neither was published nor decided on.
            try await Task.sleep(for: .milliseconds(500))
            #expect(!watcher.messages.contains { $0.topic.hasPrefix("it-suppress/alert/") && ["r1/cdu/cdu1/FI-110", DecisionLoopTests.furnace].contains($0.json?["tag"] as? String) })
            #expect(!decided("FI-110") && !decided("TI-101"))
            // FI-101 itself is low (an annunciated alarm of its own, acted on): the suppression is only FI-110's.
            #expect(watcher.messages.contains { ($0.json?["tag"] as? String) == "r1/cdu/cdu1/FI-101" && ($0.json?["state"] as? String) == "raised" })
            // Back in service: published, and the list is empty.
            #expect(api.call("POST", "/service", body: #"{"tag":"r1/cdu/cdu1/TI-101","out_of_service":false,"by":"technician"}"#).status == 200)
            #expect(((api.call("GET", "/service", token: Self.read).json["out_of_service"] as? [Any]) ?? [1]).isEmpty)
            try await eventually("back in service, published") {
                watcher.messages.contains { $0.topic == "it-suppress/service/r1/cdu/cdu1/TI-101" && ($0.json?["out_of_service"] as? Bool) == false }
            }
        }
        // A restart puts the tags out of service back: none now; one taken out again is restored.
        let second = try Orchestrator(config: config, logger: testLogger)
        try await withRunningOrchestrator(second) {
            try await eventually("API listening", timeout: .seconds(30)) { second.apiListeningPort > 0 }
            let api = Client(port: second.apiListeningPort)
            #expect(api.call("POST", "/service", body: #"{"tag":"r1/cdu/cdu1/TI-102","out_of_service":true}"#).status == 200)
        }
        let third = try Orchestrator(config: config, logger: testLogger)
        try await withRunningOrchestrator(third) {
            try await eventually("connected") { third.connectionStatus.connected }
            try await eventually("restored") { third.statusSnapshot().outOfServiceTags == 1 }
        }
    }

    @Test func `GET /events pushes alerts, lifecycle transitions and the status as they happen, to the read role`() async throws {
        let lingering = Mutex<Task<Int32, Never>?>(nil)
        let database = try await TestServices.freshDatabase()
        let orchestrator = try Orchestrator(config: Self.config(prefix: "it-events", database: database), logger: testLogger)
        let publisher = try TestPublisher()
        try await publisher.waitUntilConnected()
        try await withRunningOrchestrator(orchestrator) {
            try await eventually("API listening", timeout: .seconds(30)) { orchestrator.apiListeningPort > 0 }
            try await eventually("orchestrator connected") { orchestrator.connectionStatus.connected }
            let port = orchestrator.apiListeningPort
            let api = Client(port: port)
            #expect(api.call("GET", "/events", token: nil).status == 401)
            // A client on the stream for 4 s (curl, as a browser's fetch would read it).
            let output = FileManager.default.temporaryDirectory.appendingPathComponent("dang-events-\(UUID().uuidString)").path
            async let listened: Int32 = offThePool {
                (try? ChildProcess.run([
                    "/usr/bin/curl", "-sS", "-N", "--max-time", "4", "-o", output, "-H", "Authorization: Bearer \(APITests.read)",
                    "http://127.0.0.1:\(port)/events",
                ]))?.status ?? -1
            }
            try await eventually("the client listening") { orchestrator.events.listeners == 1 }
            try DecisionLoopTests.breach(publisher, prefix: "it-events")
            try await eventually("alert recorded") {
                ((api.call("GET", "/alerts", token: Self.read).json["alerts"] as? [[String: Any]]) ?? []).contains { $0["kind"] as? String == "limit" }
            }
            let id = try #require(
                ((api.call("GET", "/alerts", token: Self.read).json["alerts"] as? [[String: Any]]) ?? []).first { $0["kind"] as? String == "limit" }?["alert_id"]
                    as? String)
            #expect(api.call("POST", "/alerts/\(id)/ack", body: #"{"by":"console"}"#).status == 200)
            _ = await listened  // curl ends at its --max-time
            try await eventually("the client gone") { orchestrator.events.listeners == 0 }
            let text = try String(contentsOfFile: output, encoding: .utf8)
            let frames = text.components(separatedBy: "\n\n").filter { !$0.isEmpty }
            func data(_ event: String) -> [[String: Any]] {
                frames.filter { $0.hasPrefix("event: \(event)\ndata: ") }.compactMap {
                    (try? JSONSerialization.jsonObject(with: Data($0.dropFirst("event: \(event)\ndata: ".count).utf8))) as? [String: Any]
                }
            }
            #expect(frames.first == "retry: 2000")
            #expect(data("alert").contains { $0["alert_id"] as? String == id && $0["state"] as? String == "raised" })
            #expect(data("transition").contains { $0["alert_id"] as? String == id && $0["state"] as? String == "acknowledged" && $0["acked_by"] as? String == "console" })
            #expect(data("status").contains { ($0["mqtt"] as? [String: Any])?["connected"] as? Bool == true })
            // A client still listening when the orchestrator stops: its stream ends, the stop is not held up.
            lingering.withLock {
                $0 = Task {
                    await offThePool {
                        (try? ChildProcess.run([
                            "/usr/bin/curl", "-sS", "-N", "--max-time", "60", "-o", "/dev/null", "-H", "Authorization: Bearer \(APITests.read)",
                            "http://127.0.0.1:\(port)/events",
                        ]))?.status ?? -1
                    }
                }
            }
            try await eventually("listening again") { orchestrator.events.listeners == 1 }
        }
        let stopped = ContinuousClock.now
        let status = await lingering.withLock { $0 }?.value
        #expect(status == 0)  // the server ended the response: curl exits cleanly, not at its --max-time
        #expect(ContinuousClock.now - stopped < .seconds(20))
    }

    @Test func `a question is answered with the plant's context, in a session kept in the record`() async throws {
        let database = try await TestServices.freshDatabase()
        let orchestrator = try Orchestrator(config: Self.config(prefix: "it-ask", database: database, scenario: "answer"), logger: testLogger)
        let publisher = try TestPublisher()
        try await publisher.waitUntilConnected()
        try await withRunningOrchestrator(orchestrator) {
            try await eventually("API listening", timeout: .seconds(30)) { orchestrator.apiListeningPort > 0 }
            try await eventually("orchestrator connected") { orchestrator.connectionStatus.connected }
            try await Task.sleep(for: .milliseconds(200))
            let api = Client(port: orchestrator.apiListeningPort)
            try DecisionLoopTests.breach(publisher, prefix: "it-ask")
            try await eventually("alert recorded") {
                (try? PostgresConnection(conninfo: database).query("SELECT count(*) FROM alerts WHERE state = 'raised'").rows.first?.first) != "0"
            }
            #expect(api.call("POST", "/orchestrate", body: #"{"question":""}"#).status == 400)
            let first = api.call("POST", "/orchestrate", body: #"{"question":"Why did the CDU furnace outlet temperature alarm?"}"#)
            #expect(first.status == 200)
            #expect((first.json["answer"] as? String)?.contains("a1") == true)
            #expect(first.json["reasoning"] as? String == "Looked at a1.")
            #expect((first.json["legend"] as? [String: String])?.values.contains("r1/cdu/cdu1/TI-101") == true)
            let session = try #require(first.json["session_id"] as? String)
            try await eventually("exchange recorded") {
                (try? PostgresConnection(conninfo: database).query("SELECT count(*) FROM llm_exchanges WHERE session_id = $1 AND answer IS NOT NULL", [session]).rows.first?.first) == "1"
            }
            let second = api.call("POST", "/orchestrate", body: #"{"question":"Should we run optimization now?","session_id":"\#(session)"}"#)
            #expect(second.status == 200)
            // The second prompt carried the first answer, and no tag name from telemetry.
            let prompt = try #require(LLMClientTests.fake.requests("answer").last.flatMap { ($0["messages"] as? [[String: String]])?.first?["content"] })
            #expect(prompt.contains("Why did the CDU furnace outlet temperature alarm?"))
            #expect(prompt.contains("CDU furnace outlet temperature"))  // the topic map's description
            #expect(!prompt.contains("r1/cdu/cdu1/TI-101"))
            #expect((try PostgresConnection(conninfo: database).query("SELECT count(*) FROM sessions").rows.first?.first) == "1")
        }
    }
}
