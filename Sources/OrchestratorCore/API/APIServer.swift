package import Foundation
package import Hummingbird
import LibPQ
package import Logging
import NIOCore
package import CoreMetrics
import Prometheus
import Synchronization

/// The HTTP front door (Hummingbird 2): status, metrics, manual invocations, approvals, the
/// decision record, alarm management and questions to the advisor (`docs/api.md`,
/// `docs/openapi.yaml`). A thin face on the orchestrator: every action goes through the same
/// coordinator, validation and record as MQTT.
package struct APIServer: Sendable {
    let orchestrator: Orchestrator
    let settings: APISettings
    let logger: Logger
    let metrics: MetricsExporter

    package init(orchestrator: Orchestrator, logger: Logger) {
        self.orchestrator = orchestrator
        self.settings = orchestrator.config.api
        self.logger = logger
        self.metrics = orchestrator.metrics
    }

    /// The application; `onRunning` receives the port it listens on (for `listen: …:0`).
    package func application(onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) -> some ApplicationProtocol {
        let router = Router()
        router.add(middleware: BearerAuth(operate: self.settings.token, read: self.settings.readToken))
        router.get("status") { _, _ in self.status() }
        router.get("metrics") { _, _ in self.metricsResponse() }
        router.post("invoke/:module") { request, context in try await self.invoke(request, context) }
        router.post("approve/:decision") { request, context in try await self.approve(request, context) }
        router.get("decisions") { request, _ in await self.decisions(request) }
        router.get("alerts") { request, _ in await self.alerts(request) }
        router.post("alerts/:id/ack") { request, context in try await self.ack(request, context) }
        router.post("alerts/:id/shelve") { request, context in try await self.shelve(request, context) }
        router.post("orchestrate") { request, _ in try await self.orchestrate(request) }
        var logger = self.logger
        logger.logLevel = max(logger.logLevel, .notice)
        return Application(
            router: router,
            configuration: .init(address: .hostname(self.settings.host, port: self.settings.port), serverName: "dang/\(DangVersion.current)"),
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? 0) },
            logger: logger)
    }

    // MARK: - Status and metrics

    func status() -> Response {
        let o = self.orchestrator
        let mqtt = o.connectionStatus
        let record = o.recordWriter.counters
        let ingest = o.pipeline.counters
        let decisions = o.coordinator.counters
        let degraded = !mqtt.connected || !record.connected
        var modules: [String: Any] = [:]
        for (name, settings) in o.config.modules {
            modules[name.rawValue] = [
                "enabled": settings.enabled, "transport": settings.transport.rawValue, "in_flight": o.coordinator.inFlight(name),
                "max_in_flight": settings.maxInFlight, "requires_approval": settings.requiresApproval,
            ]
        }
        var llm: [String: Any] = ["active": o.config.llm.isActive, "provider": o.config.llm.provider, "model": o.config.llm.model]
        if let counters = o.coordinator.advisorCounters {
            llm["calls"] = counters.calls
            llm["failures"] = counters.failures
            llm["cache_hits"] = counters.cacheHits
            llm["rejected_circuit_open"] = counters.rejectedOpen
        }
        let body: [String: Any] = [
            "state": degraded ? "degraded" : "ok",
            "version": DangVersion.current,
            "started_at": o.startedAt.formatted(.iso8601),
            "mqtt": [
                "connected": mqtt.connected, "connects": mqtt.connects, "last_error": mqtt.lastError ?? NSNull(),
                "dropped_while_away": o.publisher.droppedWhileAway,
            ],
            "database": [
                "connected": record.connected, "written": record.written, "spool_bytes": record.spooledBytes,
                "rejected": record.rejectedRecords, "dropped": record.dropped, "corrupt_bytes_skipped": record.corruptBytesSkipped,
                "pool_refused": o.databasePool.refused,
            ],
            "ingest": [
                "messages": ingest.messages, "samples": ingest.samples, "rejected": ingest.totalRejected, "unknown_topics": ingest.unknownTopics,
                "rejected_by_reason": Dictionary(uniqueKeysWithValues: ingest.rejected.map { ($0.key.rawValue, $0.value) }),
                "tag_limit": ingest.tagLimitRejections, "tags_evicted": ingest.evictedTags,
                "redelivered": ingest.redeliveries,
                "tags": ingest.tags, "alerts_raised": ingest.alertsRaised, "alerts_cleared": ingest.alertsCleared,
            ],
            "detectors": ["units": o.pipeline.units.map { ["name": $0.name, "tags": $0.tags, "trained": $0.trained] }],
            "modules": modules,
            "decisions": [
                "decisions": decisions.decisions, "invoked": decisions.invoked, "skipped": decisions.skipped, "deferred": decisions.deferred,
                "results": decisions.results, "timeouts": decisions.timeouts, "retries": decisions.retries, "open_invocations": o.coordinator.activeInvocations.count,
            ],
            "llm": llm,
            "shelved_alarms": o.publisher.shelf.count,
        ]
        return Self.json(.ok, body)
    }

    func metricsResponse() -> Response {
        let text = self.metrics.render(self.orchestrator)
        return Response(
            status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(bytes: text)))
    }

    // MARK: - Acting

    func invoke(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        guard let name = context.parameters.get("module"), let module = ModuleName(rawValue: name) else {
            return Self.error(.notFound, "unknown module (forecasting, analysis, optimization, etl)")
        }
        let body = try await self.body(request)
        guard let parsed = ManualRequest.parse(body) else {
            return Self.error(.badRequest, "expected a JSON object {\"scope\", \"by\", \"params\": {...}}")
        }
        guard let decision = self.orchestrator.coordinator.request(module: module, scope: parsed.scope, by: parsed.by, params: parsed.params, source: .api) else {
            return Self.error(.serviceUnavailable, "the module is not configured")
        }
        let reasons = (try? JSONSerialization.jsonObject(with: Data(decision.reasonsJSON().utf8))) ?? []
        return Self.json(
            decision.action == .skip ? .conflict : .accepted,
            [
                "decision_id": decision.id.uuidString.lowercased(), "module": module.rawValue, "action": decision.action.rawValue,
                "confidence": decision.confidence, "reasons": reasons,
            ])
    }

    func approve(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        guard let text = context.parameters.get("decision"), let id = UUID(uuidString: text) else {
            return Self.error(.badRequest, "not a decision id")
        }
        guard let answer = ApprovalRequest.parse(try await self.body(request)) else {
            return Self.error(.badRequest, #"the body must say {"approve": true} or {"approve": false}"#)
        }
        guard self.orchestrator.coordinator.approve(decision: id, approve: answer.approve, by: answer.by, via: "http") else {
            return Self.error(.notFound, "no decision waiting for approval with this id")
        }
        return Self.json(.ok, ["decision_id": id.uuidString.lowercased(), "approved": answer.approve])
    }

    // MARK: - The record

    func decisions(_ request: Request) async -> Response {
        let q = request.uri.queryParameters
        var query = History.DecisionQuery()
        query.from = q.get("from").flatMap { Int64($0) }
        query.to = q.get("to").flatMap { Int64($0) }
        query.module = q.get("module")
        query.triggerKind = q.get("trigger_kind")
        query.outcome = q.get("outcome")
        query.source = q.get("source")
        if let limit = q.get("limit") {
            guard let value = Int(limit), (1...1000).contains(value) else { return Self.error(.badRequest, "limit must be 1...1000") }
            query.limit = value
        }
        if let after = q.get("after") {
            let parts = after.split(separator: "|", maxSplits: 1)
            guard parts.count == 2 else { return Self.error(.badRequest, "after must be the next cursor of a previous page") }
            query.after = History.Cursor(ts: String(parts[0]), decisionID: String(parts[1]))
        }
        let summary = q.get("summary") == "true"
        let query_ = query
        return await self.database { connection in
            let query = query_
            let page = try History.decisions(query, on: connection)
            var body: [String: Any] = [
                "decisions": page.rows.map { row -> [String: Any] in
                    let d = row.decision
                    return [
                        "decision_id": d.decisionID.uuidString.lowercased(), "ts": d.ts, "module": d.module ?? NSNull(), "action": d.action,
                        "source": d.source, "trigger": Self.parse(d.trigger), "reasons": Self.parse(d.reasons),
                        "confidence": d.confidence ?? NSNull(), "latency_us": d.latencyMicroseconds ?? NSNull(), "outcome": row.outcome,
                    ]
                },
                "next": page.next.map { "\($0.ts)|\($0.decisionID)" } ?? NSNull(),
            ]
            if summary {
                body["counts"] = try History.counts(from: query.from, to: query.to, on: connection).map {
                    ["module": $0.module, "trigger_kind": $0.triggerKind, "outcome": $0.outcome, "decisions": $0.count]
                }
                body["modules"] = try History.moduleStats(from: query.from, to: query.to, on: connection).map { m -> [String: Any] in
                    [
                        "module": m.module, "invocations": m.invocations, "success_rate": m.successRate,
                        "latency_ms_p50": m.p50 ?? NSNull(), "latency_ms_p95": m.p95 ?? NSNull(), "latency_ms_p99": m.p99 ?? NSNull(),
                    ]
                }
            }
            return Self.json(.ok, body)
        }
    }

    func alerts(_ request: Request) async -> Response {
        let q = request.uri.queryParameters
        let state = q.get("state") ?? "active"
        guard state == "active" || state == "all" else { return Self.error(.badRequest, "state must be active or all") }
        let limit = q.get("limit").flatMap { Int($0) } ?? 100
        guard (1...1000).contains(limit) else { return Self.error(.badRequest, "limit must be 1...1000") }
        return await self.database { connection in
            let rows = try connection.query(
                """
                SELECT alert_id::text, tag, topic, kind, severity, state, (extract(epoch FROM ts) * 1000)::bigint,
                       (extract(epoch FROM raised_at) * 1000)::bigint, (extract(epoch FROM cleared_at) * 1000)::bigint,
                       (extract(epoch FROM acked_at) * 1000)::bigint, acked_by, (extract(epoch FROM shelved_until) * 1000)::bigint,
                       value, score, message
                FROM alerts WHERE ($1 = 'all' OR state = 'raised') ORDER BY raised_at DESC LIMIT $2
                """, [state, limit])
            let alerts = rows.rows.map { r -> [String: Any] in
                [
                    "alert_id": r[0] ?? "", "tag": r[1] ?? "", "topic": r[2] ?? "", "kind": r[3] ?? "", "severity": r[4] ?? "", "state": r[5] ?? "",
                    "ts": r[6].flatMap { Int64($0) } ?? 0, "raised_at": r[7].flatMap { Int64($0) } ?? 0,
                    "cleared_at": r[8].flatMap { Int64($0) } ?? NSNull(), "acked_at": r[9].flatMap { Int64($0) } ?? NSNull(),
                    "acked_by": r[10] ?? NSNull(), "shelved_until": r[11].flatMap { Int64($0) } ?? NSNull(),
                    "value": r[12].flatMap { Double($0) }.flatMap { $0.isFinite ? $0 : nil } ?? NSNull(),
                    "score": r[13].flatMap { Double($0) }.flatMap { $0.isFinite ? $0 : nil } ?? NSNull(), "message": r[14] ?? "",
                ]
            }
            return Self.json(.ok, ["alerts": alerts])
        }
    }

    func ack(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        guard let text = context.parameters.get("id"), let id = UUID(uuidString: text) else { return Self.error(.badRequest, "not an alert id") }
        let by = Self.by(try await self.body(request))
        let desk = self.orchestrator.alarmDesk
        return await self.database { connection in
            switch try desk.acknowledge(id, by: by, on: connection) {
            case .done: return Self.json(.ok, ["alert_id": id.uuidString.lowercased(), "acknowledged": true])
            case .already: return Self.error(.conflict, "already acknowledged")
            case .unknown: return Self.error(.notFound, "no such alert")
            }
        }
    }

    func shelve(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        guard let text = context.parameters.get("id"), let id = UUID(uuidString: text) else { return Self.error(.badRequest, "not an alert id") }
        let body = try await self.body(request)
        guard let object = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any],
            let durationText = object["duration"] as? String, let duration = YAMLSection.parseDuration(durationText),
            duration > .zero, duration <= .seconds(7 * 86400)
        else { return Self.error(.badRequest, "expected {\"duration\": \"30m\", \"by\": \"name\"} with a duration up to 7d") }
        let by = (object["by"] as? String).map { String($0.prefix(200)) }
        let desk = self.orchestrator.alarmDesk
        return await self.database { connection in
            guard let until = try desk.shelve(id, for: duration, by: by, on: connection) else { return Self.error(.notFound, "no such alert") }
            return Self.json(.ok, ["alert_id": id.uuidString.lowercased(), "shelved_until": until])
        }
    }

    // MARK: - Questions

    func orchestrate(_ request: Request) async throws -> Response {
        let body = try await self.body(request)
        guard let object = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any], let question = object["question"] as? String,
            !question.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, question.count <= 4000
        else { return Self.error(.badRequest, "expected {\"question\": \"...\", \"session_id\": optional} with a question of at most 4000 characters") }
        var session: UUID? = nil
        if let text = object["session_id"] as? String {
            guard let id = UUID(uuidString: text) else { return Self.error(.badRequest, "session_id must be a UUID") }
            session = id
        }
        guard let advisor = self.orchestrator.coordinator.advisorHandle else {
            return Self.error(.serviceUnavailable, "the LLM advisor is not configured (orchestrator.llm)")
        }
        let answer = await Concierge(orchestrator: self.orchestrator, advisor: advisor).answer(question, session: session ?? UUID(), continuing: session != nil)
        return Self.json(answer.ok ? .ok : .badGateway, answer.body)
    }

    // MARK: - Helpers

    func body(_ request: Request) async throws -> [UInt8] {
        var request = request
        let buffer = try await request.collectBody(upTo: self.settings.maxBodyBytes)
        return Array(buffer.readableBytesView)
    }

    /// Runs blocking libpq work on the orchestrator's database pool. A database that is away is a
    /// 503 whose body says only that (libpq's text, with hosts and users, goes to the log); a full
    /// queue is a 503 too.
    func database(_ body: @escaping @Sendable (PostgresConnection) throws -> Response) async -> Response {
        let logger = self.logger
        let answer = await self.orchestrator.databasePool.run { connection in try body(connection) }
        switch answer {
        case .success(let response)?:
            return response
        case .failure(let error)?:
            logger.warning("API request failed on the database", metadata: ["error": "\(error)"])
            return Self.error(.serviceUnavailable, "the database is unavailable")
        case nil:
            return Self.error(.serviceUnavailable, "the database is busy; try again")
        }
    }

    static func by(_ body: [UInt8]) -> String? {
        ((try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any])?["by"].flatMap { $0 as? String }.map { String($0.prefix(200)) }
    }

    static func parse(_ text: String) -> Any {
        (try? JSONSerialization.jsonObject(with: Data(text.utf8))) ?? text
    }

    static func json(_ status: HTTPResponse.Status, _ object: Any) -> Response {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func error(_ status: HTTPResponse.Status, _ message: String) -> Response {
        Self.json(status, ["error": message])
    }
}

/// Bearer tokens: `operate` may do everything, `read` may GET; `/status` and `/metrics` are open.
struct BearerAuth<Context: RequestContext>: RouterMiddleware {
    let operate: String?
    let read: String?

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let path = request.uri.path
        if request.method == .get && (path == "/status" || path == "/metrics") { return try await next(request, context) }
        guard let header = request.headers[.authorization], header.hasPrefix("Bearer ") else {
            return APIServer.error(.unauthorized, "a bearer token is required")
        }
        let token = Array(header.dropFirst(7).utf8)
        if let operate, Self.equal(token, Array(operate.utf8)) { return try await next(request, context) }
        if let read, Self.equal(token, Array(read.utf8)) {
            guard request.method == .get else { return APIServer.error(.forbidden, "the read token may only GET") }
            return try await next(request, context)
        }
        return APIServer.error(.unauthorized, "unknown token")
    }

    /// Compares without stopping at the first difference (no timing hint about the token).
    static func equal(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for index in a.indices { difference |= a[index] ^ b[index] }
        return difference == 0
    }
}

/// Prometheus text from the orchestrator's counters, read at scrape time (nothing on the hot path),
/// and two latency histograms recorded as things finish: module invocations (published → result)
/// and LLM calls.
package final class MetricsExporter: Sendable {
    private let registry = PrometheusCollectorRegistry()
    private let previous = Mutex<[String: Int]>([:])
    private let invocationLatency: DurationHistogram
    private let llmLatency: DurationHistogram
    private let llmErrors: Prometheus.Counter

    /// swift-metrics instruments made from this land in the same registry (the record writer's).
    package var factory: any MetricsFactory { PrometheusMetricsFactory(registry: self.registry) }

    package init() {
        let buckets: [Duration] = [
            .milliseconds(10), .milliseconds(50), .milliseconds(100), .milliseconds(500), .seconds(1), .seconds(5), .seconds(10),
            .seconds(30), .seconds(60), .seconds(300), .seconds(900),
        ]
        self.invocationLatency = self.registry.makeDurationHistogram(
            name: "dang_invocation_latency_seconds", buckets: buckets, help: "module invocation published → result")
        self.llmLatency = self.registry.makeDurationHistogram(name: "dang_llm_latency_seconds", buckets: buckets, help: "LLM call, retries included")
        self.llmErrors = self.registry.makeCounter(name: "dang_llm_errors_total", help: "LLM calls that ended without a usable answer")
    }

    package func observe(_ observation: CoordinatorOutputs.Observation) {
        switch observation {
        case .invocationCompleted(let latency):
            self.invocationLatency.recordNanoseconds(Int64(latency.timeInterval * 1e9))
        case .llmCall(let latency, let ok):
            self.llmLatency.recordNanoseconds(Int64(latency.timeInterval * 1e9))
            if !ok { self.llmErrors.increment() }
        }
    }

    func render(_ o: Orchestrator) -> [UInt8] {
        let ingest = o.pipeline.counters
        let record = o.recordWriter.counters
        let decisions = o.coordinator.counters
        let llm = o.coordinator.advisorCounters
        let totals: [(String, String, Int)] = [
            ("dang_ingest_messages_total", "MQTT messages handled", ingest.messages),
            ("dang_ingest_samples_total", "samples fed to the detectors", ingest.samples),
            ("dang_ingest_rejected_total", "messages refused (malformed, unknown topic, too large…)", ingest.totalRejected),
            ("dang_ingest_redelivered_total", "samples that repeated one already processed (QoS 1 redelivery), not fed again", ingest.redeliveries),
            ("dang_alerts_raised_total", "alert episodes raised", ingest.alertsRaised),
            ("dang_alerts_cleared_total", "alert episodes cleared", ingest.alertsCleared),
            ("dang_decisions_total", "decisions made", decisions.decisions),
            ("dang_decisions_invoked_total", "decisions that invoked a module", decisions.invoked),
            ("dang_decisions_skipped_total", "decisions that skipped", decisions.skipped),
            ("dang_invocation_results_total", "module results received", decisions.results),
            ("dang_invocation_timeouts_total", "invocations timed out", decisions.timeouts),
            ("dang_invocation_retries_total", "invocations delivered again", decisions.retries),
            ("dang_llm_calls_total", "LLM calls", llm?.calls ?? 0),
            ("dang_llm_failures_total", "LLM calls without a usable answer", llm?.failures ?? 0),
            ("dang_llm_cache_hits_total", "LLM answers from the cache", llm?.cacheHits ?? 0),
            ("dang_tags_evicted_total", "idle tags outside the topic map forgotten (ingest.evict_idle_after)", ingest.evictedTags),
            ("dang_record_corrupt_bytes_total", "spool bytes skipped as corrupt and moved aside", record.corruptBytesSkipped),
            ("dang_database_pool_refused_total", "reads and operator actions refused: the database pool's queue was full", o.databasePool.refused),
            ("dang_approvals_refused_total", "approval messages without an explicit {\"approve\": true|false}", decisions.refusedApprovals),
        ]
        self.previous.withLock { previous in
            for (name, help, value) in totals {
                let delta = value - (previous[name] ?? 0)
                if delta > 0 { self.registry.makeCounter(name: name, help: help).increment(by: Int64(delta)) }
                else if previous[name] == nil { _ = self.registry.makeCounter(name: name, help: help) }
                previous[name] = value
            }
        }
        // Refusals by reason: one labelled counter per reason seen.
        var byReason = ingest.rejected.map { ($0.key.rawValue, $0.value) }
        byReason += [("unknown_topic", ingest.unknownTopics), ("tag_limit", ingest.tagLimitRejections)]
        self.previous.withLock { previous in
            for (reason, value) in byReason {
                let key = "dang_ingest_rejected_reason_total|" + reason
                let delta = value - (previous[key] ?? 0)
                if delta > 0 {
                    self.registry.makeCounter(name: "dang_ingest_rejected_reason_total", labels: [("reason", reason)], help: "messages and samples refused, by reason")
                        .increment(by: Int64(delta))
                }
                previous[key] = value
            }
        }
        self.registry.makeGauge(name: "dang_open_invocations", help: "invocations not finished").set(to: Double(o.coordinator.activeInvocations.count))
        self.registry.makeGauge(name: "dang_mqtt_connected", help: "1 while connected to the broker").set(to: o.connectionStatus.connected ? 1 : 0)
        self.registry.makeGauge(name: "dang_database_connected", help: "1 while the record writer is connected").set(to: record.connected ? 1 : 0)
        self.registry.makeGauge(name: "dang_tags", help: "tags seen").set(to: Double(ingest.tags))
        return self.registry.emitToBuffer()
    }
}
