import Foundation
import LibPQ
import Synchronization
#if canImport(Glibc)
import Glibc
package import OrchestratorCore
#endif

/// The servers `dang bench` starts for itself: a mosquitto broker and, when no database is
/// given, a PostgreSQL server, each on a free loopback port with its data under one directory,
/// stopped when the benchmark ends.
package final class BenchServers {
    let directory: URL
    package let brokerPort: Int
    package private(set) var databaseURL: String
    private var broker: pid_t?
    private var postgres: (bin: String, data: String)?
    private let asPostgres: Bool

    /// - Parameter databaseURL: an existing database to use; `nil` starts a private server.
    package init(databaseURL: String?, log: (String) -> Void) throws {
        self.directory = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("dang-bench-\(getpid())")
        try? FileManager.default.removeItem(at: self.directory)
        try FileManager.default.createDirectory(at: self.directory, withIntermediateDirectories: true)
        self.asPostgres = getuid() == 0
        self.brokerPort = try Self.freePort()
        self.databaseURL = databaseURL ?? ""
        try self.startBroker()
        self.register()
        log("broker: mosquitto on 127.0.0.1:\(self.brokerPort)")
        if databaseURL == nil {
            try self.startPostgres()
            self.register()
            log("database: private PostgreSQL at \(self.databaseURL)")
        }
    }

    deinit { self.stop() }

    /// How to stop the servers of the benchmark running now, from a signal handler (a PostgreSQL
    /// started by `pg_ctl` outlives an interrupted benchmark otherwise).
    private static let running = Mutex<(@Sendable () -> Void)?>(nil)

    /// Stops the servers of the running benchmark, if any (on SIGINT or SIGTERM).
    package static func stopRunning() {
        let stop = Self.running.withLock { action in
            defer { action = nil }
            return action
        }
        stop?()
    }

    private func register() {
        let broker = self.broker
        let postgres = self.postgres
        let directory = self.directory
        let stopPostgres = postgres.map { self.command($0.bin + "/pg_ctl", ["-D", $0.data, "-m", "fast", "-w", "stop"]) }
        Self.running.withLock {
            $0 = {
                if let broker { ChildProcess.stop(broker) }
                if let stopPostgres { _ = try? ChildProcess.run([stopPostgres.0] + stopPostgres.1) }
                try? FileManager.default.removeItem(at: directory)
            }
        }
    }

    package func stop() {
        Self.running.withLock { $0 = nil }
        if let broker { ChildProcess.stop(broker) }
        self.broker = nil
        if let postgres {
            _ = try? self.run(self.command(postgres.bin + "/pg_ctl", ["-D", postgres.data, "-m", "fast", "-w", "stop"]))
            self.postgres = nil
        }
        try? FileManager.default.removeItem(at: self.directory)
    }

    private func startBroker() throws {
        let config = """
            listener \(self.brokerPort) 127.0.0.1
            allow_anonymous true
            user root
            set_tcp_nodelay true
            sys_interval 1
            log_type error
            log_type warning
            log_dest file \(self.directory.path)/mosquitto.log

            """
        let file = self.directory.appendingPathComponent("mosquitto.conf")
        try config.write(to: file, atomically: true, encoding: .utf8)
        let binary = Self.find("mosquitto", in: ["/usr/sbin", "/usr/local/sbin", "/usr/bin"]) ?? "/usr/sbin/mosquitto"
        self.broker = try ChildProcess.spawn([binary, "-c", file.path])
        try Self.waitForPort(self.brokerPort, what: "mosquitto")
    }

    private func startPostgres() throws {
        guard let bin = Self.postgresBin() else {
            throw BenchError(message: "no PostgreSQL server binaries (initdb, pg_ctl) found; install postgresql or pass --database-url")
        }
        let root = self.directory.appendingPathComponent("pg").path
        let data = root + "/data"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        if self.asPostgres {
            // initdb and pg_ctl refuse root: they run as `postgres`, who must own the directory.
            _ = try self.run(Self.plain("/bin/chmod", ["o+x", self.directory.path]))
            _ = try self.run(Self.plain("/bin/chown", ["-R", "postgres:", root]))
        }
        _ = try self.run(self.command(bin + "/initdb", ["-D", data, "-U", "dang", "--auth=trust", "-E", "UTF8", "--no-locale", "--no-instructions"]))
        let port = try Self.freePort()
        let options = "-p \(port) -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        _ = try self.run(self.command(bin + "/pg_ctl", ["-D", data, "-l", root + "/postgres.log", "-o", options, "-w", "-t", "60", "start"]))
        self.postgres = (bin, data)
        let admin = try PostgresConnection(conninfo: "postgres://dang@127.0.0.1:\(port)/postgres")
        _ = try admin.query("CREATE DATABASE dang")
        self.databaseURL = "postgres://dang@127.0.0.1:\(port)/dang"
    }

    private func command(_ path: String, _ arguments: [String]) -> (String, [String]) {
        self.asPostgres ? ("/usr/sbin/runuser", ["-u", "postgres", "--", path] + arguments) : (path, arguments)
    }

    private static func plain(_ path: String, _ arguments: [String]) -> (String, [String]) { (path, arguments) }

    /// Runs a command to its end; throws with its output when it fails.
    private func run(_ command: (String, [String])) throws -> String {
        let (status, output) = try ChildProcess.run([command.0] + command.1)
        guard status == 0 else {
            throw BenchError(message: "\(([command.0] + command.1).joined(separator: " ")) failed (\(status)): \(output.suffix(600))")
        }
        return output
    }

    private static func postgresBin() -> String? {
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
        for version in versions.sorted(by: { (Int($0) ?? 0) > (Int($1) ?? 0) }) {
            let bin = "/usr/lib/postgresql/\(version)/bin"
            if FileManager.default.isExecutableFile(atPath: bin + "/pg_ctl") { return bin }
        }
        return find("pg_ctl", in: ["/usr/local/bin", "/usr/bin"]).map { ($0 as NSString).deletingLastPathComponent }
    }

    private static func find(_ name: String, in directories: [String]) -> String? {
        directories.map { $0 + "/" + name }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// A TCP port nobody listens on now (bound to port 0, read back, released).
    package static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw BenchError(message: "socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        return try Self.bindLoopback(fd)
    }

    /// Binds a socket to a free port of 127.0.0.1 and returns the port.
    static func bindLoopback(_ fd: Int32) throws -> Int {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw BenchError(message: "cannot find a free port: \(String(cString: strerror(errno)))") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Whether something accepts TCP connections on 127.0.0.1:`port` now.
    static func isListening(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }

    static func waitForPort(_ port: Int, what: String) throws {
        for _ in 0..<200 {
            if Self.isListening(port) { return }
            usleep(50_000)
        }
        throw BenchError(message: "\(what) did not accept connections on 127.0.0.1:\(port) within 10 s")
    }
}

/// `dang bench` cannot go on.
package struct BenchError: Error, CustomStringConvertible, Sendable {
    package let message: String
    package var description: String { self.message }
}
