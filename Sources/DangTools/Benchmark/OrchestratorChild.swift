import Curl
import Foundation
import Histogram
import Mosquitto
import Synchronization
#if canImport(Glibc)
import Glibc
package import OrchestratorCore
#endif

/// `dang run` as a child process with a configuration written for the benchmark.
final class OrchestratorChild: @unchecked Sendable {
    struct Status {
        var samples: Int
        var rejected: Int
        var tags: Int
        var connected: Bool
    }

    let pid: pid_t
    let httpPort: Int
    /// The API's read token (the console clients').
    static let readToken = "bench-console-read"
    private let directory: URL

    /// `history`: `detection.history` (nil: what the forecasting window of 10 needs).
    init(executable: String, servers: BenchServers, tags: Int, qos: Int, name: String, decisions: Bool = true, history: Int? = nil) throws {
        self.directory = servers.directory.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: self.directory, withIntermediateDirectories: true)
        self.httpPort = try BenchServers.freePort()
        var map = "sensors:\n  pattern: \"plant/{site}/{area}/{unit}/{tag}\"\nmarket:\n  pattern: \"market/{instrument...}\"\ntags:\n"
        map.reserveCapacity(tags * 90)
        for tag in 0..<tags {
            map += "  \(LoadGenerator.tagName(tag)): {criticality: high, limits: {lo: 50, hi: \(LoadGenerator.hiLimit), deadband: 1.0}}\n"
        }
        try map.write(to: self.directory.appendingPathComponent("topics.yaml"), atomically: true, encoding: .utf8)
        let config = """
            orchestrator:
              modules:
                forecasting: {enabled: true, transport: mqtt, timeout: 60s, max_in_flight: 10000, cooldown: 0s, data: tag, window: 10, min_history: 1, max_age: 1000d, cost: 0}
                analysis: {enabled: false}
                optimization: {enabled: false}
                etl: {enabled: false}
              triggers:\(decisions ? "\n    - {name: bench-limit, kind: equipment, module: forecasting, alerts: [limit]}" : " []")
              decision_engine: {max_retries: 0}
            api: {enabled: true, listen: "127.0.0.1:\(self.httpPort)", read_token: \(Self.readToken)}
            mqtt: {url: "mqtt://127.0.0.1:\(servers.brokerPort)", client_id: dang-bench-\(name), subscribe_qos: \(qos), tcp_nodelay: true}
            database: {url: "\(servers.databaseURL)", spool_dir: "\(self.directory.path)/spool"}
            topics: {prefix: bench, map: topics.yaml}\(history.map { "\ndetection: {history: \($0)}" } ?? "")

            """
        let file = self.directory.appendingPathComponent("orchestrator.yaml")
        try config.write(to: file, atomically: true, encoding: .utf8)
        self.pid = try ChildProcess.spawn(
            // The servers on the command line: they win over DANG_MQTT_URL and DATABASE_URL in
            // the environment, which may name another broker.
            [
                executable, "run", "--config", file.path, "--log-level", "error", "--mqtt-url", "mqtt://127.0.0.1:\(servers.brokerPort)",
                "--database-url", servers.databaseURL, "--spool-dir", self.directory.path + "/spool",
            ], output: self.directory.appendingPathComponent("dang.log").path)
    }

    private var isRunning: Bool { ChildProcess.isRunning(self.pid) }

    /// The end of the child's log (it runs at `--log-level error`).
    func logTail(_ characters: Int = 800) -> String {
        let log = (try? String(contentsOf: self.directory.appendingPathComponent("dang.log"), encoding: .utf8)) ?? ""
        return String(log.suffix(characters))
    }

    func stop() {
        if self.isRunning { ChildProcess.stop(self.pid) }
    }

    func waitUntilConnected() throws {
        try waitFor("dang run to connect (log: \(self.directory.path)/dang.log)", seconds: 30) {
            guard self.isRunning else { return true }
            return (try? self.status().connected) == true
        }
        guard self.isRunning else {
            throw BenchError(message: "dang run exited: \(self.logTail())")
        }
    }

    func status() throws -> Status {
        var request = HTTPRequest(url: "http://127.0.0.1:\(self.httpPort)/status")
        request.method = "GET"
        request.totalTimeout = .seconds(5)
        request.connectTimeout = .seconds(2)
        let response = try CurlTransfer.perform(request).get()
        guard response.status == 200, let object = try JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any],
            let ingest = object["ingest"] as? [String: Any], let mqtt = object["mqtt"] as? [String: Any]
        else { throw BenchError(message: "GET /status answered \(response.status)") }
        return Status(
            samples: ingest["samples"] as? Int ?? 0, rejected: ingest["rejected"] as? Int ?? 0, tags: ingest["tags"] as? Int ?? 0,
            connected: mqtt["connected"] as? Bool ?? false)
    }

    /// Waits until the sample count stops growing (for `quietPolls` polls 100 ms apart); returns
    /// the final status and the seconds from `startedAt` to the last growth seen.
    func drain(from before: Status, startedAt: UInt64, quietPolls: Int = 5) throws -> (Status, Double) {
        var current = try self.status()
        var lastGrowth = monotonicNanoseconds()
        var quiet = 0
        while quiet < quietPolls {
            usleep(100_000)
            let next = try self.status()
            if next.samples != current.samples {
                lastGrowth = monotonicNanoseconds()
                quiet = 0
            } else {
                quiet += 1
            }
            current = next
        }
        // The last growth was seen up to one poll after it happened.
        return (current, max(1e-9, Double(lastGrowth - startedAt) / 1e9 - 0.05))
    }

    /// User + system CPU seconds of the child so far.
    func cpuSeconds() -> Double { DangTools.cpuSeconds(pid: self.pid) }

    /// Peak resident set (VmHWM) in MiB.
    func peakRSSMiB() -> Double { self.statusMiB("VmHWM:") }

    /// The resident memory now: the process's own (anonymous: heap, stacks) and its mapped files
    /// (code and libraries, shared with other processes that map them).
    func residentMiB() -> (anonymous: Double, files: Double) { (self.statusMiB("RssAnon:"), self.statusMiB("RssFile:")) }

    /// A `kB` line of /proc/PID/status, in MiB.
    private func statusMiB(_ key: String) -> Double {
        guard let status = try? String(contentsOfFile: "/proc/\(self.pid)/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix(key) })
        else { return .nan }
        let kib = line.split(separator: " ").compactMap { Double($0) }.first ?? .nan
        return kib / 1024
    }
}
