import Foundation
import Testing

@testable import OrchestratorCore

#if canImport(Glibc)
import Glibc
#endif

/// sd_notify(3) as `dang run` speaks it, against a real datagram socket.
@Suite struct ServiceNotifierTests {
    /// A bound datagram socket at `path`; returns its descriptor.
    func listen(_ path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in path.utf8.enumerated() { buffer[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        try #require(bound == 0)
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }

    func receive(_ fd: Int32) -> String {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = recv(fd, &buffer, buffer.count, 0)
        return count > 0 ? String(decoding: buffer[..<count], as: UTF8.self) : ""
    }

    @Test func `notifications reach the socket NOTIFY_SOCKET names, and nothing happens without it`() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("notify-\(UUID().uuidString.prefix(8))").path
        let fd = try self.listen(path)
        defer {
            close(fd)
            unlink(path)
        }
        let notifier = ServiceNotifier(environment: ["NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000"])
        #expect(notifier.isActive && notifier.watchdogInterval == .seconds(15))
        #expect(notifier.notify("READY=1\nSTATUS=broker connected"))
        #expect(self.receive(fd) == "READY=1\nSTATUS=broker connected")
        notifier.reloading()
        #expect(self.receive(fd).hasPrefix("RELOADING=1\nMONOTONIC_USEC="))

        let outside = ServiceNotifier(environment: [:])
        #expect(!outside.isActive && outside.watchdogInterval == nil && !outside.notify("READY=1"))
        // The watchdog is another process's (WATCHDOG_PID), or the variable is junk: no pings.
        #expect(ServiceNotifier(environment: ["NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"]).watchdogInterval == nil)
        #expect(ServiceNotifier(environment: ["NOTIFY_SOCKET": path, "WATCHDOG_USEC": "soon"]).watchdogInterval == nil)
        // A relative or overlong path is not a socket systemd gave.
        #expect(!ServiceNotifier(environment: ["NOTIFY_SOCKET": "relative/socket"]).isActive)
        #expect(!ServiceNotifier(environment: ["NOTIFY_SOCKET": "/" + String(repeating: "x", count: 200)]).isActive)
    }
}
