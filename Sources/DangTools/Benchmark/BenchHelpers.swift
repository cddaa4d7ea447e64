import Curl
import Foundation
import Histogram
import Mosquitto
import Synchronization
#if canImport(Glibc)
import Glibc
package import OrchestratorCore
#endif

// MARK: - Process and formatting helpers of dang bench

/// User + system CPU seconds of a process so far (/proc/PID/stat).
func cpuSeconds(pid: Int32) -> Double {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return 0 }
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

func waitFor(_ what: String, seconds: Double = 10, _ condition: () -> Bool) throws {
    let deadline = monotonicNanoseconds() + UInt64(seconds * 1e9)
    while !condition() {
        if monotonicNanoseconds() > deadline { throw BenchError(message: "timed out waiting for \(what)") }
        usleep(20_000)
    }
}

/// 1,234,567 (rounded to an integer).
func fmt(_ value: Double) -> String {
    guard value.isFinite else { return "—" }
    let digits = String(Int(value.rounded()))
    var out = ""
    for (i, c) in digits.reversed().enumerated() {
        if i > 0 && i % 3 == 0 && c != "-" { out.append(",") }
        out.append(c)
    }
    return String(out.reversed())
}
