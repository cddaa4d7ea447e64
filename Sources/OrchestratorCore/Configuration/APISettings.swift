import Foundation
import Yams
package import Mosquitto

/// `api`: the HTTP front door (`docs/api.md`).
package struct APISettings: Sendable {
    package var enabled = true
    package var host = "127.0.0.1"
    package var port = 8080
    /// Bearer token of the `operate` role (everything); `DANG_API_TOKEN`.
    package var token: String?
    /// Bearer token of the `read` role (GET only); `DANG_API_READ_TOKEN`.
    package var readToken: String?
    package var maxBodyBytes = 1 << 20

    package init() {}

    /// Parses `HOST:PORT` (`[::1]:8080` for IPv6).
    package static func parseListen(_ text: String) -> (host: String, port: Int)? {
        guard let colon = text.lastIndex(of: ":") else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else { return nil }
        return (host, port)
    }
}
