import Foundation
import Yams
package import Mosquitto

/// Where the broker is: parsed from `mqtt://[user[:password]@]host[:port]` or `mqtts://…`.
package struct MQTTEndpoint: Sendable, Equatable {
    package var host: String
    package var port: Int
    package var tls: Bool
    package var username: String?
    package var password: String?

    package init(host: String, port: Int, tls: Bool, username: String? = nil, password: String? = nil) {
        self.host = host
        self.port = port
        self.tls = tls
        self.username = username
        self.password = password
    }

    /// Why a URL was refused.
    package struct Problem: Error, Sendable {
        package let message: String
    }

    /// Parses `mqtt[s]://[user[:password]@]host[:port][/]` (also `tcp://`, `ssl://`; an IPv6 host in
    /// brackets; user and password percent-encoded). Read by hand rather than with `URLComponents`,
    /// whose host getters run ICU's IDNA conversion and map megabytes of ICU into the process.
    package static func parse(_ text: String) -> Result<MQTTEndpoint, Problem> {
        guard let separator = text.range(of: "://"), !text[..<separator.lowerBound].isEmpty else {
            return .failure(Problem(message: "\"\(text)\" is not a URL; expected mqtt://host:port or mqtts://host:port"))
        }
        let scheme = text[..<separator.lowerBound].lowercased()
        let tls: Bool
        switch scheme {
        case "mqtt", "tcp": tls = false
        case "mqtts", "ssl": tls = true
        default:
            return .failure(Problem(message: "unsupported scheme \"\(scheme)\"; expected mqtt:// or mqtts://"))
        }
        var rest = text[separator.upperBound...]
        if let slash = rest.firstIndex(of: "/") {
            guard rest[slash...] == "/" else {
                return .failure(Problem(message: "\"\(text)\" has a path; expected mqtt://host:port"))
            }
            rest = rest[..<slash]
        }
        var username: String? = nil
        var password: String? = nil
        if let at = rest.lastIndex(of: "@") {
            let userInfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
            let colon = userInfo.firstIndex(of: ":")
            username = String(userInfo[..<(colon ?? userInfo.endIndex)]).removingPercentEncoding
            password = colon.flatMap { String(userInfo[userInfo.index(after: $0)...]).removingPercentEncoding }
            guard username != nil, colon == nil || password != nil else {
                return .failure(Problem(message: "\"\(text)\" has a malformed percent-encoded user or password"))
            }
        }
        var host = rest
        var portText: Substring? = nil
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else {
                return .failure(Problem(message: "\"\(text)\" has an unclosed IPv6 address; expected mqtt://[::1]:port"))
            }
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if !after.isEmpty {
                guard after.first == ":" else { return .failure(Problem(message: "\"\(text)\" has text after its IPv6 address")) }
                portText = after.dropFirst()
            }
        } else if let colon = rest.lastIndex(of: ":") {
            host = rest[..<colon]
            portText = rest[rest.index(after: colon)...]
        }
        guard !host.isEmpty else {
            return .failure(Problem(message: "\"\(text)\" has no host; expected mqtt://host:port"))
        }
        var port = tls ? 8883 : 1883
        if let portText {
            guard !portText.isEmpty, portText.count <= 5, portText.allSatisfy({ $0.isASCII && $0.isNumber }), let number = Int(portText)
            else {
                return .failure(Problem(message: "port \"\(portText)\" is not a number 1...65535"))
            }
            guard (1...65535).contains(number) else {
                return .failure(Problem(message: "port \(number) is out of range 1...65535"))
            }
            port = number
        }
        return .success(MQTTEndpoint(host: String(host), port: port, tls: tls, username: username, password: password))
    }
}
