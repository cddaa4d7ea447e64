#if canImport(Glibc)
import Glibc
#endif

/// Numbers as people read them in alert and decision messages: `%.<digits>g`, through C's
/// `snprintf` into a stack buffer. Foundation's `String(format:)` goes through CFString and cost
/// several microseconds per call on the ingest thread; this costs a few hundred nanoseconds.
enum NumberText {
    static func significant(_ value: Double, digits: Int32) -> String {
        guard value.isFinite else { return "\(value)" }
        return withUnsafeTemporaryAllocation(of: CChar.self, capacity: 40) { buffer in
            let count = withVaList([value]) { arguments in
                vsnprintf(buffer.baseAddress!, 40, digits == 3 ? "%.3g" : digits == 4 ? "%.4g" : "%.6g", arguments)
            }
            guard count > 0 else { return "\(value)" }
            return String(decoding: UnsafeRawBufferPointer(start: buffer.baseAddress!, count: min(Int(count), 39)), as: UTF8.self)
        }
    }
}
