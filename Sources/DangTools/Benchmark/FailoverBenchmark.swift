import Curl
import Foundation
import LibPQ
import Mosquitto
import Synchronization
#if canImport(Glibc)
import Glibc
package import OrchestratorCore
#endif

/// `dang bench-failover` (docs/availability.md, "Measured"): N instances of `dang run` on the
/// shipped configuration with `ha.enabled`, one broker and one PostgreSQL; the active is killed
/// (`kill`) or cut from the database (`partition`) mid-stream, with an alarm open and its
/// invocation unanswered. Every run measures the takeover and counts what was raised, invoked or
/// recorded twice, or lost.
///
/// One run:
/// 1. a database of its own; each instance reaches it through a ``PausableProxy``;
/// 2. the instances start, the first takes the lease, the others stand by;
/// 3. three tags of different units get 40 normal samples; the first goes past its HI limit: one
///    alarm, one forecasting invocation, left unanswered (this benchmark plays the module);
/// 4. the fault: SIGKILL of the active, or its database connection blocked (sockets open, nothing
///    relayed — a partition), or every instance's (`database`). 100 ms later the module answers the
///    first invocation (before any takeover); 300 ms later the second tag goes past its limit;
/// 5. the lease changes hands (measured from the fault, in PostgreSQL) — or, with the database
///    away for all, the lease runs out and the active must be isolated, still acting; 500 ms later
///    the third tag breaches; the database comes back (the active must hold the lease still); the
///    module answers every invocation; all three tags return to normal;
/// 6. a partition heals: the former active's records from before it stood down must be refused
///    (the fence), and it must stand by;
/// 7. the wire and the record are checked.
package enum FailoverBenchmark {
    package enum Scenario: String, CaseIterable, Sendable, Codable {
        case kill
        case partition
        /// The database away for every instance: no one can take the lease, and the active must go
        /// on raising alarms (isolated) until it answers again.
        case database
        /// `sharding.shards: 5` (the shipped units land on shards 0 and 1): the holder of the first
        /// tag's shard is killed; every shard it held must move to the others.
        case shard
    }

    /// The shards of the `shard` scenario.
    static let shards = 5

    package struct Options: Sendable {
        package var executable: String
        package var runs = 3
        package var instances = 3
        /// The lease, in seconds.
        package var lease = 3
        package var scenarios: [Scenario] = Scenario.allCases
        package var databaseURL: String?
        /// The shipped configuration (and the topic map it names).
        package var config = "config/orchestrator.yaml"

        package init(executable: String) { self.executable = executable }
    }

    package struct Run: Sendable, Codable {
        package var scenario: Scenario
        package var run: Int
        /// From the fault to another instance holding the lease, in PostgreSQL (ms).
        package var takeoverMs: Int
        package var alarms: Int
        /// Raises of an alert id already raised, or of an open condition (tag, kind, severity).
        package var raisedTwice: Int
        /// Planned breaches without exactly one raise and one clear of the same id.
        package var breachesWrong: Int
        package var invocations: Int
        /// Attempts of an invocation published more than once.
        package var publishedTwice: Int
        /// Invocations published whose decision or invocation row is not in the record.
        package var lostFromRecord: Int
        /// Invocations published that got no `ok` row (the module answered every one).
        package var unanswered: Int
        /// Alarms raised with no decision about them in the record (invoke, or skip with its reason).
        package var undecided: Int = 0
        /// Alarms decided without an invocation, and the step that said no (`shard`: a unit that
        /// moved has no sample history yet, only its `tag_state`).
        package var skipped: [String] = []
        package var alertRows: Int
        /// Limit episodes left `raised` in the record once every tag is back to normal.
        package var openAlertRows: Int
        /// Records of the former active refused by the fence once the partition healed.
        package var fenced: Int?
        package var violations: [String]
    }

    package struct Report: Sendable, Codable {
        package var lease: Int
        package var instances: Int
        package var runs: [Run]
    }

    /// The tags of the runs (the shipped map): HI limits, normal values, units apart so that
    /// cooldowns do not join them.
    static let tags: [(tag: String, normal: Double, breach: Double)] = [
        ("r1/cdu/cdu1/TI-105", 355, 371.5),
        ("r1/fcc/fcc1/TI-201", 525, 545),
        ("r1/cdu/cdu1/TI-102", 118, 134),
    ]

    package static func run(_ options: Options, log: @escaping (String) -> Void) throws -> Report {
        let servers = try BenchServers(databaseURL: options.databaseURL, log: log)
        defer { servers.stop() }
        var report = Report(lease: options.lease, instances: options.instances, runs: [])
        for run in 1...options.runs {
            for scenario in options.scenarios {
                let result = try Self.once(scenario, run: run, options: options, servers: servers, log: log)
                log(
                    "\(scenario.rawValue) #\(run): " + (result.takeoverMs < 0 ? "no takeover (isolated, then active again)" : "takeover \(result.takeoverMs) ms")
                        + "; raised twice \(result.raisedTwice), published twice "
                        + "\(result.publishedTwice), lost \(result.lostFromRecord)"
                        + (result.fenced.map { ", fenced \($0)" } ?? "") + (result.skipped.isEmpty ? "" : "; skipped: \(result.skipped)")
                        + (result.violations.isEmpty ? "" : "; VIOLATIONS: \(result.violations)"))
                report.runs.append(result)
            }
        }
        return report
    }

    // MARK: - One run

    /// A data-quality notice on the breaching tag keeps its data out of an invocation until the
    /// module's window has passed the notice (docs/decisions.md): then the first breach could not
    /// make the invocation each scenario starts from. The startup stream has raised one in a few
    /// loaded runs (the record says which, in the log line below): the breach waits for the
    /// window (`window` samples of the configuration's forecasting module, at the plant's 1 Hz),
    /// and the run goes on as designed.
    private static func waitOutDataQuality(_ record: PostgresConnection, tag: String, windowSeconds: Int, log: (String) -> Void) throws {
        usleep(500_000)  // the record is written within a flush interval
        let notices = Self.dataQualityNotices(record, tag: tag)
        guard !notices.isEmpty else { return }
        log("note: data-quality notices at the start (\(notices.joined(separator: "; "))); the breach waits until the module's window (\(windowSeconds) s) has passed them")
        let margin = windowSeconds + 5
        try waitFor("the data-quality notices on \(tag) to leave the module's window", seconds: Double(margin + 90)) {
            let open = try? record.query(
                "SELECT count(*) FROM alerts WHERE kind = 'data_quality' AND tag = $1 AND (cleared_at IS NULL OR cleared_at > now() - make_interval(secs => $2))",
                [tag, "\(margin)"])
            return (open?.rows.first?.first ?? nil).flatMap { Int($0) } == 0
        }
    }

    /// The record's data-quality notices (of `tag`, or of every tag), oldest first, one line each
    /// (the alert's message, which names its tag).
    private static func dataQualityNotices(_ record: PostgresConnection, tag: String? = nil) -> [String] {
        let rows = (try? record.query(
            "SELECT tag, state, message, raised_at::text FROM alerts WHERE kind = 'data_quality' AND ($1::text IS NULL OR tag = $1) ORDER BY raised_at", [tag]))?.rows ?? []
        return rows.map { "\($0[2] ?? "\($0[0] ?? "?")") (raised at \($0[3] ?? "?"), \($0[1] ?? "?"))" }
    }

    /// What the record says about a missing first invocation: the decisions made (a skip names its
    /// step and why) and the data-quality notices, which keep a tag's data out of an invocation
    /// for a whole module window.
    private static func whyNoInvocation(_ record: PostgresConnection) -> String {
        var said: [String] = []
        let decisions = (try? record.query("SELECT action, reasons FROM decisions ORDER BY ts"))?.rows ?? []
        for row in decisions {
            var line = "decision \(row[0] ?? "?")"
            if let reasons = row[1] ?? nil, let steps = try? JSONSerialization.jsonObject(with: Data(reasons.utf8)) as? [[String: Any]],
                let skip = steps.first(where: { $0["verdict"] as? String == "skip" })
            {
                line += " (\(skip["step"] ?? "?"): \(skip["detail"] ?? ""))"
            }
            said.append(line)
        }
        said += Self.dataQualityNotices(record).map { "data_quality " + $0 }
        return said.isEmpty ? "the record holds no decision and no data-quality notice" : said.joined(separator: "; ")
    }

    private static func once(_ scenario: Scenario, run: Int, options: Options, servers: BenchServers, log: (String) -> Void) throws -> Run {
        let tag = "\(scenario.rawValue)\(run)"
        let directory = servers.directory.appendingPathComponent("failover-\(tag)")
        do {
            return try Self.once(scenario, run: run, tag: tag, directory: directory, options: options, servers: servers, log: log)
        } catch {
            // What the instances said, for the error.
            var tails = ""
            for file in ((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []).sorted() where file.hasSuffix(".log") {
                let text = (try? String(contentsOf: directory.appendingPathComponent(file), encoding: .utf8)) ?? ""
                tails += "\n--- \(file):\n" + text.split(separator: "\n").suffix(8).joined(separator: "\n")
            }
            throw BenchError(message: "\(scenario.rawValue) #\(run): \(error)\(tails)")
        }
    }

    private static func once(
        _ scenario: Scenario, run: Int, tag: String, directory: URL, options: Options, servers: BenchServers, log: (String) -> Void
    ) throws -> Run {
        let prefix = "fo\(getpid())\(tag)"
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let (name, databaseURL, admin) = try RecordBenchmark.scratchDatabase(serverURL: servers.databaseURL, prefix: "dang_failover")
        defer { try? admin.execute(script: "DROP DATABASE IF EXISTS \(name) WITH (FORCE)") }
        let record = try PostgresConnection(conninfo: databaseURL)
        guard let components = URLComponents(string: databaseURL), let databasePort = components.port else {
            throw BenchError(message: "the database URL has no port: \(databaseURL)")
        }

        // The shipped configuration, with the run's prefix and ha on.
        let shipped = try String(contentsOfFile: options.config, encoding: .utf8)
        let configPath = options.config.hasPrefix("/") ? options.config : FileManager.default.currentDirectoryPath + "/" + options.config
        let mapPath = (((configPath as NSString).deletingLastPathComponent as NSString).appendingPathComponent("../topics/refinery.yaml") as NSString)
            .standardizingPath
        guard shipped.contains("map: ../topics/refinery.yaml"), shipped.contains("\n  prefix: apos") else {
            throw BenchError(message: "\(options.config) is not the shipped configuration (its map or prefix line moved)")
        }
        let base = shipped.replacingOccurrences(of: "map: ../topics/refinery.yaml", with: "map: \(mapPath)")
            .replacingOccurrences(of: "\n  prefix: apos", with: "\n  prefix: \(prefix)")

        // The observer: every alert, invocation and status; and the module, answering on demand.
        let wire = Wire()
        var observerOptions = MQTTConnectionOptions(host: "127.0.0.1", port: servers.brokerPort, clientID: "\(prefix)-observer")
        observerOptions.subscriptions = [("\(prefix)/alert/#", 1), ("\(prefix)/cmd/#", 1)]
        let holder = Holder()
        let observer = try MosquittoClient(
            options: observerOptions,
            onMessage: { message in
                let topic = String(decoding: message.topic, as: UTF8.self)
                let payload = Array(message.payload)
                wire.note(topic: topic, payload: payload)
                if topic.hasPrefix("\(prefix)/cmd/"), wire.answering, let client = holder.client {
                    Self.answer(payload, module: String(topic.dropFirst("\(prefix)/cmd/".count)), prefix: prefix, client: client)
                }
            },
            onEvent: { if case .connected = $0 { wire.connected.store(true, ordering: .relaxed) } })
        holder.client = observer
        try observer.start()
        defer { observer.disconnect() }
        try waitFor("the observer's connection") { wire.connected.load(ordering: .relaxed) }

        // The instances, each through its own proxy to PostgreSQL.
        var instances: [Instance] = []
        defer {
            for instance in instances {
                if ChildProcess.isRunning(instance.pid) { ChildProcess.stop(instance.pid) }
                instance.proxy.stop()
            }
        }
        for index in 0..<options.instances {
            let id = "\(prefix)-\(index)"
            let file = directory.appendingPathComponent("\(id).yaml")
            let sharding = scenario == .shard ? "sharding:\n  shards: \(Self.shards)\n" : ""
            try (base + "\ninstance:\n  id: \(id)\nha:\n  enabled: true\n  lease: \(options.lease)s\n" + sharding)
                .write(to: file, atomically: true, encoding: .utf8)
            let proxy = try PausableProxy(targetPort: databasePort)
            var through = components
            through.port = proxy.port
            let http = try BenchServers.freePort()
            let pid = try ChildProcess.spawn(
                [
                    options.executable, "run", "--config", file.path, "--log-level", "info", "--mqtt-url", "mqtt://127.0.0.1:\(servers.brokerPort)",
                    "--database-url", through.string!, "--spool-dir", directory.appendingPathComponent("spool-\(index)").path,
                    "--http", "127.0.0.1:\(http)",
                ], output: directory.appendingPathComponent("\(id).log").path)
            instances.append(Instance(id: id, pid: pid, http: http, proxy: proxy))
            if index == 0 {
                try waitFor("the first instance to take the lease", seconds: 30) { Self.holder(record) == id }
            }
        }
        var active = instances[0]
        var moving = ["active"]
        if scenario == .shard {
            // Every instance holds its share (the first took them all, and handed some over).
            try waitFor("the shards spread over the instances", seconds: 60) {
                instances.allSatisfy { !(Self.shards(of: $0)?.isEmpty ?? true) }
                    && Self.count(record, "SELECT count(*) FROM leases WHERE expires_at > now() AND name NOT LIKE 'instance/%'") == Self.shards
            }
            // The victim: the holder of the first tag's unit (its alarm open, its invocation pending).
            let map = ShardMap(count: Self.shards, topicMap: try TopicMap.load(file: mapPath))
            let shard = map.shard(ofTag: Self.tags[0].tag)
            guard let victim = instances.first(where: { Self.shards(of: $0)?.contains(shard) == true }) else {
                throw BenchError(message: "no instance says it holds shard \(shard)")
            }
            active = victim
            moving = (Self.shards(of: active) ?? []).map(ShardMap.leaseName)
            log("shard: \(active.id) holds \(moving), to be killed")
        } else {
            for instance in instances.dropFirst() {
                try waitFor("\(instance.id) to stand by", seconds: 30) { Self.role(instance) == "standby" }
            }
        }
        let survivors = Set(instances.map(\.id)).subtracting([active.id])

        // Normal operation, then the first breach: an alarm and an invocation left unanswered.
        var publisherOptions = MQTTConnectionOptions(host: "127.0.0.1", port: servers.brokerPort, clientID: "\(prefix)-plant")
        publisherOptions.cleanStart = true
        let plant = try MosquittoClient(options: publisherOptions, onMessage: { _ in }, onEvent: { _ in })
        try plant.start()
        defer { plant.disconnect() }
        // 40 s of history at 1 Hz, then the plant goes on at 1 Hz in real time (regular samples: a
        // jump in the sampling would be a data-quality notice, and no invocation would follow).
        let plantStream = PlantStream(client: plant, tags: Self.tags.map { ($0.tag, $0.normal) })
        plantStream.backfill(seconds: 40)
        plantStream.start()
        defer { plantStream.stop() }
        usleep(1_500_000)
        let forecastingWindow = (try? OrchestratorConfig.load(file: configPath))?.modules[.forecasting]?.window ?? 120
        try Self.waitOutDataQuality(record, tag: Self.tags[0].tag, windowSeconds: forecastingWindow, log: log)
        plantStream.set(0, Self.tags[0].breach)
        do {
            try waitFor("the first alarm and its invocation, recorded", seconds: 15) {
                wire.raises(tag: Self.tags[0].tag).count == 1 && wire.invocationIDs.count == 1
                    && Self.count(record, "SELECT count(*) FROM invocations WHERE published_at IS NOT NULL") == 1
            }
        } catch {
            throw BenchError(message: "\(error); \(Self.whyNoInvocation(record))")
        }

        // The fault.
        let faultAt = monotonicNanoseconds()
        switch scenario {
        case .kill, .shard:
            kill(active.pid, SIGKILL)
            ChildProcess.wait(active.pid)
        case .partition:
            active.proxy.block()
        case .database:
            for instance in instances { instance.proxy.block() }
        }
        // The module answers the first invocation now, before any takeover: to the dead, cut-off or
        // isolated active. Its result must be recorded all the same (a standby hears it).
        usleep(100_000)
        let early = wire.invocationMessages()
        for (topic, payload) in early {
            Self.answer(payload, module: String(topic.dropFirst("\(prefix)/cmd/".count)), prefix: prefix, client: observer)
        }
        usleep(200_000)
        plantStream.set(1, Self.tags[1].breach)
        var takeover = -1
        var isolatedRole: String? = nil
        if scenario == .database {
            // No one can take the lease; past it, the active must still act.
            usleep(useconds_t(options.lease) * 1_300_000)
            isolatedRole = Self.role(active)
        } else {
            try waitFor("another instance to take the lease", seconds: Double(options.lease) * 4) {
                guard moving.allSatisfy({ Self.holder(record, of: $0).map(survivors.contains) ?? false }) else { return false }
                takeover = Int((monotonicNanoseconds() - faultAt) / 1_000_000)
                return true
            }
        }
        usleep(500_000)
        plantStream.set(2, Self.tags[2].breach)
        try waitFor("the third alarm", seconds: 10) { wire.raises(tag: Self.tags[2].tag).count >= 1 }
        if scenario == .database {
            for instance in instances { instance.proxy.unblock() }
            try? waitFor("the active to hold the lease again", seconds: Double(options.lease) * 3) { Self.role(active) == "active" }
        }
        // The module answers what it was sent since, and from now on answers at once. (Not the first
        // invocation again: its answer went before the takeover.)
        wire.answering = true
        for (topic, payload) in wire.invocationMessages().dropFirst(early.count) {
            Self.answer(payload, module: String(topic.dropFirst("\(prefix)/cmd/".count)), prefix: prefix, client: observer)
        }
        for index in Self.tags.indices { plantStream.set(index, Self.tags[index].normal) }
        try? waitFor("every alarm cleared", seconds: 10) { Self.tags.allSatisfy { wire.clears(tag: $0.tag).count >= 1 } }

        var fenced: Int? = nil
        if scenario == .partition {
            active.proxy.unblock()
            try? waitFor("the former active to stand by", seconds: 15) { Self.role(active) == "standby" }
            try? waitFor("the former active's spool to drain", seconds: 15) { (Self.status(active)?["database"]?["spool_bytes"] as? Int ?? 1) == 0 }
            fenced = Self.status(active)?["database"]?["fenced"] as? Int
        }
        usleep(1_500_000)  // what is in flight lands

        // The checks.
        var result = Run(
            scenario: scenario, run: run, takeoverMs: takeover, alarms: 0, raisedTwice: 0, breachesWrong: 0, invocations: 0, publishedTwice: 0,
            lostFromRecord: 0, unanswered: 0, alertRows: 0, openAlertRows: 0, fenced: fenced, violations: [])
        let alerts = wire.alerts()
        var raisedIDs: Set<String> = []
        var openConditions: Set<String> = []
        for alert in alerts {
            let condition = "\(alert.tag) \(alert.kind) \(alert.severity)"
            if alert.state == "raised" {
                result.alarms += 1
                if !raisedIDs.insert(alert.id).inserted || !openConditions.insert(condition).inserted { result.raisedTwice += 1 }
            } else {
                openConditions.remove(condition)
            }
        }
        for planned in Self.tags {
            let raises = wire.raises(tag: planned.tag)
            let clears = wire.clears(tag: planned.tag)
            if raises.count != 1 || clears != raises { result.breachesWrong += 1 }
        }
        let attempts = wire.invocationAttempts()
        result.invocations = Set(attempts.map(\.id)).count
        result.publishedTwice = attempts.count - Set(attempts.map { "\($0.id) \($0.attempt)" }).count
        for id in Set(attempts.map(\.id)) {
            let row = try? record.query(
                "SELECT i.status FROM invocations i JOIN decisions d USING (decision_id) WHERE i.invocation_id = $1::uuid", [id])
            if let status = row?.rows.first?.first ?? nil {
                if status != "ok" { result.unanswered += 1 }
            } else {
                result.lostFromRecord += 1
            }
        }
        for id in Set(Self.tags.flatMap { wire.raises(tag: $0.tag) }) {
            let decided = try? record.query("SELECT action, reasons FROM decisions WHERE trigger->>'alert_id' = $1", [id])
            guard let rows = decided?.rows, !rows.isEmpty else {
                result.undecided += 1
                continue
            }
            if !rows.contains(where: { $0[0] == "invoke" }), let reasons = rows.first?[1] ?? nil,
                let steps = try? JSONSerialization.jsonObject(with: Data(reasons.utf8)) as? [[String: Any]],
                let no = steps.first(where: { $0["verdict"] as? String == "skip" })
            {
                result.skipped.append("\(no["step"] ?? "?"): \(no["detail"] ?? "")")
            }
        }
        result.alertRows = Self.count(record, "SELECT count(*) FROM alerts WHERE kind = 'limit'") ?? -1
        result.openAlertRows = Self.count(record, "SELECT count(*) FROM alerts WHERE kind = 'limit' AND state = 'raised'") ?? -1

        if scenario == .database {
            if isolatedRole != "isolated" { result.violations.append("past its lease without the database, the active was \(isolatedRole ?? "unreachable"), not isolated") }
            if Self.holder(record) != active.id { result.violations.append("the lease is not the first active's once the database is back") }
        } else if takeover < 0 || takeover > options.lease * 2000 {
            result.violations.append("takeover \(takeover) ms > 2 × lease")
        }
        if result.raisedTwice > 0 { result.violations.append("\(result.raisedTwice) raised twice") }
        if result.breachesWrong > 0 { result.violations.append("\(result.breachesWrong) breaches without exactly one raise and its clear") }
        if result.undecided > 0 { result.violations.append("\(result.undecided) alarms without a decision in the record") }
        // (A unit that moved with its shard has no sample history at its new holder yet: a module
        // that needs one is not invoked for it — decided, and recorded why.)
        if result.invocations + result.skipped.count < 3 || result.invocations < 1 {
            result.violations.append("\(result.invocations) invocations and \(result.skipped.count) decisions to skip for 3 alarms")
        }
        if scenario != .shard && result.invocations < 3 { result.violations.append("\(result.invocations) invocations for 3 alarms") }
        if result.publishedTwice > 0 { result.violations.append("\(result.publishedTwice) invocation attempts published twice") }
        if result.lostFromRecord > 0 { result.violations.append("\(result.lostFromRecord) invocations not in the record") }
        if result.unanswered > 0 { result.violations.append("\(result.unanswered) invocations without their result recorded") }
        if result.alertRows != Self.tags.count { result.violations.append("\(result.alertRows) limit rows in alerts for \(Self.tags.count) breaches") }
        if result.openAlertRows != 0 { result.violations.append("\(result.openAlertRows) limit rows left raised") }
        if scenario == .partition, (fenced ?? 0) == 0 { result.violations.append("the former active's records were not fenced") }
        if !result.violations.isEmpty {
            // (The benchmark's directory goes with its servers: the run's logs are kept apart.)
            let kept = FileManager.default.temporaryDirectory.appendingPathComponent("dang-failover-\(prefix)")
            try? FileManager.default.copyItem(at: directory, to: kept)
            log("logs kept in \(kept.path)")
        }
        return result
    }

    // MARK: - Helpers

    private struct Instance {
        let id: String
        let pid: pid_t
        let http: Int
        let proxy: PausableProxy
    }

    /// The holder of a lease (`active`, or a shard's) while it is current.
    private static func holder(_ record: PostgresConnection, of name: String = "active") -> String? {
        (try? record.query("SELECT holder FROM leases WHERE name = $1 AND expires_at > now()", [name]))?.rows.first?.first ?? nil
    }

    /// The shards an instance says it holds (`/status`), nil when it does not answer.
    private static func shards(of instance: Instance) -> [Int]? {
        Self.status(instance)?["shards"]?["value"] as? [Int]
    }

    private static func count(_ record: PostgresConnection, _ sql: String) -> Int? {
        ((try? record.query(sql))?.rows.first?.first ?? nil).flatMap { Int($0) }
    }

    private static func status(_ instance: Instance) -> [String: [String: Any]]? {
        var request = HTTPRequest(url: "http://127.0.0.1:\(instance.http)/status")
        request.method = "GET"
        request.totalTimeout = .seconds(2)
        request.connectTimeout = .seconds(1)
        guard let response = try? CurlTransfer.perform(request).get(), response.status == 200,
            let object = try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any]
        else { return nil }
        var sections: [String: [String: Any]] = [:]
        for (key, value) in object { sections[key] = value as? [String: Any] ?? ["value": value] }
        return sections
    }

    private static func role(_ instance: Instance) -> String? {
        Self.status(instance)?["role"]?["value"] as? String
    }

    /// A module's answer: `ok`, with an empty output.
    private static func answer(_ payload: [UInt8], module: String, prefix: String, client: MosquittoClient) {
        guard let object = try? JSONSerialization.jsonObject(with: Data(payload)) as? [String: Any], let id = object["invocation_id"] as? String else { return }
        let body = "{\"invocation_id\": \"\(id)\", \"status\": \"ok\", \"output\": {}}"
        try? client.publish(topic: "\(prefix)/result/\(module)", payload: Array(body.utf8), qos: 1, retain: false)
    }
}

/// The plant: each tag's value at 1 Hz, stamped with the time of its second.
private final class PlantStream: @unchecked Sendable {
    private let client: MosquittoClient
    private let tags: [String]
    private let levels: Mutex<[Double]>
    private let running = Atomic<Bool>(false)
    private let done = DispatchSemaphore(value: 0)
    /// The next second to publish (epoch ms, a multiple of 1000).
    private var next: Int64

    init(client: MosquittoClient, tags: [(tag: String, normal: Double)]) {
        self.client = client
        self.tags = tags.map(\.tag)
        self.levels = Mutex(tags.map(\.normal))
        self.next = EpochMilliseconds.now() / 1000 * 1000
    }

    func set(_ index: Int, _ value: Double) { self.levels.withLock { $0[index] = value } }

    private func publish(at time: Int64, wobble: Int) {
        let levels = self.levels.withLock { $0 }
        for (index, tag) in self.tags.enumerated() {
            let body = "{\"ts\": \(time), \"v\": \(levels[index] + Double(wobble % 3) * 0.1)}"
            try? self.client.publish(topic: "plant/\(tag)", payload: Array(body.utf8), qos: 1, retain: false)
        }
    }

    /// The last `seconds` seconds, at once.
    func backfill(seconds: Int) {
        for step in stride(from: seconds, to: 0, by: -1) { self.publish(at: self.next - Int64(step) * 1000, wobble: step) }
    }

    func start() {
        self.running.store(true, ordering: .relaxed)
        Thread { [self] in
            var wobble = 0
            while self.running.load(ordering: .relaxed) {
                let now = EpochMilliseconds.now()
                if now >= self.next {
                    self.publish(at: self.next, wobble: wobble)
                    wobble += 1
                    self.next += 1000
                } else {
                    usleep(useconds_t(min(100, self.next - now) * 1000))
                }
            }
            self.done.signal()
        }.start()
    }

    func stop() {
        guard self.running.exchange(false, ordering: .relaxed) else { return }
        self.done.wait()
    }
}

/// What the observer saw.
private final class Wire: Sendable {
    struct Alert {
        let id: String
        let state: String
        let tag: String
        let kind: String
        let severity: String
    }

    private let messages = Mutex<[(topic: String, payload: [UInt8])]>([])
    private let answerNow = Atomic<Bool>(false)
    let connected = Atomic<Bool>(false)

    var answering: Bool {
        get { self.answerNow.load(ordering: .relaxed) }
        set { self.answerNow.store(newValue, ordering: .relaxed) }
    }

    func note(topic: String, payload: [UInt8]) {
        self.messages.withLock { $0.append((topic, payload)) }
    }

    private func objects(_ isWanted: (String) -> Bool) -> [[String: Any]] {
        self.messages.withLock { $0 }.filter { isWanted($0.topic) }.compactMap { try? JSONSerialization.jsonObject(with: Data($0.payload)) as? [String: Any] }
    }

    func alerts() -> [Alert] {
        self.objects { $0.contains("/alert/") }.compactMap { object in
            guard let id = object["alert_id"] as? String, let state = object["state"] as? String, let tag = object["tag"] as? String,
                let kind = object["kind"] as? String, let severity = object["severity"] as? String
            else { return nil }
            return Alert(id: id, state: state, tag: tag, kind: kind, severity: severity)
        }
    }

    func raises(tag: String) -> [String] { self.alerts().filter { $0.tag == tag && $0.kind == "limit" && $0.state == "raised" }.map(\.id) }
    func clears(tag: String) -> [String] { self.alerts().filter { $0.tag == tag && $0.kind == "limit" && $0.state == "cleared" }.map(\.id) }

    func invocationMessages() -> [(topic: String, payload: [UInt8])] { self.messages.withLock { $0 }.filter { $0.topic.contains("/cmd/") } }

    func invocationAttempts() -> [(id: String, attempt: Int)] {
        self.objects { $0.contains("/cmd/") }.compactMap { object in
            guard let id = object["invocation_id"] as? String else { return nil }
            return (id, object["attempt"] as? Int ?? 0)
        }
    }

    var invocationIDs: Set<String> { Set(self.invocationAttempts().map(\.id)) }
}

/// The observer's client, for its own message handler.
private final class Holder: @unchecked Sendable {
    // Set once before the client starts.
    weak var client: MosquittoClient?
}
