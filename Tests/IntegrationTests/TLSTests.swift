import Foundation
import Mosquitto
import Testing

@testable import DangTools
@testable import OrchestratorCore

/// A broker that demands TLS 1.3 and a client certificate, with certificates made for the test by
/// openssl: the orchestrator connects with the right ones, and is refused with a wrong CA or a
/// certificate naming another host (hostname verification is on by default).
@Suite(.timeLimit(.minutes(2)))
struct TLSTests {
    /// CA, broker certificate for 127.0.0.1 (and one for another host), client certificate.
    static func makePKI() throws -> TestPKI {
        try TestPKI(
            """
            openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=dang test CA" -keyout ca.key -out ca.pem 2>/dev/null
            openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=other CA" -keyout other-ca.key -out other-ca.pem 2>/dev/null
            issue() {
              openssl req -newkey rsa:2048 -nodes -subj "/CN=$2" -keyout $1.key -out $1.csr 2>/dev/null
              printf "subjectAltName=$3\\n" > $1.ext
              openssl x509 -req -in $1.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile $1.ext -out $1.pem 2>/dev/null
            }
            issue broker 127.0.0.1 IP:127.0.0.1
            issue wronghost plant-broker.example DNS:plant-broker.example
            issue client dang-orchestrator DNS:dang-orchestrator
            chmod 644 *.key
            """)
    }

    func broker(_ pki: TestPKI, certificate: String) throws -> PrivateBroker {
        try PrivateBroker(
            extra: """
                require_certificate true
                cafile \(pki.path("ca.pem"))
                certfile \(pki.path("\(certificate).pem"))
                keyfile \(pki.path("\(certificate).key"))
                tls_version tlsv1.3

                """)
    }

    func config(_ port: Int, pki: TestPKI, ca: String = "ca.pem") async throws -> OrchestratorConfig {
        var config = TestServices.config(prefix: "it-tls", databaseURL: try await TestServices.freshDatabase(), topicMap: LivePathTests.shippedMap)
        config.mqtt.endpoint = MQTTEndpoint(host: "127.0.0.1", port: port, tls: true)
        config.mqtt.tls.caFile = pki.path(ca)
        config.mqtt.tls.certFile = pki.path("client.pem")
        config.mqtt.tls.keyFile = pki.path("client.key")
        config.mqtt.tls.version = "tlsv1.3"
        return config
    }

    @Test func `TLS 1.3 with a client certificate connects; a wrong CA or a certificate for another host is refused`() async throws {
        let pki = try Self.makePKI()
        let good = try self.broker(pki, certificate: "broker")
        try good.start()
        try await good.waitUntilListening()
        let orchestrator = try Orchestrator(config: try await self.config(good.port, pki: pki), logger: testLogger)
        try await withRunningOrchestrator(orchestrator) {
            try await eventually("connected over TLS", timeout: .seconds(30)) { orchestrator.connectionStatus.connected }
        }
        // Signed by a CA we do not trust.
        let untrusted = try Orchestrator(config: try await self.config(good.port, pki: pki, ca: "other-ca.pem"), logger: testLogger)
        try await withRunningOrchestrator(untrusted) {
            try await eventually("refused", timeout: .seconds(30)) { untrusted.connectionStatus.lastError != nil }
            try await Task.sleep(for: .milliseconds(500))
            #expect(!untrusted.connectionStatus.connected)
        }
        good.stop()
        // A valid certificate, but for another host name.
        let impostor = try self.broker(pki, certificate: "wronghost")
        try impostor.start()
        try await impostor.waitUntilListening()
        let careful = try Orchestrator(config: try await self.config(impostor.port, pki: pki), logger: testLogger)
        try await withRunningOrchestrator(careful) {
            try await eventually("refused", timeout: .seconds(30)) { careful.connectionStatus.lastError != nil }
            try await Task.sleep(for: .milliseconds(500))
            #expect(!careful.connectionStatus.connected)
        }
        impostor.stop()
    }
}
