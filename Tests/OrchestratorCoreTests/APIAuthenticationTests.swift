import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOSSL
import Testing

@testable import OrchestratorCore

/// The API's authentication middleware (`APIAuthentication`) called directly, without a server: a
/// request goes in, and either the next responder's answer (202 here) or the middleware's own
/// refusal comes out. Client certificates are tested over real TLS (IntegrationTests/APITLSTests).
@Suite struct APIAuthenticationTests {
    struct TestSource: RequestContextSource {
        let logger: Logger
    }

    struct TestContext: APIConnectionContext {
        typealias Source = TestSource
        var coreContext: CoreRequestContextStorage
        var clientAddress = "192.0.2.1"

        init(source: TestSource) {
            self.coreContext = .init(source: source)
        }

        func peerCertificate() async -> NIOSSLCertificate? { nil }
    }

    static let operate = "operate-0123456789abcdef"
    static let read = "read-0123456789abcdef"

    /// What the middleware answers for `method path` with this `Authorization` header (nil: none).
    func status(
        _ method: HTTPRequest.Method, _ path: String, authorization: String?,
        operate: String? = APIAuthenticationTests.operate, read: String? = APIAuthenticationTests.read, from address: String = "192.0.2.1",
        limiter: FailedAuthLimiter = FailedAuthLimiter(limit: 1000, metrics: MetricsExporter())
    ) async throws -> HTTPResponse.Status {
        var fields = HTTPFields()
        if let authorization { fields[.authorization] = authorization }
        let head = HTTPRequest(method: method, scheme: "http", authority: "127.0.0.1", path: path, headerFields: fields)
        let request = Request(head: head, body: RequestBody(buffer: ByteBuffer()))
        var context = TestContext(source: TestSource(logger: Logger(label: "test")))
        context.clientAddress = address
        let auth = APIAuthentication<TestContext>(operate: operate, read: read, certificates: nil, limiter: limiter)
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
        "bearer \(APIAuthenticationTests.operate)",  // the scheme is matched as written
        "BEARER \(APIAuthenticationTests.operate)",
        "Basic \(APIAuthenticationTests.operate)",
        "Token \(APIAuthenticationTests.operate)",
        "Bearer  \(APIAuthenticationTests.operate)",  // two spaces: the token would start with one
        "Bearer\t\(APIAuthenticationTests.operate)",
        "\(APIAuthenticationTests.operate)",  // the token alone
        "Bearer \(APIAuthenticationTests.operate), Bearer \(APIAuthenticationTests.read)",
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
        typealias Auth = APIAuthentication<TestContext>
        #expect(Auth.equal(Array("abc".utf8), Array("abc".utf8)))
        #expect(Auth.equal([], []))
        #expect(!Auth.equal(Array("abc".utf8), Array("abd".utf8)))
        #expect(!Auth.equal(Array("abc".utf8), Array("xbc".utf8)))
        #expect(!Auth.equal(Array("abc".utf8), Array("ab".utf8)))
        #expect(!Auth.equal(Array("ab".utf8), Array("abc".utf8)))
        #expect(!Auth.equal(Array("é".utf8), Array("e".utf8)))
        #expect(!Auth.equal([0x00], [0x80]))
    }

    @Test func `an address past its failed authentications is refused for the rest of the minute, others are not`() async throws {
        let limiter = FailedAuthLimiter(limit: 3, metrics: MetricsExporter())
        for _ in 0..<3 {
            #expect(try await self.status(.get, "/decisions", authorization: "Bearer guess", limiter: limiter) == .unauthorized)
        }
        // Even the right token waits: a guesser cannot tell a hit from the refusal.
        #expect(try await self.status(.get, "/decisions", authorization: "Bearer \(Self.operate)", limiter: limiter) == .tooManyRequests)
        #expect(try await self.status(.get, "/decisions", authorization: nil, limiter: limiter) == .tooManyRequests)
        // The open paths stay open; another address is not affected.
        #expect(try await self.status(.get, "/readyz", authorization: nil, limiter: limiter) == .accepted)
        #expect(
            try await self.status(.get, "/decisions", authorization: "Bearer \(Self.operate)", from: "192.0.2.9", limiter: limiter) == .accepted)
        // A missing token is not a guess: it is not counted.
        let fresh = FailedAuthLimiter(limit: 1, metrics: MetricsExporter())
        for _ in 0..<3 { #expect(try await self.status(.get, "/decisions", authorization: nil, limiter: fresh) == .unauthorized) }
        #expect(try await self.status(.get, "/decisions", authorization: "Bearer \(Self.operate)", limiter: fresh) == .accepted)
    }

    @Test func `the refusal ends with its minute, and the limiter forgets ended windows when full`() {
        let limiter = FailedAuthLimiter(limit: 2, capacity: 2, metrics: MetricsExporter())
        let start = ContinuousClock.now
        limiter.recordFailure("a", now: start)
        #expect(limiter.refusal("a", now: start) == nil)
        limiter.recordFailure("a", now: start.advanced(by: .seconds(1)))
        #expect(limiter.refusal("a", now: start.advanced(by: .seconds(2))) == 59)
        #expect(limiter.refusal("a", now: start.advanced(by: .seconds(61))) == nil)
        // A new window after the old one ended.
        limiter.recordFailure("a", now: start.advanced(by: .seconds(61)))
        #expect(limiter.refusal("a", now: start.advanced(by: .seconds(62))) == nil)
        // Full: "b" and then "c" still get a window of their own.
        limiter.recordFailure("b", now: start.advanced(by: .seconds(62)))
        limiter.recordFailure("c", now: start.advanced(by: .seconds(62)))
        limiter.recordFailure("c", now: start.advanced(by: .seconds(63)))
        #expect(limiter.refusal("c", now: start.advanced(by: .seconds(64))) != nil)
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
