import Foundation
import Yams
package import Mosquitto

/// `api`: the HTTP front door (`docs/api.md`).
package struct APISettings: Sendable, Equatable {
    package var enabled = true
    package var host = "127.0.0.1"
    package var port = 8080
    /// Bearer token of the `operate` role (everything); `DANG_API_TOKEN`.
    package var token: String?
    /// Bearer token of the `read` role (GET only); `DANG_API_READ_TOKEN`.
    package var readToken: String?
    package var maxBodyBytes = 1 << 20
    /// `api.tls`: HTTPS (and client certificates) on the listener; nil is plain HTTP.
    package var tls: TLSSettings?
    /// `api.allow_plaintext`: plain HTTP on an address other than loopback, said on purpose.
    package var allowPlaintext = false
    /// `api.failed_auth_per_minute`: failed authentications one client address may make per
    /// minute before its requests are refused with 429 for the rest of it.
    package var failedAuthPerMinute = 10

    package init() {}

    /// `api.tls`.
    package struct TLSSettings: Sendable, Equatable {
        package enum ClientAuth: String, Sendable, CaseIterable {
            /// No client certificate is asked for.
            case none
            /// A certificate is asked for and checked against `ca_file` when given; a client
            /// without one still connects (and needs a token).
            case optional
            /// No TLS connection without a certificate signed by `ca_file`.
            case require
        }

        /// A client certificate that stands for a role (mTLS): by its subject, as
        /// `openssl x509 -noout -subject -nameopt RFC2253` prints it, or by one of its subject
        /// alternative names (DNS name, IP address, e-mail or URI).
        package struct ClientRole: Sendable, Equatable {
            package enum Match: Sendable, Equatable {
                case subject(String)
                case san(String)
            }

            package var match: Match
            package var role: APIRole

            package init(match: Match, role: APIRole) {
                self.match = match
                self.role = role
            }
        }

        package var certFile: String
        package var keyFile: String
        package var caFile: String?
        package var clientAuth: ClientAuth = .none
        /// `1.2` or `1.3`.
        package var minVersion = "1.2"
        package var clientRoles: [ClientRole] = []

        package init(certFile: String, keyFile: String) {
            self.certFile = certFile
            self.keyFile = keyFile
        }
    }

    /// Why this listener must not start: plain HTTP on an address the plant network reaches,
    /// without `allow_plaintext` (tokens would cross it in clear). Nil when it may.
    package var plaintextRefusal: String? {
        guard self.enabled, self.tls == nil, !self.allowPlaintext, !Self.isLoopback(self.host) else { return nil }
        return "the API would listen on \(self.host) in plain HTTP: bearer tokens would cross the network in clear. "
            + "Configure api.tls (cert_file, key_file), listen on 127.0.0.1, or set api.allow_plaintext: true to accept it"
    }

    /// 127.0.0.0/8, ::1 and localhost.
    package static func isLoopback(_ host: String) -> Bool {
        if host == "localhost" || host == "::1" || host == "0:0:0:0:0:0:0:1" { return true }
        let parts = host.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts[0] == "127" && parts.allSatisfy { UInt8($0) != nil }
    }

    /// Parses `HOST:PORT` (`[::1]:8080` for IPv6).
    package static func parseListen(_ text: String) -> (host: String, port: Int)? {
        guard let colon = text.lastIndex(of: ":") else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else { return nil }
        return (host, port)
    }
}

/// Who a request is: `operate` may do everything, `read` may only GET.
package enum APIRole: String, Sendable, CaseIterable {
    case read
    case operate
}

extension APISettings.TLSSettings {
    /// `api.tls`, with its files read as the listener will read them: a certificate, key or CA
    /// that cannot serve is an error here (and in `dang check-config`), not at the first client.
    static func read(_ section: YAMLSection) -> Self? {
        defer { section.finish() }
        let certFile = section.filePath("cert_file")
        let keyFile = section.filePath("key_file")
        guard let certFile, let keyFile else {
            section.diagnostics.report(.error, section.keyPath("cert_file"), at: section.mark, "api.tls needs cert_file and key_file")
            return nil
        }
        var settings = Self(certFile: certFile, keyFile: keyFile)
        settings.caFile = section.filePath("ca_file")
        settings.clientAuth = section.choice("client_auth", default: settings.clientAuth)
        let version = section.string("min_version", default: settings.minVersion)
        if ["1.2", "1.3"].contains(version) {
            settings.minVersion = version
        } else {
            section.diagnostics.report(.error, section.keyPath("min_version"), at: section.markOf("min_version"), "\"\(version)\" is not 1.2 or 1.3")
        }
        if settings.clientAuth != .none && settings.caFile == nil {
            section.diagnostics.report(
                .error, section.keyPath("ca_file"), at: section.markOf("client_auth"),
                "client_auth: \(settings.clientAuth.rawValue) needs ca_file, the CA that signs the client certificates")
        }
        if let roles = section.node("client_roles") {
            settings.clientRoles = Self.readRoles(roles, path: section.keyPath("client_roles"), diagnostics: section.diagnostics)
            if !settings.clientRoles.isEmpty && settings.clientAuth == .none {
                section.diagnostics.report(
                    .error, section.keyPath("client_roles"), at: roles.mark, "client_roles needs client_auth: optional or require")
            }
        }
        do {
            _ = try APICertificates(settings)
        } catch {
            let key = String(error.key.dropFirst(section.path.count + 1))
            section.diagnostics.report(.error, error.key, at: section.markOf(key), error.message)
        }
        return settings
    }

    /// `client_roles`: a list of `{subject: "CN=…,O=…", role: operate|read}` or
    /// `{san: name, role: …}`.
    private static func readRoles(_ node: Node, path: String, diagnostics: ConfigDiagnostics) -> [ClientRole] {
        guard
            let entries = YAMLSection.items(
                of: node, path: path, diagnostics: diagnostics, expected: "{subject: \"CN=…\", role: read} or {san: name, role: operate}")
        else { return [] }
        var roles: [ClientRole] = []
        for entry in entries {
            defer { entry.finish() }
            let subject = entry.optionalString("subject")
            let san = entry.optionalString("san")
            let roleText = entry.string("role", default: "")
            guard let role = APIRole(rawValue: roleText) else {
                diagnostics.report(.error, entry.keyPath("role"), at: entry.markOf("role"), "role must be read or operate")
                continue
            }
            switch (subject, san) {
            case (let subject?, nil): roles.append(ClientRole(match: .subject(subject), role: role))
            case (nil, let san?): roles.append(ClientRole(match: .san(san), role: role))
            default: diagnostics.report(.error, entry.path, at: entry.mark, "give subject or san (one of them)")
            }
        }
        return roles
    }
}
