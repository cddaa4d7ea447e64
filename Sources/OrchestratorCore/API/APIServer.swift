package import Foundation
package import Hummingbird
import HummingbirdTLS
package import Logging
import NIOCore
import Synchronization

/// The HTTP front door (Hummingbird 2): status, metrics, manual invocations, approvals, the
/// decision record, alert management and questions to the advisor (`docs/api.md`,
/// `docs/openapi.yaml`). A thin face: it reads a ``StatusSnapshot`` and the record, and acts only
/// through ``OperatorActions`` — the same coordinator, validation and record as MQTT.
package struct APIServer: Sendable {
    let settings: APISettings
    let status: any StatusSource
    let actions: any OperatorActions
    let reader: RecordReader
    let metrics: MetricsExporter
    let certificates: APICertificates?
    let limiter: FailedAuthLimiter
    /// `GET /events`.
    let events: EventStream
    let logger: Logger

    package init(
        settings: APISettings, status: any StatusSource, actions: any OperatorActions, reader: RecordReader, metrics: MetricsExporter,
        certificates: APICertificates? = nil, events: EventStream = EventStream(), logger: Logger
    ) {
        self.settings = settings
        self.certificates = certificates
        self.events = events
        self.limiter = FailedAuthLimiter(limit: settings.failedAuthPerMinute, metrics: metrics)
        self.status = status
        self.actions = actions
        self.reader = reader
        self.metrics = metrics
        self.logger = logger
    }

    /// The application; `onRunning` receives the port it listens on (for `listen: …:0`). HTTPS
    /// when `api.tls` is set.
    package func application(onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) throws -> some ApplicationProtocol {
        let router = Router(context: APIRequestContext.self)
        router.add(
            middleware: APIAuthentication<APIRequestContext>(
                operate: self.settings.token, read: self.settings.readToken, certificates: self.certificates, limiter: self.limiter))
        // A standby (ha.enabled) reads but does not act: operators act on the active instance.
        router.add(middleware: StandbyRefusal(isStandby: { self.status.role == "standby" }))
        router.get("status") { _, _ in Self.json(.ok, APIResponse.Status(snapshot: self.status.statusSnapshot())) }
        router.get("metrics") { _, _ in self.metricsResponse() }
        // Probes for service managers and load balancers, open like /status: alive while the
        // process answers; ready while the broker and the database are connected and the spool
        // has room (503 with the reasons otherwise).
        router.get("livez") { _, _ in Self.json(.ok, APIResponse.Alive()) }
        // The console's page: static, open (it holds no data; what it shows needs a token).
        router.get("console") { _, _ in Self.asset(PackageResources.console_html, type: "text/html; charset=utf-8") }
        router.get("console.js") { _, _ in Self.asset(PackageResources.console_js, type: "text/javascript; charset=utf-8") }
        router.get("console.css") { _, _ in Self.asset(PackageResources.console_css, type: "text/css; charset=utf-8") }
        router.get("readyz") { _, _ in
            let reasons = self.status.statusSnapshot().notReadyReasons
            return Self.json(reasons.isEmpty ? .ok : .serviceUnavailable, APIResponse.Readiness(ready: reasons.isEmpty, reasons: reasons))
        }
        router.post("invoke/:module") { request, context in try await self.invoke(request, context) }
        router.post("approve/:decision") { request, context in try await self.approve(request, context) }
        router.get("decisions") { request, _ in await self.decisions(request) }
        // Server-sent events: alerts, transitions, service states, and the status every 2 s.
        router.get("events") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
                body: .init(asyncSequence: self.events.subscribe()))
        }
        router.get("alerts") { request, _ in await self.alerts(request) }
        router.get("tags") { request, _ in self.tags(request) }
        router.post("alerts/:id/ack") { request, context in try await self.ack(request, context) }
        router.post("alerts/:id/shelve") { request, context in try await self.shelve(request, context) }
        router.post("alerts/:id/unshelve") { request, context in try await self.unshelve(request, context) }
        router.get("service") { _, _ in await self.fromRecord { APIResponse.OutOfService(outOfService: try await self.actions.outOfServiceTags()) } }
        router.post("service") { request, _ in try await self.service(request) }
        router.post("orchestrate") { request, _ in try await self.orchestrate(request) }
        router.post("reload") { _, _ in self.reload() }
        var logger = self.logger
        logger.logLevel = max(logger.logLevel, .notice)
        return Application(
            router: router,
            server: try self.certificates.map { try .tls(.http1(), tlsConfiguration: $0.serverConfiguration()) } ?? .http1(),
            configuration: .init(address: .hostname(self.settings.host, port: self.settings.port), serverName: "dang/\(DangVersion.current)"),
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? 0) },
            logger: logger)
    }

    /// Sends the status to `GET /events` clients every `interval` (a comment line every 15 s keeps
    /// quiet connections open) until cancelled.
    package func pushStatus(every interval: Duration = .seconds(2)) async {
        var sinceKeepAlive: Duration = .zero
        while (try? await Task.sleep(for: interval)) != nil {
            guard self.events.listeners > 0 else { continue }
            self.events.send("status", Self.encode(APIResponse.Status(snapshot: self.status.statusSnapshot())))
            sinceKeepAlive += interval
            if sinceKeepAlive >= .seconds(15) {
                sinceKeepAlive = .zero
                self.events.keepAlive()
            }
        }
    }

    func metricsResponse() -> Response {
        let text = self.metrics.render(self.status.statusSnapshot())
        return Response(
            status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(bytes: text)))
    }

    // MARK: - Acting

    func invoke(_ request: Request, _ context: APIRequestContext) async throws -> Response {
        guard let name = context.parameters.get("module"), let module = ModuleName(rawValue: name) else {
            return Self.error(.notFound, "unknown module (forecasting, analysis, optimization, etl)")
        }
        guard let parsed = ManualRequest.parse(try await self.body(request)) else {
            return Self.error(.badRequest, "expected a JSON object {\"scope\", \"by\", \"params\": {...}}")
        }
        guard let decision = self.actions.request(module: module, parsed) else {
            return Self.error(.serviceUnavailable, "the module is not configured")
        }
        return Self.json(
            decision.action == .skip ? .conflict : .accepted,
            APIResponse.Invoked(
                decisionID: decision.id.uuidString.lowercased(), module: module.rawValue, action: decision.action.rawValue,
                confidence: decision.confidence, reasons: JSONValue(parsing: Array(decision.reasonsJSON().utf8)) ?? .array([])))
    }

    func approve(_ request: Request, _ context: APIRequestContext) async throws -> Response {
        guard let text = context.parameters.get("decision"), let id = UUID(uuidString: text) else {
            return Self.error(.badRequest, "not a decision id")
        }
        guard let answer = ApprovalRequest.parse(try await self.body(request)) else {
            return Self.error(.badRequest, #"the body must say {"approve": true} or {"approve": false}"#)
        }
        guard self.actions.approve(decision: id, answer) else {
            return Self.error(.notFound, "no decision waiting for approval with this id")
        }
        return Self.json(.ok, APIResponse.Approved(decisionID: id.uuidString.lowercased(), approved: answer.approve))
    }

    /// `POST /reload`: 200 with what was applied and what waits for a restart, or 422 with the
    /// file's errors (the running configuration stays).
    func reload() -> Response {
        let report = self.actions.reload()
        guard report.accepted else {
            return Self.json(
                .unprocessableContent,
                APIResponse.ReloadRefused(
                    error: "the configuration has errors; the running one stays", errors: report.errors, warnings: report.warnings))
        }
        return Self.json(.ok, APIResponse.Reloaded(applied: report.applied, restartNeeded: report.restartNeeded, warnings: report.warnings))
    }

    // MARK: - The record

    func decisions(_ request: Request) async -> Response {
        let q = request.uri.queryParameters
        var query = History.DecisionQuery()
        // A filter that cannot be read is the caller's mistake (400, naming it), never an unfiltered
        // answer and never a database error.
        for (name, keyPath) in [("from", \History.DecisionQuery.from), ("to", \History.DecisionQuery.to)] {
            guard let text = q.get(name) else { continue }
            // Within ±10,000 years of 1970: beyond, PostgreSQL would refuse it as if it were down.
            guard let value = Int64(text), abs(Double(value)) < 3.2e14 else {
                return Self.error(.badRequest, "\(name) must be epoch milliseconds (an integer within ±10,000 years of 1970)")
            }
            query[keyPath: keyPath] = value
        }
        let choices: [(String, WritableKeyPath<History.DecisionQuery, String?>, [String])] = [
            ("module", \.module, ModuleName.allCases.map(\.rawValue)),
            ("trigger_kind", \.triggerKind, TriggerRule.Kind.allCases.map(\.rawValue)),
            ("outcome", \.outcome, InvocationStatus.allCases.map(\.rawValue) + ["none"]),
            ("source", \.source, DecisionSource.allCases.map(\.rawValue)),
        ]
        for (name, keyPath, allowed) in choices {
            guard let text = q.get(name) else { continue }
            guard allowed.contains(text) else { return Self.error(.badRequest, "\(name) must be one of \(allowed.joined(separator: ", "))") }
            query[keyPath: keyPath] = text
        }
        if let limit = q.get("limit") {
            guard let value = Int(limit), (1...1000).contains(value) else { return Self.error(.badRequest, "limit must be 1...1000") }
            query.limit = value
        }
        if let after = q.get("after") {
            guard let cursor = History.Cursor(token: after) else {
                return Self.error(.badRequest, "after must be the next cursor of a previous page, as given")
            }
            query.after = cursor
        }
        if let summary = q.get("summary"), summary != "true" && summary != "false" {
            return Self.error(.badRequest, "summary must be true or false")
        }
        let summary = q.get("summary") == "true"
        return await self.fromRecord {
            let found = try await self.reader.decisions(query, summary: summary)
            return APIResponse.Decisions(
                decisions: found.page.rows.map { APIResponse.Decisions.Row(row: $0) },
                next: found.page.next?.token,
                counts: summary
                    ? found.counts.map { .init(module: $0.module, triggerKind: $0.triggerKind, outcome: $0.outcome, decisions: $0.count) } : nil,
                modules: summary ? found.modules.map { .init(stats: $0) } : nil)
        }
    }

    func alerts(_ request: Request) async -> Response {
        let q = request.uri.queryParameters
        guard let state = AlertListState(rawValue: q.get("state") ?? "active") else {
            return Self.error(.badRequest, "state must be one of " + AlertListState.allCases.map(\.rawValue).joined(separator: ", "))
        }
        let limit = q.get("limit").flatMap { Int($0) } ?? 100
        guard (1...1000).contains(limit) else { return Self.error(.badRequest, "limit must be 1...1000") }
        // `severity=warning,critical`; `unit=r1/cdu/cdu1` (its tags).
        var severities: [AlertSeverity] = []
        if let text = q.get("severity") {
            for name in text.split(separator: ",", omittingEmptySubsequences: false) {
                guard let severity = AlertSeverity(rawValue: String(name)) else {
                    return Self.error(.badRequest, "severity must be info, warning or critical (comma-separated)")
                }
                if !severities.contains(severity) { severities.append(severity) }
            }
        }
        let unit = q.get("unit")
        if let unit, !Self.isTagPath(unit) {
            return Self.error(.badRequest, "unit must be a unit path such as r1/cdu/cdu1 (no trailing /, at most 1024 bytes)")
        }
        return await self.fromRecord {
            APIResponse.Alerts(alerts: try await self.reader.alerts(state: state, limit: limit, severities: severities, unit: unit))
        }
    }

    /// `GET /tags?unit=r1/cdu/cdu1&samples=60`: the tags under a unit or area, with their limits and
    /// newest good samples (the console's plant view).
    func tags(_ request: Request) -> Response {
        let q = request.uri.queryParameters
        guard let unit = q.get("unit"), Self.isTagPath(unit) else {
            return Self.error(.badRequest, "unit must be a unit or area path such as r1/cdu/cdu1")
        }
        let samples = q.get("samples").flatMap { Int($0) } ?? 60
        guard (1...1000).contains(samples) else { return Self.error(.badRequest, "samples must be 1...1000") }
        return Self.json(.ok, APIResponse.Tags(tags: self.status.readings(under: unit, samples: samples), monitor: self.status.unitMonitor(unit)))
    }

    func ack(_ request: Request, _ context: APIRequestContext) async throws -> Response {
        guard let text = context.parameters.get("id"), let id = UUID(uuidString: text) else { return Self.error(.badRequest, "not an alert id") }
        let by = JSONValue(parsing: try await self.body(request))?.string("by", limit: 200)
        do {
            switch try await self.actions.acknowledge(alert: id, by: by) {
            case .done: return Self.json(.ok, APIResponse.Acknowledged(alertID: id.uuidString.lowercased(), acknowledged: true))
            case .already: return Self.error(.conflict, "already acknowledged")
            case .unknown: return Self.error(.notFound, "no such alert")
            }
        } catch {
            return self.recordFailure(error)
        }
    }

    func shelve(_ request: Request, _ context: APIRequestContext) async throws -> Response {
        guard let text = context.parameters.get("id"), let id = UUID(uuidString: text) else { return Self.error(.badRequest, "not an alert id") }
        let body = JSONValue(parsing: try await self.body(request))
        guard let durationText = body?.string("duration"), let duration = YAMLSection.parseDuration(durationText), duration > .zero,
            duration <= .seconds(7 * 86400)
        else { return Self.error(.badRequest, "expected {\"duration\": \"30m\", \"by\": \"name\", \"reason\": \"why\"} with a duration up to 7d") }
        do {
            guard let until = try await self.actions.shelve(alert: id, for: duration, by: body?.string("by", limit: 200), reason: body?.string("reason", limit: 500))
            else { return Self.error(.notFound, "no such alert") }
            return Self.json(.ok, APIResponse.Shelved(alertID: id.uuidString.lowercased(), shelvedUntil: until))
        } catch {
            return self.recordFailure(error)
        }
    }

    func unshelve(_ request: Request, _ context: APIRequestContext) async throws -> Response {
        guard let text = context.parameters.get("id"), let id = UUID(uuidString: text) else { return Self.error(.badRequest, "not an alert id") }
        let body = JSONValue(parsing: try await self.body(request))
        do {
            switch try await self.actions.unshelve(alert: id, by: body?.string("by", limit: 200), reason: body?.string("reason", limit: 500)) {
            case .done: return Self.json(.ok, APIResponse.Unshelved(alertID: id.uuidString.lowercased(), unshelved: true))
            case .already: return Self.error(.conflict, "not shelved")
            case .unknown: return Self.error(.notFound, "no such alert")
            }
        } catch {
            return self.recordFailure(error)
        }
    }

    /// `{"tag", "out_of_service": true|false, "by", "reason"}`.
    func service(_ request: Request) async throws -> Response {
        let body = JSONValue(parsing: try await self.body(request))
        guard let tag = body?.string("tag"), Self.isTagPath(tag), case .bool(let outOfService)? = body?["out_of_service"] else {
            return Self.error(.badRequest, #"expected {"tag": "r1/cdu/cdu1/TI-101", "out_of_service": true|false, "by", "reason"} with a valid tag name"#)
        }
        do {
            guard try await self.actions.setOutOfService(tag: tag, outOfService, by: body?.string("by", limit: 200), reason: body?.string("reason", limit: 500))
            else { return Self.error(.conflict, outOfService ? "already out of service" : "not out of service") }
            return Self.json(.ok, APIResponse.Service(tag: tag, outOfService: outOfService))
        } catch {
            return self.recordFailure(error)
        }
    }

    /// A tag identifier as the topic map and the alerts write it (`r1/cdu/cdu1/TI-101`,
    /// `market/brent`): 1–1024 bytes, levels not empty, no control characters, `+` or `#`.
    static func isTagPath(_ text: String) -> Bool {
        let bytes = text.utf8
        return !bytes.isEmpty && bytes.count <= 1024 && !text.hasPrefix("/") && !text.hasSuffix("/") && !text.contains("//")
            && !bytes.contains { $0 < 0x20 || $0 == 0x7F || $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "#") }
    }

    // MARK: - Questions

    func orchestrate(_ request: Request) async throws -> Response {
        guard case .object(let object)? = JSONValue(parsing: try await self.body(request)), case .string(let question)? = object["question"],
            !question.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, question.count <= 4000
        else { return Self.error(.badRequest, "expected {\"question\": \"...\", \"session_id\": optional} with a question of at most 4000 characters") }
        var session: UUID? = nil
        if case .string(let text)? = object["session_id"] {
            guard let id = UUID(uuidString: text) else { return Self.error(.badRequest, "session_id must be a UUID") }
            session = id
        }
        guard let answer = await self.actions.ask(question, session: session ?? UUID(), continuing: session != nil) else {
            return Self.error(.serviceUnavailable, "the LLM advisor is not configured (orchestrator.llm)")
        }
        return Self.json(answer.ok ? .ok : .badGateway, answer)
    }

    // MARK: - Helpers

    func body(_ request: Request) async throws -> [UInt8] {
        var request = request
        let buffer = try await request.collectBody(upTo: self.settings.maxBodyBytes)
        return Array(buffer.readableBytesView)
    }

    /// A body read from the record. A database that is away is a 503 whose body says only that
    /// (libpq's text, with hosts and users, goes to the log); a full pool queue is a 503 too.
    func fromRecord(_ read: () async throws -> some Encodable) async -> Response {
        do {
            return Self.json(.ok, try await read())
        } catch {
            return self.recordFailure(error)
        }
    }

    func recordFailure(_ error: any Error) -> Response {
        if case RecordReader.Unavailable.busy = error { return Self.error(.serviceUnavailable, "the database is busy; try again") }
        self.logger.warning("API request failed on the database", metadata: ["error": "\(error)"])
        return Self.error(.serviceUnavailable, "the database is unavailable")
    }

    static func json(_ status: HTTPResponse.Status, _ body: some Encodable) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: Self.encode(body))))
    }

    /// A console file, with a policy that lets the page load only itself (no inline script, no other
    /// origin: a hostile string that reached the page could not run).
    static func asset(_ bytes: [UInt8], type: String) -> Response {
        Response(
            status: .ok,
            headers: [
                .contentType: type, .cacheControl: "no-cache",
                .contentSecurityPolicy: "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
                .xContentTypeOptions: "nosniff",
            ],
            body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    /// Compact JSON (one line: also an SSE `data:` field).
    static func encode(_ body: some Encodable) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array((try? encoder.encode(body)) ?? Data("{}".utf8))
    }

    static func error(_ status: HTTPResponse.Status, _ message: String) -> Response {
        Self.json(status, APIResponse.Failure(error: message))
    }
}

/// 503 for every request that would act (`POST`, `/reload` excepted) while this instance stands by.
struct StandbyRefusal<Context: RequestContext>: RouterMiddleware {
    let isStandby: @Sendable () -> Bool

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if request.method == .post, request.uri.path != "/reload", self.isStandby() {
            return APIServer.error(.serviceUnavailable, "this instance is a standby (ha.enabled): act on the active one")
        }
        return try await next(request, context)
    }
}
