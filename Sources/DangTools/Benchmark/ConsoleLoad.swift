import Curl
import Foundation
import Synchronization

/// Console clients as the page behaves (Sources/OrchestratorCore/API/Console/console.js): each
/// holds `GET /events` open and, on an alert, transition or service event, re-reads its alarm
/// view — the standing alarms and the journal, from the record — 100 ms later, and at most twice
/// a second. `dang bench
/// --console-clients N` runs them beside the load, to show what the console costs the hot path.
final class ConsoleLoad: Sendable {
    private struct Client {
        var dirty = false
        var events = 0
        var refreshes = 0
        var failures = 0
        var pending: [UInt8] = []
    }

    private let port: Int
    /// One lock per client (a class: a `Mutex` cannot sit in an array).
    private final class Shared: Sendable {
        let state = Mutex(Client())

        func withLock<T: Sendable>(_ body: (inout sending Client) -> sending T) -> T { self.state.withLock(body) }
    }

    private let clients: [Shared]
    private let stopped = Atomic<Bool>(false)
    private let running = Atomic<Int>(0)

    init(port: Int, clients: Int) {
        self.port = port
        self.clients = (0..<clients).map { _ in Shared() }
    }

    func start() {
        for index in self.clients.indices {
            self.running.add(2, ordering: .relaxed)
            Thread.detachNewThread { self.listen(index) }
            Thread.detachNewThread { self.refresh(index) }
        }
    }

    /// Stops the clients and returns the report's row.
    func stop() -> WireBenchmark.Row {
        self.stopped.store(true, ordering: .relaxed)
        let deadline = Date().addingTimeInterval(5)
        while self.running.load(ordering: .relaxed) > 0 && Date() < deadline { usleep(20_000) }
        let totals = self.clients.map { $0.withLock { ($0.events, $0.refreshes, $0.failures) } }
        let events = totals.map(\.0).reduce(0, +)
        let refreshes = totals.map(\.1).reduce(0, +)
        let failures = totals.map(\.2).reduce(0, +)
        return WireBenchmark.Row(
            name: "console",
            values: [("clients", Double(self.clients.count)), ("events", Double(events)), ("refreshes", Double(refreshes)), ("failures", Double(failures))],
            text: "\(self.clients.count) console clients: \(events) events pushed, \(refreshes) alarm-view refreshes (GET /alerts ×2 each), \(failures) failed requests")
    }

    private func listen(_ index: Int) {
        defer { self.running.subtract(1, ordering: .relaxed) }
        let client = self.clients[index]
        while !self.stopped.load(ordering: .relaxed) {
            var request = HTTPRequest(url: "http://127.0.0.1:\(self.port)/events")
            request.method = "GET"
            request.totalTimeout = .seconds(3600)
            request.headers = [Self.authorization]
            request.onChunk = { chunk in
                client.withLock { state in
                    state.pending.append(contentsOf: chunk)
                    // Frames end with a blank line; only the event names matter here.
                    while let end = Self.frameEnd(state.pending) {
                        let frame = String(decoding: state.pending[..<end], as: UTF8.self)
                        state.pending.removeSubrange(..<(end + 2))
                        state.events += 1
                        if frame.hasPrefix("event: alert") || frame.hasPrefix("event: transition") || frame.hasPrefix("event: service") {
                            state.dirty = true
                        }
                    }
                }
            }
            switch CurlTransfer.perform(request, cancelled: { self.stopped.load(ordering: .relaxed) }) {
            case .failure(.cancelled): break
            case .success(let response) where response.status == 200: break
            case .success, .failure:
                client.withLock { $0.failures += 1 }
                usleep(200_000)
            }
        }
    }

    private func refresh(_ index: Int) {
        defer { self.running.subtract(1, ordering: .relaxed) }
        let client = self.clients[index]
        var last: UInt64 = 0
        while !self.stopped.load(ordering: .relaxed) {
            usleep(100_000)
            if monotonicNanoseconds() &- last < 500_000_000 { continue }
            let due = client.withLock { state in
                defer { state.dirty = false }
                return state.dirty
            }
            guard due else { continue }
            last = monotonicNanoseconds()
            var failed = 0
            for path in ["/alerts?state=active&limit=500", "/alerts?state=all&limit=200"] {
                var request = HTTPRequest(url: "http://127.0.0.1:\(self.port)\(path)")
                request.method = "GET"
                request.totalTimeout = .seconds(10)
                request.headers = [Self.authorization]
                if case .success(let response) = CurlTransfer.perform(request), response.status == 200 { continue }
                failed += 1
            }
            client.withLock {
                $0.refreshes += 1
                $0.failures += failed
            }
        }
    }

    private static let authorization = "Authorization: Bearer \(OrchestratorChild.readToken)"

    private static func frameEnd(_ bytes: [UInt8]) -> Int? {
        guard bytes.count >= 2 else { return nil }
        for i in 0..<(bytes.count - 1) where bytes[i] == 10 && bytes[i + 1] == 10 { return i }
        return nil
    }
}
