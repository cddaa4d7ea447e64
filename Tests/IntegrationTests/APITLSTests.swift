import Curl
import Foundation
import Testing

@testable import DangTools
@testable import OrchestratorCore

/// The HTTP API over TLS (`api.tls`), with certificates made for the test by openssl and a real
/// running orchestrator, called over libcurl (and the curl program for the TLS version floor).
@Suite(.serialized, .timeLimit(.minutes(3)))
struct APITLSTests {
    /// Two CAs; server certificates for 127.0.0.1 (a good one, an expired one, one from the other
    /// CA for rotation); client certificates: a historian (by SAN), a viewer (by subject), a
    /// stranger nobody mapped, one from the other CA and an expired one.
    static func makePKI() throws -> TestPKI {
        try TestPKI(
            """
            openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=dang test CA" -keyout ca.key -out ca.pem 2>/dev/null
            openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=other CA" -keyout other-ca.key -out other-ca.pem 2>/dev/null
            issue() {  # name, CA, days, subject, SAN
              openssl req -newkey rsa:2048 -nodes -subj "$4" -keyout $1.key -out $1.csr 2>/dev/null
              printf "subjectAltName=$5\\n" > $1.ext
              openssl x509 -req -in $1.csr -CA $2.pem -CAkey $2.key -CAcreateserial -days $3 -extfile $1.ext -out $1.pem 2>/dev/null
            }
            issue server ca 2 "/CN=127.0.0.1" "IP:127.0.0.1,DNS:localhost"
            issue expired ca -1 "/CN=127.0.0.1" "IP:127.0.0.1,DNS:localhost"
            issue rotated other-ca 2 "/CN=127.0.0.1" "IP:127.0.0.1,DNS:localhost"
            issue historian ca 2 "/O=Refinery/CN=historian" "DNS:historian.plant.local"
            issue viewer ca 2 "/O=Refinery/CN=control room" "DNS:cr1.plant.local"
            issue stranger ca 2 "/CN=stranger" "DNS:stranger.example"
            issue foreign other-ca 2 "/O=Refinery/CN=historian" "DNS:historian.plant.local"
            issue lapsed ca -1 "/O=Refinery/CN=historian" "DNS:historian.plant.local"
            """)
    }

    static func config(_ pki: TestPKI, certificate: String = "server", clientAuth: APISettings.TLSSettings.ClientAuth = .none) async throws -> OrchestratorConfig {
        var config = APITests.config(prefix: "it-https", database: try await TestServices.freshDatabase())
        var tls = APISettings.TLSSettings(certFile: pki.path("\(certificate).pem"), keyFile: pki.path("\(certificate).key"))
        tls.clientAuth = clientAuth
        if clientAuth != .none {
            tls.caFile = pki.path("ca.pem")
            tls.clientRoles = [
                .init(match: .san("historian.plant.local"), role: .operate),
                .init(match: .subject("CN=control room,O=Refinery"), role: .read),
            ]
        }
        config.api.tls = tls
        return config
    }

    /// One call over HTTPS to the orchestrator's API.
    struct Call {
        var ca = "ca.pem"
        var client: String? = nil
        var token: String? = nil
        var method = "GET"
        var scheme = "https"

        func perform(_ pki: TestPKI, port: Int, _ path: String) async -> Result<Curl.HTTPResponse, HTTPFailure> {
            var request = HTTPRequest(url: "\(self.scheme)://127.0.0.1:\(port)\(path)")
            request.method = self.method
            request.totalTimeout = .seconds(10)
            request.caFile = pki.path(self.ca)
            if let client = self.client {
                request.certFile = pki.path("\(client).pem")
                request.keyFile = pki.path("\(client).key")
            }
            if let token = self.token { request.headers.append("Authorization: Bearer \(token)") }
            if self.method == "POST" { request.headers.append("Content-Type: application/json") }
            return await performOffThePool(request)
        }

        func status(_ pki: TestPKI, port: Int, _ path: String) async -> Int? {
            guard case .success(let response) = await self.perform(pki, port: port, path) else { return nil }
            return response.status
        }
    }

    func running(_ config: OrchestratorConfig, _ body: @Sendable (Orchestrator, Int) async throws -> Void) async throws {
        let orchestrator = try Orchestrator(config: config, logger: testLogger)
        try await withRunningOrchestrator(orchestrator) {
            try await eventually("API listening", timeout: .seconds(30)) { orchestrator.apiListeningPort > 0 }
            try await body(orchestrator, orchestrator.apiListeningPort)
        }
    }

    @Test func `HTTPS with the right CA answers, with Strict-Transport-Security; a wrong CA, an expired certificate or plain HTTP fail`() async throws {
        let pki = try Self.makePKI()
        try await self.running(try await Self.config(pki)) { _, port in
            guard case .success(let status) = await Call().perform(pki, port: port, "/status") else {
                Issue.record("HTTPS with the right CA failed")
                return
            }
            #expect(status.status == 200)
            #expect(status.headers["strict-transport-security"] == "max-age=31536000")
            #expect(await Call(token: APITests.operate).status(pki, port: port, "/alerts") == 200)
            #expect(await Call(token: "wrong").status(pki, port: port, "/alerts") == 401)
            guard case .success(let metrics) = await Call().perform(pki, port: port, "/metrics") else {
                Issue.record("no metrics over HTTPS")
                return
            }
            #expect(String(decoding: metrics.body, as: UTF8.self).contains("dang_api_auth_failures_total 1"))
            guard case .failure(.connect) = await Call(ca: "other-ca.pem").perform(pki, port: port, "/status") else {
                Issue.record("a server certificate from a CA the client does not trust was accepted")
                return
            }
            // Plain HTTP to the TLS port gets no answer.
            #expect(await Call(scheme: "http").status(pki, port: port, "/status") == nil)
        }
        try await self.running(try await Self.config(pki, certificate: "expired")) { _, port in
            guard case .failure(.connect) = await Call().perform(pki, port: port, "/status") else {
                Issue.record("an expired server certificate was accepted")
                return
            }
        }
    }

    @Test func `client_auth require: no connection without a certificate from the CA; certificates map to roles by SAN or subject`() async throws {
        let pki = try Self.makePKI()
        try await self.running(try await Self.config(pki, clientAuth: .require)) { _, port in
            let alert = "/alerts/\(UUID().uuidString.lowercased())/ack"
            // No certificate, one from another CA, an expired one: no TLS connection at all.
            for client in [nil, "foreign", "lapsed"] {
                #expect(await Call(client: client, token: APITests.operate).status(pki, port: port, "/status") == nil, "\(client ?? "none")")
            }
            // The historian (by SAN) operates without a token: the unknown alert is a 404, not a 401.
            #expect(await Call(client: "historian", method: "POST").status(pki, port: port, alert) == 404)
            // The control room (by subject) reads, and may not act.
            #expect(await Call(client: "viewer").status(pki, port: port, "/alerts") == 200)
            #expect(await Call(client: "viewer", method: "POST").status(pki, port: port, alert) == 403)
            // A stranger's valid certificate stands for nobody: it needs a token like anyone.
            #expect(await Call(client: "stranger").status(pki, port: port, "/alerts") == 401)
            #expect(await Call(client: "stranger", token: APITests.read).status(pki, port: port, "/alerts") == 200)
            // A token still counts over a certificate that maps to less.
            #expect(await Call(client: "viewer", token: APITests.operate, method: "POST").status(pki, port: port, alert) == 404)
        }
    }

    @Test func `client_auth optional: a client without a certificate connects and needs a token; one with a certificate needs none`() async throws {
        let pki = try Self.makePKI()
        try await self.running(try await Self.config(pki, clientAuth: .optional)) { _, port in
            #expect(await Call().status(pki, port: port, "/status") == 200)
            #expect(await Call().status(pki, port: port, "/alerts") == 401)
            #expect(await Call(token: APITests.read).status(pki, port: port, "/alerts") == 200)
            #expect(await Call(client: "viewer").status(pki, port: port, "/alerts") == 200)
            // A certificate presented must still be valid.
            #expect(await Call(client: "foreign").status(pki, port: port, "/alerts") == nil)
        }
    }

    @Test func `the certificate rotates on reload without the listener closing; a broken file keeps the pair in use`() async throws {
        let pki = try Self.makePKI()
        // The orchestrator reads server.pem/server.key; the rotation overwrites them in place.
        let config = try await Self.config(pki)
        try await self.running(config) { orchestrator, port in
            #expect(await Call().status(pki, port: port, "/status") == 200)
            #expect(await Call(ca: "other-ca.pem").status(pki, port: port, "/status") == nil)
            // A half-written certificate: refused, the old pair still served.
            try Data("-----BEGIN CERTIFICATE-----\ntruncated".utf8).write(to: URL(fileURLWithPath: pki.path("server.pem")))
            #expect(!orchestrator.reloadCertificates())
            #expect(await Call().status(pki, port: port, "/status") == 200)
            // The new pair, from the other CA: new connections present it.
            try FileManager.default.removeItem(atPath: pki.path("server.pem"))
            try FileManager.default.removeItem(atPath: pki.path("server.key"))
            try FileManager.default.copyItem(atPath: pki.path("rotated.pem"), toPath: pki.path("server.pem"))
            try FileManager.default.copyItem(atPath: pki.path("rotated.key"), toPath: pki.path("server.key"))
            #expect(orchestrator.reloadCertificates())
            #expect(await Call(ca: "other-ca.pem").status(pki, port: port, "/status") == 200)
            #expect(await Call().status(pki, port: port, "/status") == nil)
            #expect(orchestrator.apiListeningPort == port)
        }
    }

    @Test func `min_version 1.3 refuses a TLS 1.2 client`() async throws {
        let pki = try Self.makePKI()
        var config = try await Self.config(pki)
        config.api.tls?.minVersion = "1.3"
        try await self.running(config) { _, port in
            func curl(_ version: [String]) async -> Int32 {
                let arguments = ["/usr/bin/curl", "-sS", "-o", "/dev/null", "--cacert", pki.path("ca.pem")] + version + ["https://127.0.0.1:\(port)/status"]
                return await offThePool { (try? ChildProcess.run(arguments))?.status ?? -1 }
            }
            let modern = await curl(["--tlsv1.3"])
            let old = await curl(["--tlsv1.2", "--tls-max", "1.2"])
            #expect(modern == 0)
            #expect(old != 0)
        }
    }

    @Test func `plain HTTP on an address other than loopback is refused unless allow_plaintext says so`() throws {
        var config = APITests.config(prefix: "it-https", database: "postgresql://unused")
        config.api.host = "0.0.0.0"
        #expect {
            _ = try Orchestrator(config: config, logger: testLogger)
        } throws: { error in
            "\(error)".contains("api.allow_plaintext") && "\(error)".contains("0.0.0.0")
        }
        config.api.allowPlaintext = true
        #expect(config.api.plaintextRefusal == nil)
        config.api.allowPlaintext = false
        for host in ["127.0.0.1", "127.1.2.3", "::1", "localhost"] {
            config.api.host = host
            #expect(config.api.plaintextRefusal == nil, "\(host)")
        }
        for host in ["0.0.0.0", "::", "10.0.0.5", "gateway.plant.local", "127.0.0.1.example"] {
            config.api.host = host
            #expect(config.api.plaintextRefusal != nil, "\(host)")
        }
    }
}
