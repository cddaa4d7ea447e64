import Dispatch
import Foundation
package import LibPQ
package import Logging
import Synchronization

/// A few reused PostgreSQL connections for reads and operator actions (the API, MQTT
/// acknowledgements, the concierge), each on a thread of its own, behind one bounded queue.
///
/// A flood of requests cannot open a connection (or start a thread) per request and exhaust the
/// server's `max_connections`, which would starve the record writer too: at most `size`
/// connections exist, at most `queueLimit` jobs wait, and anything beyond is refused and counted.
/// Threads start on demand and end, closing their connection, after a minute without work.
package final class DatabasePool: Sendable {
    package typealias Job = @Sendable (Result<PostgresConnection, PostgresError>) -> Void

    private struct State: ~Copyable {
        var queue: [Job] = []
        var threads = 0
        var idle = 0
        var refused = 0
    }

    private let state = Mutex(State())
    private let work = DispatchSemaphore(value: 0)
    private let url: String
    package let size: Int
    package let queueLimit: Int
    private let idleTimeout: Duration
    private let logger: Logger

    package init(url: String, size: Int = 2, queueLimit: Int = 64, idleTimeout: Duration = .seconds(60), logger: Logger) {
        self.url = url
        self.size = max(1, size)
        self.queueLimit = max(1, queueLimit)
        self.idleTimeout = idleTimeout
        self.logger = logger
    }

    /// Jobs refused because the queue was full.
    package var refused: Int { self.state.withLock { $0.refused } }

    /// Threads (and so connections) now running.
    package var threads: Int { self.state.withLock { $0.threads } }

    /// Queues a job; `false` (counted, and logged now and then) when the queue is full. The job runs
    /// on a pool thread with its connection, or with the error that kept it from connecting.
    @discardableResult
    package func submit(_ job: @escaping Job) -> Bool {
        let (accepted, spawn, refused) = self.state.withLock { state -> (Bool, Bool, Int) in
            guard state.queue.count < self.queueLimit else {
                state.refused += 1
                return (false, false, state.refused)
            }
            state.queue.append(job)
            let spawn = state.idle == 0 && state.threads < self.size
            if spawn { state.threads += 1 }
            return (true, spawn, 0)
        }
        guard accepted else {
            if refused.isWorthLogging {
                self.logger.warning(
                    "database work refused: the queue is full", metadata: ["db.queue_limit": "\(self.queueLimit)", "db.refused_total": "\(refused)"])
            }
            return false
        }
        if spawn {
            let thread = Thread { self.serve() }
            thread.name = "dang-db-pool"
            thread.start()
        }
        self.work.signal()
        return true
    }

    /// Runs `body` on a pool connection; `nil` when the queue was full.
    package func run<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) throws -> T) async -> Result<T, any Error>? {
        await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, any Error>?, Never>) in
            let accepted = self.submit { connection in
                switch connection {
                case .success(let connection): continuation.resume(returning: Result { try body(connection) })
                case .failure(let error): continuation.resume(returning: .failure(error))
                }
            }
            if !accepted { continuation.resume(returning: nil) }
        }
    }

    private func serve() {
        var connection: PostgresConnection? = nil
        while true {
            self.state.withLock { $0.idle += 1 }
            let woke = self.work.wait(timeout: .now() + self.idleTimeout.timeInterval) == .success
            let job = self.state.withLock { state -> Job? in
                state.idle -= 1
                if !state.queue.isEmpty { return state.queue.removeFirst() }
                if !woke { state.threads -= 1 }
                return nil
            }
            guard let job else {
                if woke { continue }
                return  // idle for a while: the thread ends and its connection closes
            }
            if connection?.isConnected != true {
                connection = nil
                do {
                    connection = try PostgresConnection(conninfo: self.url)
                } catch {
                    job(.failure(error))
                    continue
                }
            }
            job(.success(connection!))
        }
    }
}
