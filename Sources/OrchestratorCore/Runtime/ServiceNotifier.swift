import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// systemd's service notification protocol (sd_notify(3)), for `Type=notify` and `WatchdogSec=`:
/// datagrams of `KEY=value` lines to the socket `NOTIFY_SOCKET` names. Without that variable (not
/// under systemd) every call does nothing.
///
/// `dang run` says `READY=1` once its services run, `RELOADING=1` and `READY=1` around a reload,
/// `STOPPING=1` at shutdown, and `WATCHDOG=1` while the detection timer — the loop that also
/// checks staleness and the unit monitors — keeps turning: a stuck process is restarted by systemd.
package final class ServiceNotifier: Sendable {
    private let path: String?
    /// Half of `WATCHDOG_USEC`, when the watchdog is on for this process.
    package let watchdogInterval: Duration?
    private let descriptor: Int32

    package init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        var path = environment["NOTIFY_SOCKET"].flatMap { $0.isEmpty ? nil : $0 }
        // A path longer than sockaddr_un holds is not ours to truncate: no notifications.
        if let candidate = path, candidate.utf8.count >= 108 || !(candidate.hasPrefix("/") || candidate.hasPrefix("@")) { path = nil }
        self.path = path
        let forUs = environment["WATCHDOG_PID"].map { Int32($0) == getpid() } ?? true
        if forUs, let text = environment["WATCHDOG_USEC"], let usec = Int64(text), usec > 0 {
            // (At most an hour: the pings' timer and staleness are computed from it.)
            self.watchdogInterval = .microseconds(min(usec, 7_200_000_000) / 2)
        } else {
            self.watchdogInterval = nil
        }
        self.descriptor = path == nil ? -1 : socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    }

    deinit {
        if self.descriptor >= 0 { close(self.descriptor) }
    }

    /// Whether systemd listens.
    package var isActive: Bool { self.path != nil && self.descriptor >= 0 }

    /// Sends one notification (`READY=1`, `STATUS=…`, several lines at once); false when it could
    /// not be sent or nobody listens.
    @discardableResult
    package func notify(_ state: String) -> Bool {
        guard let path = self.path, self.descriptor >= 0 else { return false }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        // An abstract socket ('@name') starts with a NUL byte.
        var name = Array(path.utf8)
        if name.first == UInt8(ascii: "@") { name[0] = 0 }
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in name.enumerated() where index < buffer.count { buffer[index] = byte }
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + name.count)
        let bytes = Array(state.utf8)
        let sent = bytes.withUnsafeBytes { payload in
            withUnsafePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(self.descriptor, payload.baseAddress, payload.count, Int32(MSG_NOSIGNAL), $0, length)
                }
            }
        }
        return sent == bytes.count
    }

    /// `RELOADING=1` with the monotonic time systemd wants beside it.
    package func reloading() {
        // (libdispatch's uptime is CLOCK_MONOTONIC on Linux, the clock systemd compares with.)
        self.notify("RELOADING=1\nMONOTONIC_USEC=\(DispatchTime.now().uptimeNanoseconds / 1000)")
    }
}
