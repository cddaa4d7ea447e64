import Curl
import Foundation
import Histogram
import Mosquitto
import Synchronization
#if canImport(Glibc)
import Glibc
package import OrchestratorCore
#endif

/// `dang bench`: the orchestrator end to end against a private broker, as ratios against a bare
/// libmosquitto subscriber measured in the same run (docs/performance.md).
///
/// The orchestrator is the real `dang run`, a child process with a generated configuration, so
/// its CPU time and peak RSS are its own (from /proc) and nothing of the benchmark's runs inside
/// it. Its counters come from `GET /status`.
package struct WireBenchmark {
    package enum Phase: String, CaseIterable, Sendable {
        /// A bare subscriber's receive rate at full speed: the baseline.
        case baseline
        /// The orchestrator under the same load.
        case ingest
        /// Alert and invocation latency at each paced rate.
        case latency
        /// QoS 1 at a paced rate: nothing may be lost.
        case qos1
        /// Peak RSS with many tags.
        case memory
    }

    package struct Options: Sendable {
        package var executable: String
        package var databaseURL: String?
        package var tags = 1000
        package var seconds = 5.0
        package var latencyRates: [Double] = [10_000, 50_000]
        package var qos1Rate = 20_000.0
        package var memoryTags = 10_000
        /// Samples per tag in the memory phase: 20 (a plant just started), or enough to fill every
        /// window (about 1,100 with the default detection settings) for the steady state.
        package var memorySamples = 20
        /// `detection.history` of the memory phase's orchestrator (nil: what its module window of
        /// 10 needs, the least kept, 16; the shipped configuration's forecasting window keeps 120).
        package var memoryHistory: Int?
        package var phases = Set(Phase.allCases)
        /// Without the decision side (no trigger rules): what the alert costs when no decision
        /// follows it on the ingest thread.
        package var decisions = true
        /// Console clients (``ConsoleLoad``) beside the ingest and latency phases: 0 for none.
        package var consoleClients = 0

        package init(executable: String) { self.executable = executable }
    }

    /// One line of the report.
    package struct Row: Sendable {
        package var name: String
        package var values: [(String, Double)]
        package var text: String

        func value(_ key: String) -> Double? { self.values.first { $0.0 == key }?.1 }
    }

    let options: Options
    let progress: @Sendable (String) -> Void

    package init(options: Options, progress: @escaping @Sendable (String) -> Void) {
        self.options = options
        self.progress = progress
    }

    /// Runs the chosen phases; returns the rows in order.
    package func run() throws -> [Row] {
        let servers = try BenchServers(databaseURL: self.options.databaseURL, log: self.progress)
        defer { servers.stop() }
        var rows: [Row] = []
        var baselineRate: Double?
        var pacedBaselines: [Double: Double] = [:]
        let phases = self.options.phases

        if phases.contains(.baseline) {
            self.progress("baseline: bare libmosquitto subscriber, \(self.options.tags) tags, QoS 0, full speed, \(self.options.seconds) s")
            let (received, load, seconds, cpu) = try self.bareSubscriber(port: servers.brokerPort, directory: servers.directory, rate: 0)
            let rate = Double(received) / seconds
            let perSample = cpu / Double(max(received, 1)) * 1e6
            baselineRate = rate
            rows.append(
                Row(
                    name: "baseline",
                    values: [
                        ("published", Double(load.published)), ("received", Double(received)), ("rate", rate), ("cpu_us_per_sample", perSample),
                    ],
                    text: String(
                        format: "bare subscriber: %@ msg/s received (%@ published), %.2f µs CPU per message", fmt(rate), fmt(load.rate),
                        perSample)))
            // The same subscriber at the latency phase's paced rates: there every message wakes the
            // receiving thread on its own, which costs far more CPU per message than a full-speed
            // stream does (the latency rows are compared with these).
            if phases.contains(.latency) {
                for paced in self.options.latencyRates {
                    self.progress("baseline: bare libmosquitto subscriber, \(fmt(paced)) msg/s paced, \(self.options.seconds) s")
                    let (received, _, _, cpu) = try self.bareSubscriber(port: servers.brokerPort, directory: servers.directory, rate: paced)
                    let perSample = cpu / Double(max(received, 1)) * 1e6
                    pacedBaselines[paced] = perSample
                    rows.append(
                        Row(
                            name: "baseline@\(Int(paced))", values: [("received", Double(received)), ("cpu_us_per_sample", perSample)],
                            text: String(format: "bare subscriber at %@ msg/s paced: %.2f µs CPU per message", fmt(paced), perSample)))
                }
            }
        }

        if phases.contains(.ingest) || phases.contains(.latency) {
            try self.withChild(servers, tags: self.options.tags, qos: 0, name: "ingest") { child in
                let console = self.options.consoleClients > 0 ? ConsoleLoad(port: child.httpPort, clients: self.options.consoleClients) : nil
                if let console {
                    self.progress("console: \(self.options.consoleClients) clients on GET /events, re-reading the alarm view on every alert")
                    console.start()
                }
                defer { if let console { rows.append(console.stop()) } }
                if phases.contains(.ingest) {
                    self.progress("ingest: dang run, \(self.options.tags) tags, every detector on, QoS 0, full speed, \(self.options.seconds) s")
                    rows.append(try self.ingest(child: child, port: servers.brokerPort, baseline: baselineRate))
                }
                if phases.contains(.latency) {
                    for rate in self.options.latencyRates {
                        self.progress("latency: \(fmt(rate)) samples/s paced, about 100 limit breaches a second, \(self.options.seconds) s")
                        rows.append(try self.latency(child: child, port: servers.brokerPort, rate: rate, baselineCPU: pacedBaselines[rate]))
                    }
                }
            }
        }

        if phases.contains(.qos1) {
            try self.withChild(servers, tags: self.options.tags, qos: 1, name: "qos1") { child in
                self.progress("qos1: \(fmt(self.options.qos1Rate)) samples/s at QoS 1, \(self.options.seconds) s")
                rows.append(try self.qos1(child: child, port: servers.brokerPort))
            }
        }

        if phases.contains(.memory) {
            try self.withChild(servers, tags: self.options.memoryTags, qos: 0, name: "memory", history: self.options.memoryHistory) { child in
                self.progress(
                    "memory: \(self.options.memoryTags) tags, \(self.options.memorySamples) samples each"
                        + (self.options.memoryHistory.map { ", history \($0)" } ?? ""))
                rows.append(try self.memory(child: child, port: servers.brokerPort))
            }
        }
        return rows
    }

    /// A fresh `dang run` child for a phase, connected to the broker, stopped when `body` returns.
    private func withChild(
        _ servers: BenchServers, tags: Int, qos: Int, name: String, history: Int? = nil, _ body: (OrchestratorChild) throws -> Void
    ) throws {
        let child = try OrchestratorChild(
            executable: self.options.executable, servers: servers, tags: tags, qos: qos, name: name, decisions: self.options.decisions,
            history: history)
        defer { child.stop() }
        try child.waitUntilConnected()
        try body(child)
    }

    // MARK: - Phases

    /// The baseline: `dang bench-subscriber`, a bare libmosquitto subscriber in a process of its
    /// own (as `dang run` is), counting what arrives.
    private func bareSubscriber(
        port: Int, directory: URL, rate: Double
    ) throws -> (received: Int, load: LoadGenerator.Report, seconds: Double, cpu: Double) {
        let report = directory.appendingPathComponent("bare-subscriber.txt").path
        let pid = try ChildProcess.spawn([self.options.executable, "bench-subscriber", "--port", "\(port)", "--report", report])
        defer { ChildProcess.stop(pid) }
        @Sendable func read() -> BareSubscriber.Counts? { BareSubscriber.Counts(file: report) }
        try waitFor("the bare subscriber to connect") { read() != nil }
        usleep(200_000)
        let cpuBefore = cpuSeconds(pid: pid)
        let load = try self.generate(LoadGenerator.Plan(tags: self.options.tags, rate: rate, seconds: self.options.seconds, qos: 0), port: port) {
            "\(read()?.received ?? 0) received"
        }
        // Until nothing more arrives for 300 ms.
        var counts = read()
        while true {
            usleep(300_000)
            let next = read()
            if next?.received == counts?.received { break }
            counts = next
        }
        let final = counts ?? BareSubscriber.Counts(received: 0, first: 0, last: 0)
        let seconds = Double(final.last &- final.first) / 1e9
        return (final.received, load.report, max(seconds, 1e-9), cpuSeconds(pid: pid) - cpuBefore)
    }

    private func ingest(child: OrchestratorChild, port: Int, baseline: Double?) throws -> Row {
        let before = try child.status()
        let cpuBefore = child.cpuSeconds()
        let load = try self.generate(LoadGenerator.Plan(tags: self.options.tags, rate: 0, seconds: self.options.seconds, qos: 0), port: port) {
            "\((try? child.status().samples).map { "\($0 - before.samples)" } ?? "?") processed"
        }
        let (after, seconds) = try child.drain(from: before, startedAt: load.startedAt)
        let cpu = child.cpuSeconds() - cpuBefore
        let processed = after.samples - before.samples
        let rate = Double(processed) / seconds
        var values: [(String, Double)] = [
            ("published", Double(load.report.published)), ("processed", Double(processed)), ("rate", rate),
            ("cpu_us_per_sample", cpu / Double(max(processed, 1)) * 1e6), ("rejected", Double(after.rejected - before.rejected)),
            ("peak_rss_mib", child.peakRSSMiB()),
        ]
        var text = "dang run: \(fmt(rate)) samples/s"
        if let baseline {
            values.append(("ratio_to_baseline", rate / baseline))
            text += " = \(String(format: "%.1f", rate / baseline * 100)) % of the bare subscriber"
        }
        text += "; \(String(format: "%.2f", cpu / Double(max(processed, 1)) * 1e6)) µs CPU per sample; \(load.report.published - processed) not processed of \(load.report.published) published (QoS 0)"
        return Row(name: "ingest", values: values, text: text)
    }

    private func latency(child: OrchestratorChild, port: Int, rate: Double, baselineCPU: Double?) throws -> Row {
        // About 100 breaches a second whatever the rate; a prime stride walks every tag in turn.
        let stride = Self.prime(near: max(7, Int(rate / 100)))
        let plan = LoadGenerator.Plan(tags: self.options.tags, rate: rate, seconds: self.options.seconds, qos: 0, breachEvery: stride)
        let generator = LoadGenerator(plan: plan)
        let alerts = Mutex(Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three))
        let invocations = Mutex(Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three))
        let wire = Mutex(Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three))
        let connected = Atomic<Bool>(false)
        var options = MQTTConnectionOptions(host: "127.0.0.1", port: port, clientID: "dang-bench-watch-\(getpid())")
        options.subscriptions = [("bench/alert/#", 1), ("bench/cmd/#", 1), ("bench/wire/#", 0)]
        let watcher = try MosquittoClient(
            options: options,
            onMessage: { message in
                let now = monotonicNanoseconds()
                let topic = String(decoding: message.topic, as: UTF8.self)
                guard let object = try? JSONSerialization.jsonObject(with: Data(message.payload)) as? [String: Any] else { return }
                if topic.hasPrefix("bench/wire/") {
                    guard let ts = (object["ts"] as? NSNumber)?.int64Value,
                        let sent = generator.breachTime(tag: String(topic.dropFirst("bench/wire/".count)), ts: ts)
                    else { return }
                    wire.withLock { _ = $0.record((now &- sent) / 1000) }
                } else if topic.hasPrefix("bench/alert/") {
                    guard object["kind"] as? String == "limit", object["state"] as? String == "raised",
                        let tag = object["tag"] as? String, let ts = (object["ts"] as? NSNumber)?.int64Value,
                        let sent = generator.breachTime(tag: tag, ts: ts)
                    else { return }
                    alerts.withLock { _ = $0.record((now &- sent) / 1000) }
                } else if let trigger = object["trigger"] as? [String: Any], let tag = trigger["tag"] as? String,
                    let ts = (trigger["ts"] as? NSNumber)?.int64Value, let sent = generator.breachTime(tag: tag, ts: ts)
                {
                    invocations.withLock { _ = $0.record((now &- sent) / 1000) }
                }
            },
            onEvent: { event in if case .connected = event { connected.store(true, ordering: .relaxed) } })
        try watcher.start()
        defer { watcher.disconnect() }
        try waitFor("the alert subscriber to connect") { connected.load(ordering: .relaxed) }
        usleep(200_000)
        let before = try child.status()
        let cpuBefore = child.cpuSeconds()
        let load = try self.generate(generator, port: port) { "\(alerts.withLock { $0.totalCount }) alerts timed" }
        let (after, _) = try child.drain(from: before, startedAt: load.startedAt)
        usleep(500_000)
        let cpu = child.cpuSeconds() - cpuBefore
        let processed = after.samples - before.samples
        let a = alerts.withLock { $0 }
        let i = invocations.withLock { $0 }
        let w = wire.withLock { $0 }
        func ms(_ h: Histogram<UInt64>, _ p: Double) -> Double { h.totalCount == 0 ? .nan : Double(h.valueAtPercentile(p)) / 1000 }
        let values: [(String, Double)] = [
            ("rate", rate), ("achieved_rate", load.report.rate), ("processed", Double(processed)),
            ("breaches", Double(load.report.breaches)), ("alerts_timed", Double(a.totalCount)),
            ("alert_p50_ms", ms(a, 50)), ("alert_p99_ms", ms(a, 99)), ("alert_p999_ms", ms(a, 99.9)),
            ("wire_p50_ms", ms(w, 50)), ("wire_p99_ms", ms(w, 99)), ("wire_p999_ms", ms(w, 99.9)),
            ("invocations_timed", Double(i.totalCount)), ("invocation_p50_ms", ms(i, 50)), ("invocation_p99_ms", ms(i, 99)),
            ("invocation_p999_ms", ms(i, 99.9)), ("cpu_us_per_sample", cpu / Double(max(processed, 1)) * 1e6),
            ("lost", Double(load.report.published - processed)),
        ] + (baselineCPU.map { [("baseline_cpu_us_per_sample", $0)] } ?? [])
        var text = String(
            format: "%@ samples/s: alert p50 %.3f ms, p99 %.3f ms, p99.9 %.3f ms (%d of %d breaches; the wire alone: p50 %.3f, p99 %.3f ms); invocation p50 %.3f ms, p99 %.3f ms (%d); %.2f µs CPU/sample; %d lost",
            fmt(load.report.rate), ms(a, 50), ms(a, 99), ms(a, 99.9), Int(a.totalCount), load.report.breaches, ms(w, 50), ms(w, 99), ms(i, 50), ms(i, 99),
            Int(i.totalCount), cpu / Double(max(processed, 1)) * 1e6, load.report.published - processed)
        if let baselineCPU { text += String(format: " (the bare subscriber at this rate: %.2f µs CPU/message)", baselineCPU) }
        if a.totalCount == 0 && load.report.breaches > 0 {
            // Nothing to time: say what the child said, before its directory goes.
            self.progress("latency: no limit alert of \(load.report.breaches) breaches arrived; dang run's log ends: \(child.logTail())")
        }
        return Row(name: "latency@\(Int(rate))", values: values, text: text)
    }

    /// Loss at QoS 1, told apart by where it happens: messages the broker never accepted (still in
    /// the generator's client when it gave up waiting), messages the broker accepted and then
    /// dropped by its own queue limits (`$SYS/broker/publish/messages/dropped`, published every
    /// second by the bench's broker), and messages the broker delivered that `dang run` did not
    /// process — the only ones that are ours, and the figure that must be 0.
    private func qos1(child: OrchestratorChild, port: Int) throws -> Row {
        let dropped = Atomic<Int>(-1)
        var options = MQTTConnectionOptions(host: "127.0.0.1", port: port, clientID: "dang-bench-sys-\(getpid())")
        options.subscriptions = [("$SYS/broker/publish/messages/dropped", 0)]
        let watcher = try MosquittoClient(
            options: options,
            onMessage: { message in
                if let count = Int(String(decoding: message.payload, as: UTF8.self)) { dropped.store(count, ordering: .relaxed) }
            },
            onEvent: { _ in })
        try watcher.start()
        defer { watcher.disconnect() }
        try waitFor("the broker's drop counter") { dropped.load(ordering: .relaxed) >= 0 }
        let droppedBefore = dropped.load(ordering: .relaxed)
        let before = try child.status()
        let load = try self.generate(
            LoadGenerator.Plan(tags: self.options.tags, rate: self.options.qos1Rate, seconds: self.options.seconds, qos: 1), port: port
        ) { "\((try? child.status().samples).map { "\($0 - before.samples)" } ?? "?") processed" }
        // A slow spell can stall the child for longer than the usual half second: wait for 2 s
        // without growth before counting anything as lost.
        let (after, _) = try child.drain(from: before, startedAt: load.startedAt, quietPolls: 20)
        usleep(1_500_000)  // the next $SYS update
        let brokerDropped = max(0, dropped.load(ordering: .relaxed) - droppedBefore)
        let processed = after.samples - before.samples
        let notAccepted = load.report.published - load.report.acknowledged
        let lost = load.report.acknowledged - brokerDropped - processed
        return Row(
            name: "qos1",
            values: [
                ("rate", load.report.rate), ("published", Double(load.report.published)),
                ("acknowledged", Double(load.report.acknowledged)), ("not_accepted", Double(notAccepted)),
                ("broker_dropped", Double(brokerDropped)), ("processed", Double(processed)), ("lost", Double(lost)),
            ],
            text: "QoS 1 at \(fmt(load.report.rate)) samples/s: \(load.report.published) published, \(load.report.acknowledged) accepted by the broker (\(notAccepted) not), \(brokerDropped) dropped by the broker's queue limits, \(processed) processed, \(lost) lost by dang run")
    }

    private func memory(child: OrchestratorChild, port: Int) throws -> Row {
        let before = try child.status()
        let idle = child.peakRSSMiB()
        let rounds = Double(self.options.memorySamples)
        let rate = self.options.memorySamples > 100 ? 50_000.0 : 20_000.0
        let load = try self.generate(
            LoadGenerator.Plan(tags: self.options.memoryTags, rate: rate, seconds: rounds * Double(self.options.memoryTags) / rate, qos: 0),
            port: port
        ) { "\((try? child.status().tags) ?? 0) tags" }
        let (after, _) = try child.drain(from: before, startedAt: load.startedAt)
        let rss = child.peakRSSMiB()
        let now = child.residentMiB()
        return Row(
            name: "memory",
            values: [
                ("tags", Double(after.tags)), ("samples_per_tag", Double(self.options.memorySamples)), ("processed", Double(after.samples - before.samples)), ("rss_started_mib", idle),
                ("peak_rss_mib", rss), ("rss_anonymous_mib", now.anonymous), ("rss_files_mib", now.files),
            ],
            text: String(
                format: "%d tags, %d samples each: peak RSS %.1f MiB (%.1f MiB once started, before any sample); now %.1f MiB its own + %.1f MiB code and libraries",
                after.tags, self.options.memorySamples, rss, idle, now.anonymous, now.files))
    }

    // MARK: - Helpers

    private func generate(
        _ plan: LoadGenerator.Plan, port: Int, status: @escaping @Sendable () -> String
    ) throws -> (report: LoadGenerator.Report, startedAt: UInt64) {
        try self.generate(LoadGenerator(plan: plan), port: port, status: status)
    }

    /// Runs the generator on a thread of its own, reporting progress every second.
    private func generate(
        _ generator: LoadGenerator, port: Int, status: @escaping @Sendable () -> String
    ) throws -> (report: LoadGenerator.Report, startedAt: UInt64) {
        let result = Mutex<Result<LoadGenerator.Report, any Error>?>(nil)
        let startedAt = monotonicNanoseconds()
        let thread = Thread {
            let outcome = Result { try generator.run(port: port) }
            result.withLock { $0 = outcome }
        }
        thread.start()
        var second = 0
        while result.withLock({ $0 }) == nil {
            usleep(100_000)
            second += 1
            if second % 10 == 0 { self.progress("  \(second / 10) s: \(status())") }
        }
        let report = try result.withLock { $0! }.get()
        return (report, startedAt)
    }

    static func prime(near value: Int) -> Int {
        var candidate = max(2, value)
        while (2..<candidate).contains(where: { $0 * $0 <= candidate && candidate % $0 == 0 }) { candidate += 1 }
        return candidate
    }
}
