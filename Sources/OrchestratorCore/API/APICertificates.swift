package import Foundation
import NIOCore
package import NIOSSL
import Synchronization
import SwiftASN1
import X509

/// The HTTPS listener's identity (`api.tls`): its certificate chain and key, read from their files
/// at start and again on SIGHUP — every new connection presents the current pair, so certificates
/// rotate without the listener closing — and what a client certificate is worth (mTLS roles).
package final class APICertificates: Sendable {
    package let settings: APISettings.TLSSettings
    private let current: Mutex<Identity>

    /// A chain and the key that signs for it, checked to belong together.
    struct Identity: @unchecked Sendable {  // NIOSSL's certificate and key are immutable once read
        let chain: [NIOSSLCertificate]
        let key: NIOSSLPrivateKey
        let notAfter: Date
    }

    /// A file that cannot serve: the key that names it, and why.
    package struct Problem: Error, CustomStringConvertible {
        package let key: String
        package let message: String
        package var description: String { "\(self.key): \(self.message)" }
    }

    package init(_ settings: APISettings.TLSSettings) throws(Problem) {
        self.settings = settings
        self.current = Mutex(try Self.identity(settings))
        // The trust roots for client certificates are read once, here: a bad CA file must stop
        // the start, not every handshake.
        if let caFile = settings.caFile { _ = try Self.certificates(caFile, what: "api.tls.ca_file") }
    }

    /// The certificate's end of validity (shown in the log at start and at each reload).
    package var notAfter: Date { self.current.withLock { $0.notAfter } }

    /// Reads the certificate and key again. On any problem the pair in use stays and the problem
    /// is thrown: a half-written file during a rotation never takes the listener down.
    package func reload() throws(Problem) {
        let identity = try Self.identity(self.settings)
        self.current.withLock { $0 = identity }
    }

    /// NIOSSL's server configuration: the version floor, client certificates as configured, and
    /// the current identity handed to each handshake.
    func serverConfiguration() -> TLSConfiguration {
        let identity = self.current.withLock { $0 }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: identity.chain.map { .certificate($0) }, privateKey: .privateKey(identity.key))
        configuration.minimumTLSVersion = self.settings.minVersion == "1.3" ? .tlsv13 : .tlsv12
        switch self.settings.clientAuth {
        case .none: configuration.certificateVerification = .none
        case .optional: configuration.certificateVerification = .optionalVerification
        case .require: configuration.certificateVerification = .noHostnameVerification
        }
        if let caFile = self.settings.caFile { configuration.trustRoots = .file(caFile) }
        configuration.sslContextCallback = { [self] _, promise in
            let identity = self.current.withLock { $0 }
            var override = NIOSSLContextConfigurationOverride()
            override.certificateChain = identity.chain.map { .certificate($0) }
            override.privateKey = .privateKey(identity.key)
            promise.succeed(override)
        }
        return configuration
    }

    /// The role a verified client certificate stands for: the highest of the `client_roles`
    /// entries it matches, nil when it matches none.
    func role(of certificate: NIOSSLCertificate) -> APIRole? {
        guard !self.settings.clientRoles.isEmpty, let der = try? certificate.toDERBytes(), let parsed = try? Certificate(derEncoded: der) else {
            return nil
        }
        let subject = String(describing: parsed.subject)
        var names: Set<String> = []
        if let alternatives = try? parsed.extensions.subjectAlternativeNames {
            for name in alternatives {
                switch name {
                case .dnsName(let text), .rfc822Name(let text), .uniformResourceIdentifier(let text): names.insert(text)
                default: break
                }
            }
        }
        var best: APIRole? = nil
        for entry in self.settings.clientRoles {
            let matches: Bool =
                switch entry.match {
                case .subject(let text): text == subject
                case .san(let text): names.contains(text)
                }
            if matches && (best == nil || entry.role == .operate) { best = entry.role }
        }
        return best
    }

    // MARK: - Reading the files

    static func identity(_ settings: APISettings.TLSSettings) throws(Problem) -> Identity {
        let chain = try Self.certificates(settings.certFile, what: "api.tls.cert_file")
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(file: settings.keyFile, format: .pem)
        } catch {
            throw Problem(key: "api.tls.key_file", message: "cannot read a PEM private key from \(settings.keyFile) (\(error))")
        }
        // A context made from the pair checks that the key is the certificate's.
        do {
            _ = try NIOSSLContext(
                configuration: .makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key)))
        } catch {
            throw Problem(key: "api.tls.key_file", message: "the key in \(settings.keyFile) does not belong to the certificate in \(settings.certFile) (\(error))")
        }
        return Identity(chain: chain, key: key, notAfter: Date(timeIntervalSince1970: TimeInterval(chain[0].notValidAfter)))
    }

    static func certificates(_ path: String, what: String) throws(Problem) -> [NIOSSLCertificate] {
        guard FileManager.default.isReadableFile(atPath: path) else { throw Problem(key: what, message: "cannot read \(path)") }
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMFile(path)
        } catch {
            throw Problem(key: what, message: "\(path) holds no PEM certificate (\(error))")
        }
        guard !chain.isEmpty else { throw Problem(key: what, message: "\(path) holds no PEM certificate") }
        return chain
    }
}
