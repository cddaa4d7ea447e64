import Foundation
#if canImport(Glibc)
import Glibc
package import OrchestratorCore
#endif

/// Starts helper programs (mosquitto, PostgreSQL, `dang run`) for `dang bench` and the tests.
///
/// Not Foundation's `Process`: children inherit the caller's signal mask (in the tests SIGTERM
/// and SIGINT are blocked, so a broker started that way ignores a polite stop), and its waiting
/// depends on a SIGCHLD handler that did not reap `runuser` here. `posix_spawn` with
/// an empty mask and default handlers gives the child a normal signal state. Output goes to a file,
/// not a pipe, so a daemon that keeps its descriptors cannot stall the reader.
package enum ChildProcess {
    /// Spawns `arguments[0]` (a path) and returns its pid.
    package static func spawn(_ arguments: [String], output: String = "/dev/null") throws -> Int32 {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGTERM, SIGINT, SIGHUP, SIGCHLD, SIGPIPE, SIGUSR1, SIGUSR2] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)

        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, arguments[0], &actions, &attributes, &argv, environ)
        guard rc == 0 else {
            throw BenchError(message: "cannot start \(arguments[0]): \(String(cString: strerror(rc)))")
        }
        return pid
    }

    /// Waits for `pid` and returns its exit status.
    @discardableResult
    package static func wait(_ pid: Int32) -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }

    /// Runs a command to completion; returns its exit status and output.
    package static func run(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("dang-child-\(UUID().uuidString).log").path
        defer { try? FileManager.default.removeItem(atPath: log) }
        let status = wait(try spawn(arguments, output: log))
        let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        return (status, output)
    }

    /// Whether `pid` (a child of ours) is still running; reaps it if it has ended.
    package static func isRunning(_ pid: Int32) -> Bool {
        var status: Int32 = 0
        return waitpid(pid, &status, WNOHANG) == 0
    }

    /// SIGTERM, then SIGKILL if it has not ended within `seconds`; reaps it.
    package static func stop(_ pid: Int32, seconds: Double = 10) {
        kill(pid, SIGTERM)
        var status: Int32 = 0
        for _ in 0..<Int(seconds * 20) {
            if waitpid(pid, &status, WNOHANG) != 0 { return }
            usleep(50_000)
        }
        kill(pid, SIGKILL)
        _ = Self.wait(pid)
    }
}
