package import Hummingbird
import NIOCore
package import NIOSSL
import Prometheus
import Synchronization

/// What authentication needs to know of a request's connection.
package protocol APIConnectionContext: RequestContext {
    /// The peer's IP address: failed authentications are counted per address.
    var clientAddress: String { get }
    /// The client certificate the TLS handshake verified, if any.
    func peerCertificate() async -> NIOSSLCertificate?
}

/// A request's context: Hummingbird's core, and the connection it came on.
package struct APIRequestContext: APIConnectionContext {
    package var coreContext: CoreRequestContextStorage
    let channel: any Channel

    package init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.channel = source.channel
    }

    package var clientAddress: String { self.channel.remoteAddress?.ipAddress ?? "unknown" }

    package func peerCertificate() async -> NIOSSLCertificate? {
        try? await self.channel.nioSSL_peerCertificate().get()
    }
}

/// Paths anyone may GET (a generic type has no stored static properties).
private let openPaths: Set<String> = ["/status", "/metrics", "/livez", "/readyz", "/console", "/console.js", "/console.css"]

/// Who may do what: a bearer token (`operate` may do everything, `read` may GET) or, over TLS, a
/// client certificate that `api.tls.client_roles` maps to a role; `/status`, `/metrics` and the
/// probes `/livez` and `/readyz` are open. A client address that keeps presenting wrong tokens is
/// refused (429) for the rest of the minute. Over TLS every answer carries
/// Strict-Transport-Security.
struct APIAuthentication<Context: APIConnectionContext>: RouterMiddleware {
    let operate: String?
    let read: String?
    let certificates: APICertificates?
    let limiter: FailedAuthLimiter

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        var response = try await self.authenticate(request, context: context, next: next)
        if self.certificates != nil { response.headers[.strictTransportSecurity] = "max-age=31536000" }
        return response
    }

    private func authenticate(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        if request.method == .get && openPaths.contains(request.uri.path) { return try await next(request, context) }
        let address = context.clientAddress
        if let wait = self.limiter.refusal(address) {
            var response = APIServer.error(.tooManyRequests, "too many failed authentications from this address; try again later")
            response.headers[.retryAfter] = String(wait)
            return response
        }
        let role: APIRole
        if let header = request.headers[.authorization] {
            guard header.hasPrefix("Bearer ") else { return self.failed(address, "the Authorization header must be Bearer <token>") }
            let token = Array(header.dropFirst(7).utf8)
            if let operate, Self.equal(token, Array(operate.utf8)) {
                role = .operate
            } else if let read, Self.equal(token, Array(read.utf8)) {
                role = .read
            } else {
                return self.failed(address, "unknown token")
            }
        } else if let certificateRole = await self.certificateRole(context) {
            role = certificateRole
        } else {
            return APIServer.error(.unauthorized, "a bearer token is required")
        }
        guard role == .operate || request.method == .get else { return APIServer.error(.forbidden, "the read role may only GET") }
        return try await next(request, context)
    }

    /// The role of the connection's verified client certificate, if `client_roles` names it.
    private func certificateRole(_ context: Context) async -> APIRole? {
        guard let certificates, !certificates.settings.clientRoles.isEmpty, let certificate = await context.peerCertificate() else { return nil }
        return certificates.role(of: certificate)
    }

    private func failed(_ address: String, _ message: String) -> Response {
        self.limiter.recordFailure(address)
        return APIServer.error(.unauthorized, message)
    }

    /// Compares without stopping at the first difference (no timing hint about the token).
    static func equal(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for index in a.indices { difference |= a[index] ^ b[index] }
        return difference == 0
    }
}

/// Failed authentications per client address, in windows of a minute that start at an address's
/// first failure: past `limit` in its window, the address is refused until the window ends. At
/// most `capacity` addresses are remembered (ended windows are forgotten first), so a scan from
/// many addresses costs bounded memory.
package final class FailedAuthLimiter: Sendable {
    private struct Window {
        var start: ContinuousClock.Instant
        var failures: Int
    }

    private let limit: Int
    private let window: Duration
    private let capacity: Int
    private let windows = Mutex<[String: Window]>([:])
    private let failures: Prometheus.Counter
    private let refused: Prometheus.Counter

    package init(limit: Int, window: Duration = .seconds(60), capacity: Int = 10_000, metrics: MetricsExporter) {
        self.limit = limit
        self.window = window
        self.capacity = capacity
        self.failures = metrics.counter("dang_api_auth_failures_total", help: "API requests with a wrong token")
        self.refused = metrics.counter(
            "dang_api_auth_refused_total", help: "API requests refused (429) from an address past api.failed_auth_per_minute")
    }

    /// Seconds until this address may try again, or nil when it may now.
    func refusal(_ address: String, now: ContinuousClock.Instant = .now) -> Int? {
        let wait: Duration? = self.windows.withLock { windows in
            guard let entry = windows[address], entry.failures >= self.limit else { return nil }
            let end = entry.start.advanced(by: self.window)
            return end > now ? now.duration(to: end) : nil
        }
        guard let wait else { return nil }
        self.refused.increment()
        return max(1, Int(wait.components.seconds) + 1)
    }

    func recordFailure(_ address: String, now: ContinuousClock.Instant = .now) {
        self.failures.increment()
        self.windows.withLock { windows in
            if var entry = windows[address], entry.start.advanced(by: self.window) > now {
                entry.failures += 1
                windows[address] = entry
                return
            }
            if windows.count >= self.capacity {
                windows = windows.filter { $0.value.start.advanced(by: self.window) > now }
                if windows.count >= self.capacity, let any = windows.first?.key { windows[any] = nil }
            }
            windows[address] = Window(start: now, failures: 1)
        }
    }
}
