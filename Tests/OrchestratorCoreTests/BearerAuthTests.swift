import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import Testing

@testable import OrchestratorCore

/// The API's bearer-token middleware (`BearerAuth` in APIServer.swift) called directly, without a
/// server: a request goes in, and either the next responder's answer (202 here) or the
/// middleware's own refusal comes out.
@Suite struct BearerAuthTests {
    struct TestSource: RequestContextSource {
        let logger: Logger
    }

    struct TestContext: RequestContext {
        typealias Source = TestSource
        var coreContext: CoreRequestContextStorage

        init(source: TestSource) {
            self.coreContext = .init(source: source)
        }
    }

    static let operate = "operate-0123456789abcdef"
    static let read = "read-0123456789abcdef"

    /// What the middleware answers for `method path` with this `Authorization` header (nil: none).
    func status(
        _ method: HTTPRequest.Method, _ path: String, authorization: String?,
        operate: String? = BearerAuthTests.operate, read: String? = BearerAuthTests.read
    ) async throws -> HTTPResponse.Status {
        var fields = HTTPFields()
        if let authorization { fields[.authorization] = authorization }
        let head = HTTPRequest(method: method, scheme: "http", authority: "127.0.0.1", path: path, headerFields: fields)
        let request = Request(head: head, body: RequestBody(buffer: ByteBuffer()))
        let context = TestContext(source: TestSource(logger: Logger(label: "test")))
        let auth = BearerAuth<TestContext>(operate: operate, read: read)
        let response = try await auth.handle(request, context: context) { _, _ in Response(status: .accepted) }
        return response.status
    }

    @Test(arguments: [HTTPRequest.Method.get, .post])
    func `the operate token may do everything`(method: HTTPRequest.Method) async throws {
        #expect(try await self.status(method, "/decisions", authorization: "Bearer \(Self.operate)") == .accepted)
        #expect(try await self.status(method, "/invoke/forecasting", authorization: "Bearer \(Self.operate)") == .accepted)
    }

    @Test func `the read token may GET, and is forbidden anything else`() async throws {
        #expect(try await self.status(.get, "/alerts", authorization: "Bearer \(Self.read)") == .accepted)
        #expect(try await self.status(.post, "/alerts/x/ack", authorization: "Bearer \(Self.read)") == .forbidden)
        #expect(try await self.status(.put, "/alerts", authorization: "Bearer \(Self.read)") == .forbidden)
        #expect(try await self.status(.delete, "/alerts", authorization: "Bearer \(Self.read)") == .forbidden)
    }

    @Test func `an unknown token is unauthorised: another value, a prefix, one byte off, a longer one`() async throws {
        let oneOff = String(Self.operate.dropLast()) + "g"
        for token in ["nope", String(Self.operate.dropLast()), oneOff, Self.operate + "0", Self.operate + Self.read] {
            #expect(try await self.status(.get, "/decisions", authorization: "Bearer \(token)") == .unauthorized, "\(token)")
        }
    }

    @Test func `a missing Authorization header is unauthorised`() async throws {
        #expect(try await self.status(.get, "/decisions", authorization: nil) == .unauthorized)
        #expect(try await self.status(.post, "/orchestrate", authorization: nil) == .unauthorized)
    }

    @Test(arguments: [
        "Bearer",  // no token
        "Bearer ",  // HTTP drops the trailing space: the same as "Bearer"
        "bearer \(BearerAuthTests.operate)",  // the scheme is matched as written
        "BEARER \(BearerAuthTests.operate)",
        "Basic \(BearerAuthTests.operate)",
        "Token \(BearerAuthTests.operate)",
        "Bearer  \(BearerAuthTests.operate)",  // two spaces: the token would start with one
        "Bearer\t\(BearerAuthTests.operate)",
        "\(BearerAuthTests.operate)",  // the token alone
        "Bearer \(BearerAuthTests.operate), Bearer \(BearerAuthTests.read)",
    ])
    func `a malformed Authorization header is unauthorised`(header: String) async throws {
        #expect(try await self.status(.get, "/decisions", authorization: header) == .unauthorized)
        #expect(try await self.status(.post, "/invoke/etl", authorization: header) == .unauthorized)
    }

    @Test func `status, metrics and the probes are open to GET only`() async throws {
        for path in ["/status", "/metrics", "/livez", "/readyz"] {
            #expect(try await self.status(.get, path, authorization: nil) == .accepted, "\(path)")
            #expect(try await self.status(.post, path, authorization: nil) == .unauthorized, "\(path)")
        }
        #expect(try await self.status(.get, "/status?verbose=1", authorization: "Basic x") == .accepted)
        #expect(try await self.status(.post, "/status", authorization: nil) == .unauthorized)
        #expect(try await self.status(.get, "/status/more", authorization: nil) == .unauthorized)
        #expect(try await self.status(.get, "/", authorization: nil) == .unauthorized)
    }

    @Test func `without tokens configured only status and metrics answer`() async throws {
        let header = "Bearer \(Self.operate)"
        #expect(try await self.status(.get, "/decisions", authorization: header, operate: nil, read: nil) == .unauthorized)
        #expect(try await self.status(.get, "/status", authorization: nil, operate: nil, read: nil) == .accepted)
    }

    @Test func `with only a read token, the read token reads and nothing operates`() async throws {
        let read = "Bearer \(Self.read)"
        #expect(try await self.status(.get, "/decisions", authorization: read, operate: nil) == .accepted)
        #expect(try await self.status(.post, "/orchestrate", authorization: read, operate: nil) == .forbidden)
        #expect(try await self.status(.post, "/orchestrate", authorization: "Bearer \(Self.operate)", operate: nil) == .unauthorized)
    }

    @Test func `when both roles share a token it operates`() async throws {
        let same = "Bearer shared-token"
        #expect(try await self.status(.post, "/orchestrate", authorization: same, operate: "shared-token", read: "shared-token") == .accepted)
    }

    @Test func `the comparison is exact over bytes and lengths`() {
        typealias Auth = BearerAuth<TestContext>
        #expect(Auth.equal(Array("abc".utf8), Array("abc".utf8)))
        #expect(Auth.equal([], []))
        #expect(!Auth.equal(Array("abc".utf8), Array("abd".utf8)))
        #expect(!Auth.equal(Array("abc".utf8), Array("xbc".utf8)))
        #expect(!Auth.equal(Array("abc".utf8), Array("ab".utf8)))
        #expect(!Auth.equal(Array("ab".utf8), Array("abc".utf8)))
        #expect(!Auth.equal(Array("é".utf8), Array("e".utf8)))
        #expect(!Auth.equal([0x00], [0x80]))
    }

    /// Readiness from the status: the broker, the database and a spool with room (the reasons are
    /// what `GET /readyz` answers with its 503).
    @Test func `readiness says why an instance is not ready`() {
        var snapshot = StatusSnapshot(
            startedAt: Date(), mqttConnected: true, mqttConnects: 1, mqttLastError: nil, droppedWhileAway: 0,
            record: RecordWriter.Counters(), poolRefused: 0, ingest: IngestCounters(), units: [], modules: [:],
            decisions: CoordinatorStateMachine.Counters(), openInvocations: 0, llm: .init(active: false, provider: "deepseek", model: "m", counters: nil),
            shelvedAlerts: 0, refusedAcknowledgements: 0)
        snapshot.record.connected = true
        snapshot.spoolCapacityBytes = 1000
        #expect(snapshot.notReadyReasons.isEmpty)
        snapshot.record.spooledBytes = 900
        #expect(snapshot.notReadyReasons.isEmpty)
        snapshot.record.spooledBytes = 901
        #expect(snapshot.notReadyReasons == ["the spool holds 901 of its 1000 bytes (over 90 %)"])
        snapshot.record.spooledBytes = 0
        snapshot.mqttConnected = false
        snapshot.mqttLastError = "connection refused"
        snapshot.record.connected = false
        #expect(snapshot.notReadyReasons == [
            "the MQTT broker is not connected (connection refused)", "the database is not connected (records are spooled)",
        ])
    }
}
