internal import CCurl
import Foundation
import Synchronization

/// One HTTP request, as libcurl will send it.
package struct HTTPRequest: Sendable {
    package var url: String
    package var method = "POST"
    package var headers: [String] = []
    package var body: [UInt8] = []
    package var connectTimeout: Duration = .seconds(10)
    /// The hard deadline of the whole transfer: bytes that keep arriving (keep-alive blank lines)
    /// cannot extend it (CURLOPT_TIMEOUT_MS).
    package var totalTimeout: Duration = .seconds(90)
    /// A response body past this size aborts the transfer.
    package var maxResponseBytes = 8 << 20
    /// HTTPS: the CA file that signs the server (nil: the system's trust store) and a client
    /// certificate with its key, PEM files (CURLOPT_CAINFO, CURLOPT_SSLCERT, CURLOPT_SSLKEY).
    package var caFile: String?
    package var certFile: String?
    package var keyFile: String?
    /// When set, the response body is handed over chunk by chunk as it arrives and not kept (a
    /// stream such as server-sent events; `maxResponseBytes` does not apply).
    package var onChunk: (@Sendable (UnsafeRawBufferPointer) -> Void)?

    package init(url: String) {
        self.url = url
    }
}

/// What came back: the status, the headers (names lower-cased) and the body.
package struct HTTPResponse: Sendable, Equatable {
    package let status: Int
    package let headers: [String: String]
    package let body: [UInt8]
}

/// Why there is no response.
package enum HTTPFailure: Error, Sendable, Equatable, CustomStringConvertible {
    /// The total deadline passed (the connection may have been sending keep-alive bytes).
    case timedOut
    /// No connection (refused, unreachable, DNS, TLS handshake).
    case connect(String)
    /// The connection broke or the response was malformed.
    case transport(String)
    /// The response was larger than `maxResponseBytes`.
    case tooLarge
    /// The caller gave up.
    case cancelled

    package var description: String {
        switch self {
        case .timedOut: "the total deadline passed"
        case .connect(let why): "cannot connect: \(why)"
        case .transport(let why): "transfer failed: \(why)"
        case .tooLarge: "the response is too large"
        case .cancelled: "cancelled"
        }
    }
}

/// The owner of one libcurl easy handle per transfer: blocking, for a dedicated thread.
///
/// `CURLOPT_NOSIGNAL` is set (libcurl must not use signals for timeouts in a threaded program);
/// `curl_global_init` runs once, before the first handle. The callbacks reach a per-transfer box
/// through libcurl's userdata pointers; the box lives until `curl_easy_perform` returns.
package enum CurlTransfer {
    private static let initialized: Bool = {
        curl_global_init(Int(CURL_GLOBAL_DEFAULT)) == CURLE_OK
    }()

    private final class Box {
        var body: [UInt8] = []
        var headers: [String: String] = [:]
        let limit: Int
        var overflow = false
        let cancelled: @Sendable () -> Bool
        let onChunk: (@Sendable (UnsafeRawBufferPointer) -> Void)?

        init(limit: Int, cancelled: @escaping @Sendable () -> Bool, onChunk: (@Sendable (UnsafeRawBufferPointer) -> Void)?) {
            self.limit = limit
            self.cancelled = cancelled
            self.onChunk = onChunk
        }
    }

    /// Performs the request; `cancelled` is polled while it runs (about every second, and on every
    /// chunk received) and aborts it when true.
    package static func perform(_ request: HTTPRequest, cancelled: @escaping @Sendable () -> Bool = { false }) -> Result<HTTPResponse, HTTPFailure> {
        guard Self.initialized, let handle = curl_easy_init() else { return .failure(.transport("libcurl could not be initialised")) }
        defer { curl_easy_cleanup(handle) }
        let box = Box(limit: request.maxResponseBytes, cancelled: cancelled, onChunk: request.onChunk)
        let userdata = Unmanaged.passUnretained(box).toOpaque()
        var headerList: UnsafeMutablePointer<curl_slist>? = nil
        defer { curl_slist_free_all(headerList) }
        for header in request.headers where !header.contains("\r") && !header.contains("\n") {
            headerList = curl_slist_append(headerList, header)
        }

        var ok = true
        func set(_ code: CURLcode) { if code != CURLE_OK { ok = false } }
        set(ccurl_easy_setopt_string(handle, CURLOPT_URL, request.url))
        set(ccurl_easy_setopt_long(handle, CURLOPT_NOSIGNAL, 1))
        set(ccurl_easy_setopt_long(handle, CURLOPT_CONNECTTIMEOUT_MS, Self.milliseconds(request.connectTimeout)))
        set(ccurl_easy_setopt_long(handle, CURLOPT_TIMEOUT_MS, max(1, Self.milliseconds(request.totalTimeout))))
        set(ccurl_easy_setopt_long(handle, CURLOPT_FOLLOWLOCATION, 0))
        set(ccurl_easy_setopt_long(handle, CURLOPT_TCP_NODELAY, 1))
        set(ccurl_easy_setopt_string(handle, CURLOPT_CUSTOMREQUEST, request.method))
        if let caFile = request.caFile { set(ccurl_easy_setopt_string(handle, CURLOPT_CAINFO, caFile)) }
        if let certFile = request.certFile { set(ccurl_easy_setopt_string(handle, CURLOPT_SSLCERT, certFile)) }
        if let keyFile = request.keyFile { set(ccurl_easy_setopt_string(handle, CURLOPT_SSLKEY, keyFile)) }
        set(ccurl_easy_setopt_pointer(handle, CURLOPT_HTTPHEADER, UnsafeMutableRawPointer(headerList)))
        set(ccurl_easy_setopt_data_callback(handle, CURLOPT_WRITEFUNCTION, { data, size, count, userdata in
            let box = Unmanaged<Box>.fromOpaque(userdata!).takeUnretainedValue()
            let bytes = size * count
            if box.cancelled() { return 0 }
            if let onChunk = box.onChunk {
                onChunk(UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : bytes))
                return bytes
            }
            if box.body.count + bytes > box.limit {
                box.overflow = true
                return 0  // aborts the transfer
            }
            if let data { box.body.append(contentsOf: UnsafeRawBufferPointer(start: data, count: bytes)) }
            return bytes
        }))
        set(ccurl_easy_setopt_pointer(handle, CURLOPT_WRITEDATA, userdata))
        set(ccurl_easy_setopt_data_callback(handle, CURLOPT_HEADERFUNCTION, { data, size, count, userdata in
            let box = Unmanaged<Box>.fromOpaque(userdata!).takeUnretainedValue()
            let bytes = size * count
            guard let data else { return bytes }
            let line = String(decoding: UnsafeRawBufferPointer(start: data, count: bytes), as: UTF8.self)
            if line.hasPrefix("HTTP/") {
                box.headers = [:]  // a new response (after 100 Continue): start over
            } else if let colon = line.firstIndex(of: ":") {
                let name = line[..<colon].trimmingCharacters(in: .whitespaces).lowercased()
                let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespacesAndNewlines)
                if box.headers.count < 100 { box.headers[name] = String(value.prefix(1024)) }
            }
            return bytes
        }))
        set(ccurl_easy_setopt_pointer(handle, CURLOPT_HEADERDATA, userdata))
        set(ccurl_easy_setopt_long(handle, CURLOPT_NOPROGRESS, 0))
        set(ccurl_easy_setopt_progress_callback(handle, { userdata, _, _, _, _ in
            let box = Unmanaged<Box>.fromOpaque(userdata!).takeUnretainedValue()
            return box.cancelled() ? 1 : 0
        }))
        set(ccurl_easy_setopt_pointer(handle, CURLOPT_XFERINFODATA, userdata))
        let body = request.body
        let code: CURLcode = body.withUnsafeBytes { bytes in
            if request.method != "GET" {
                set(ccurl_easy_setopt_long(handle, CURLOPT_POSTFIELDSIZE, bytes.count))
                set(ccurl_easy_setopt_pointer(handle, CURLOPT_POSTFIELDS, UnsafeMutableRawPointer(mutating: bytes.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!)))
            }
            guard ok else { return CURLE_FAILED_INIT }
            return curl_easy_perform(handle)
        }
        switch code {
        case CURLE_OK:
            var status = 0
            _ = ccurl_easy_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
            return .success(HTTPResponse(status: status, headers: box.headers, body: box.body))
        case CURLE_OPERATION_TIMEDOUT:
            return .failure(.timedOut)
        case CURLE_WRITE_ERROR where box.overflow:
            return .failure(.tooLarge)
        case CURLE_ABORTED_BY_CALLBACK, CURLE_WRITE_ERROR:
            return .failure(box.cancelled() ? .cancelled : .transport(Self.text(code)))
        case CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY, CURLE_SSL_CONNECT_ERROR, CURLE_PEER_FAILED_VERIFICATION:
            return .failure(.connect(Self.text(code)))
        default:
            return .failure(.transport(Self.text(code)))
        }
    }

    private static func milliseconds(_ duration: Duration) -> Int {
        Int(duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000)
    }

    private static func text(_ code: CURLcode) -> String {
        String(cString: curl_easy_strerror(code))
    }
}
