import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A TCP relay on loopback between one instance and PostgreSQL, for `dang bench-failover`'s
/// partition: ``block()`` stops relaying in both directions and keeps every socket open, so the
/// instance sees what a cut network looks like — silence, not a refused connection. ``unblock()``
/// lets the held bytes through again.
///
/// One thread accepts; each connection has one thread per direction, polling every 50 ms.
package final class PausableProxy: @unchecked Sendable {
    package let port: Int
    private let listener: Int32
    private let target: sockaddr_in
    private let blocked = Atomic<Bool>(false)
    private let stopped = Atomic<Bool>(false)
    private let threads = Atomic<Int>(0)

    /// - Parameters: targetPort: PostgreSQL's port on 127.0.0.1.
    package init(targetPort: Int) throws {
        var target = sockaddr_in()
        target.sin_family = sa_family_t(AF_INET)
        target.sin_addr.s_addr = inet_addr("127.0.0.1")
        target.sin_port = in_port_t(UInt16(truncatingIfNeeded: targetPort).bigEndian)
        self.target = target
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw BenchError(message: "proxy socket: \(String(cString: strerror(errno)))") }
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        let port: Int
        do {
            port = try BenchServers.bindLoopback(fd)
        } catch {
            close(fd)
            throw error
        }
        guard listen(fd, 64) == 0 else {
            close(fd)
            throw BenchError(message: "proxy listen: \(String(cString: strerror(errno)))")
        }
        self.listener = fd
        self.port = port
        self.spawn { [self] in self.acceptLoop() }
    }

    /// Stops relaying (both directions; connections stay open).
    package func block() { self.blocked.store(true, ordering: .relaxed) }
    /// Relays again.
    package func unblock() { self.blocked.store(false, ordering: .relaxed) }

    /// Closes the listener and every connection, and waits (at most 2 s) for the threads.
    package func stop() {
        guard !self.stopped.exchange(true, ordering: .relaxed) else { return }
        for _ in 0..<200 where self.threads.load(ordering: .relaxed) > 0 { usleep(10_000) }
        close(self.listener)
    }

    deinit { self.stop() }

    private func spawn(_ body: @escaping @Sendable () -> Void) {
        self.threads.add(1, ordering: .relaxed)
        let thread = Thread { [self] in
            body()
            self.threads.subtract(1, ordering: .relaxed)
        }
        thread.start()
    }

    private func acceptLoop() {
        while !self.stopped.load(ordering: .relaxed) {
            var poller = pollfd(fd: self.listener, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, 50) > 0 else { continue }
            let client = accept(self.listener, nil, nil)
            guard client >= 0 else { continue }
            let server = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var target = self.target
            let connected = withUnsafePointer(to: &target) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(server, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
            }
            guard server >= 0, connected else {
                close(client)
                if server >= 0 { close(server) }
                continue
            }
            let pair = SocketPair(client: client, server: server)
            self.spawn { [self] in self.relay(from: client, to: server, pair: pair) }
            self.spawn { [self] in self.relay(from: server, to: client, pair: pair) }
        }
    }

    /// Copies one direction until either side closes or the proxy stops.
    private func relay(from source: Int32, to destination: Int32, pair: SocketPair) {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        loop: while !self.stopped.load(ordering: .relaxed) {
            if self.blocked.load(ordering: .relaxed) {
                usleep(20_000)
                continue
            }
            var poller = pollfd(fd: source, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, 50) > 0 else { continue }
            let count = buffer.withUnsafeMutableBytes { read(source, $0.baseAddress, $0.count) }
            if count <= 0 { break }
            var offset = 0
            while offset < count {
                let written = buffer.withUnsafeBytes { send(destination, $0.baseAddress! + offset, count - offset, Int32(MSG_NOSIGNAL)) }
                if written <= 0 { break loop }
                offset += written
            }
        }
        pair.finishOne()
    }
}

/// Both sockets of a relayed connection: the first direction to end shuts both down, so the other
/// ends too; the last closes them.
private final class SocketPair: Sendable {
    let client: Int32
    let server: Int32
    private let open = Atomic<Int>(2)

    init(client: Int32, server: Int32) {
        self.client = client
        self.server = server
    }

    func finishOne() {
        shutdown(self.client, Int32(SHUT_RDWR))
        shutdown(self.server, Int32(SHUT_RDWR))
        if self.open.subtract(1, ordering: .relaxed).newValue == 0 {
            close(self.client)
            close(self.server)
        }
    }
}
