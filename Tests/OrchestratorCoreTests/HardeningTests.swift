import Foundation
import Logging
import SwiftProtobuf
import Synchronization
import Testing

@testable import OrchestratorCore

/// What a misbehaving plant network sends (issue 16): never a trap, never a blind tag.
@Suite struct HardeningTests {
    typealias Payload = Org_Eclipse_Tahu_Protobuf_Payload
    typealias Metric = Org_Eclipse_Tahu_Protobuf_Payload.Metric

    static let now: Int64 = 1_790_000_000_000

    func pipeline(map: TopicMap = TopicMap()) -> (IngestPipeline, CollectingSink) {
        var config = OrchestratorConfig.defaults(topicMap: map)
        config.detection.multivariateEnabled = false
        let sink = CollectingSink()
        return (IngestPipeline(config: config, sinks: [sink], logger: Logger(label: "test")), sink)
    }

    func send(_ pipeline: IngestPipeline, _ topic: String, _ bytes: [UInt8], at ms: Int64 = Self.now) {
        var t = topic
        t.withUTF8 { topicBytes in
            bytes.withUnsafeBytes { pipeline.handle(topic: UnsafeRawBufferPointer(topicBytes), payload: $0, receivedAt: ms) }
        }
    }

    func send(_ pipeline: IngestPipeline, _ topic: String, _ text: String, at ms: Int64 = Self.now) {
        self.send(pipeline, topic, Array(text.utf8), at: ms)
    }

    static func sparkplug(seq: UInt64?, timestamp: UInt64 = UInt64(now), _ metrics: [Metric]) -> [UInt8] {
        var payload = Payload()
        payload.timestamp = timestamp
        if let seq { payload.seq = seq }
        payload.metrics = metrics
        return try! payload.serializedBytes()
    }

    static func metric(_ name: String?, alias: UInt64?, _ value: Double) -> Metric {
        var metric = Metric()
        if let name { metric.name = name }
        if let alias { metric.alias = alias }
        metric.datatype = 10
        metric.doubleValue = value
        return metric
    }

    @Test func `a Sparkplug seq outside 0…255 is a protocol error: refused, a data-quality event and a rebirth, never a trap`() {
        let (pipeline, sink) = self.pipeline()
        let sent = Mutex<[String]>([])
        pipeline.attachCommandPublisher { topic, _ in sent.withLock { $0.append(topic) } }
        // A good birth first, then a birth with seq 2^64−1, then data: the old code trapped on (last + 1) % 256.
        self.send(pipeline, "spBv1.0/g/NBIRTH/e1", Self.sparkplug(seq: 0, [Self.metric("T", alias: 1, 50)]))
        self.send(pipeline, "spBv1.0/g/NBIRTH/e1", Self.sparkplug(seq: UInt64.max, [Self.metric("T", alias: 1, 50)]), at: Self.now + 10)
        self.send(pipeline, "spBv1.0/g/NDATA/e1", Self.sparkplug(seq: 1, [Self.metric(nil, alias: 1, 51)]), at: Self.now + 20)
        // A node born with seq 2^64−1 and never before, then its data.
        self.send(pipeline, "spBv1.0/g/NBIRTH/e2", Self.sparkplug(seq: UInt64.max, [Self.metric("T", alias: 1, 50)]))
        self.send(pipeline, "spBv1.0/g/NDATA/e2", Self.sparkplug(seq: 0, [Self.metric(nil, alias: 1, 51)]), at: Self.now + 30)
        self.send(pipeline, "spBv1.0/g/NDATA/e2", Self.sparkplug(seq: 256, [Self.metric(nil, alias: 1, 51)]), at: Self.now + 40)
        let counters = pipeline.counters
        #expect(counters.rejected[.sparkplugSequence] == 3)
        #expect(sent.withLock { $0 }.contains("spBv1.0/g/NCMD/e1"))
        let quality = sink.events.withLock { $0 }.filter { $0.kind == .dataQuality && $0.state == .raised }
        #expect(Set(quality.map(\.tag)) == ["g/e1", "g/e2"])
        #expect(quality.first { $0.tag == "g/e1" }?.message.contains("Sparkplug sequence") == true)
        // A new good birth brings the node back.
        self.send(pipeline, "spBv1.0/g/NBIRTH/e1", Self.sparkplug(seq: 0, [Self.metric("T", alias: 1, 52)]), at: Self.now + 50)
        self.send(pipeline, "spBv1.0/g/NDATA/e1", Self.sparkplug(seq: 1, timestamp: UInt64(Self.now + 60), [Self.metric(nil, alias: 1, 53)]), at: Self.now + 60)
        #expect(pipeline.windows(of: ["g/e1/T"], limit: 1).first?.values.last == 53)
    }

    @Test(arguments: [
        #"{"ts": "9999-12-31T23:59:59Z", "v": 50}"#,
        #"{"ts": 9007199254740991, "v": 50}"#,  // 2^53 − 1 ms
        #"{"ts": 1790000600000, "v": 50}"#,  // 10 minutes ahead, past the 5-minute default
    ])
    func `a sample from the future is refused as a data-quality event and never blinds its tag`(payload: String) {
        var map = TopicMap()
        map.tags["p/a/u/TI-1"] = TagInfo(unit: "degC", limits: .init(hi: 90, hihi: 100, deadband: 1))
        let (pipeline, sink) = self.pipeline(map: map)
        self.send(pipeline, "plant/p/a/u/TI-1", #"{"ts": \#(Self.now), "v": 50}"#)
        self.send(pipeline, "plant/p/a/u/TI-1", payload, at: Self.now + 500)
        // Past year 9999 the parser refuses it already (bad_timestamp); either way the tag hears of it.
        let counters = pipeline.counters
        #expect((counters.rejected[.futureTimestamp] ?? 0) + (counters.rejected[.badTimestamp] ?? 0) == 1)
        #expect(sink.events.withLock { $0 }.contains { $0.kind == .dataQuality && $0.state == .raised && $0.message.contains("future") })
        // The next real sample breaches HIHI: it must alert (before the fix the tag's clock sat in 9999).
        self.send(pipeline, "plant/p/a/u/TI-1", #"{"ts": \#(Self.now + 1000), "v": 105}"#, at: Self.now + 1000)
        #expect(sink.events.withLock { $0 }.contains { $0.kind == .limit && $0.state == .raised && $0.severity == .critical })
        #expect(pipeline.processedCount(tag: "p/a/u/TI-1") == 2)
    }

    @Test func `Sparkplug timestamps get the same rule, and a unit batch too`() {
        let (pipeline, _) = self.pipeline()
        self.send(pipeline, "spBv1.0/g/NBIRTH/e1", Self.sparkplug(seq: 0, [Self.metric("T", alias: 1, 50)]))
        self.send(pipeline, "spBv1.0/g/NDATA/e1", Self.sparkplug(seq: 1, timestamp: UInt64.max, [Self.metric(nil, alias: 1, 51)]), at: Self.now + 10)
        var late = Self.metric(nil, alias: 1, 52)
        late.timestamp = UInt64(Int64.max)
        self.send(pipeline, "spBv1.0/g/NDATA/e1", Self.sparkplug(seq: 2, [late]), at: Self.now + 20)
        self.send(pipeline, "spBv1.0/g/NDATA/e1", Self.sparkplug(seq: 3, timestamp: UInt64(Self.now + 30), [Self.metric(nil, alias: 1, 53)]), at: Self.now + 30)
        #expect(pipeline.counters.rejected[.futureTimestamp] == 2)
        #expect(pipeline.windows(of: ["g/e1/T"], limit: 5).first?.values == [50, 53])
        self.send(pipeline, "plant/p/a/u", #"{"ts": 253402300799999, "values": {"A": 1, "B": 2}}"#)
        #expect(pipeline.counters.rejected[.futureTimestamp] == 4)
        #expect(pipeline.processedCount(tag: "p/a/u/A") == 0)
    }

    @Test func `the skew is configurable and receipt-time samples are never refused`() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("dang-skew-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let file = dir.appendingPathComponent("c.yaml").path
        try "ingest:\n  max_future_skew: 2s\n".write(toFile: file, atomically: true, encoding: .utf8)
        let config = try OrchestratorConfig.load(file: file)
        #expect(config.ingest.maxFutureSkew == .seconds(2))
        #expect(config.ingest.accepts(sampleTime: Self.now + 2000, now: Self.now))
        #expect(!config.ingest.accepts(sampleTime: Self.now + 2001, now: Self.now))
        #expect(!config.ingest.accepts(sampleTime: -62_135_596_800_001, now: Self.now))
        #expect(!config.ingest.accepts(sampleTime: .min, now: .max))
        #expect(config.ingest.accepts(sampleTime: Self.now, now: .max))
        try "ingest:\n  max_future_skew: soon\n".write(toFile: file, atomically: true, encoding: .utf8)
        #expect(throws: ConfigError.self) { try OrchestratorConfig.load(file: file) }
    }

    @Test func `a tag detector fed the extremes of Int64 time does not trap`() {
        var settings = DetectionSettings()
        settings.marketMoves = [.init(window: .seconds(60), thresholdPercent: 1)]
        var info = TagInfo(limits: .init(hi: 1))
        info.maxRatePerMinute = 1
        info.flatline = .init(tolerance: 0, samples: 3, duration: .seconds(1))
        info.expectedPeriod = .seconds(1)
        for isMarket in [false, true] {
            var detector = TagDetector(settings: settings, info: info, isMarket: isMarket)
            var scratch: [Double] = []
            var changes: [ConditionChange] = []
            for time: Int64 in [.min, .min + 1, -1, 0, .max - 1, .max, .min, .max] {
                detector.ingest(1, time: time, quality: .good, settings: settings, scratch: &scratch, into: &changes)
                detector.checkStale(now: time, lastReceipt: .min + 1, policy: settings.policy, into: &changes)
                detector.checkStale(now: .min, lastReceipt: .max, policy: settings.policy, into: &changes)
            }
        }
    }

    @Test func `JSON headed for jsonb: NUL and lone surrogates become text, valid pairs stay; non-JSON is wrapped on refusal`() throws {
        #expect(StorableJSON.jsonb(#"{"by":"a\u0000b"}"#) == #"{"by":"a\\u0000b"}"#)
        #expect(StorableJSON.jsonb(#"{"s":"\ud83d\ude00 ok"}"#) == #"{"s":"\ud83d\ude00 ok"}"#)
        #expect(StorableJSON.jsonb(#"["\ud83d", "\ude00x", "\\u0000", "\ud83d\ude00"]"#) == #"["\\ud83d", "\\ude00x", "\\u0000", "\ud83d\ude00"]"#)
        #expect(StorableJSON.jsonb(#"{"plain":"text"}"#) == #"{"plain":"text"}"#)
        // What the writer falls back to when PostgreSQL refuses a value as JSON.
        #expect(StorableJSON.wrapped("{not json") == #"{"raw":"{not json"}"#)
        #expect(StorableJSON.wrapped("a\u{0}b") == #"{"raw":"a\\u0000b"}"#)
        #expect(StorableJSON.wrapped("") == #"{"raw":""}"#)
        #expect(StorableJSON.checkedJSONB("<html>502</html>") == #"{"raw":"<html>502</html>"}"#)
        #expect(StorableJSON.checkedJSONB(#" {"a":"\u0000"} "#) == #"{"a":"\\u0000"}"#)
        // Whatever comes out is still JSON, and its strings say what came in.
        let out = StorableJSON.jsonb(#"{"by":"x\u0000y"}"#)
        let decoded = try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: String]
        #expect(decoded == ["by": #"x\u0000y"#])
    }

    @Test func `the record's decoded copy of a decision keeps its JSON-as-text fallback`() {
        let decision = DecisionRecord(
            decisionID: UUID(), ts: 1, module: nil, action: "skip", source: "api", trigger: "{\"by\":\"\\u0000\"}", reasons: "[]",
            confidence: nil, latencyMicroseconds: nil)
        guard case .decision(let text)? = Record.decision(decision).withJSONAsText() else {
            Issue.record("no fallback for a decision")
            return
        }
        #expect(text.trigger == #"{"raw":"{\"by\":\"\\u0000\"}"}"#)
        #expect(Record.alert(AlertEvent(
            alertID: UUID(), state: .raised, severity: .info, kind: .system, tag: "t", topic: "t", timestamp: 0, raisedAt: 0,
            clearedAt: nil, value: 0, score: 0, message: "")).withJSONAsText() == nil)
    }
}

@Suite struct ReplayInputTests {
    @Test func `dang replay reads LF, CRLF, a UTF-8 BOM and quoted header names alike`() throws {
        let plain = try ReplayTable.parse("timestamp,TI-101,FI-7\n1790000000000,1.5,2\n1790000001000,1.6,\n", file: "lf.csv")
        let windows = try ReplayTable.parse(
            "\u{FEFF}\"timestamp\",\"TI-101\",\"FI-7\"\r\n1790000000000,1.5,2\r\n1790000001000,1.6,\r\n", file: "crlf.csv")
        #expect(windows.tags == ["TI-101", "FI-7"])
        #expect(windows.tags == plain.tags && windows.times == plain.times && windows.values == plain.values)
        #expect(windows.values == [[1.5, 2], [1.6, nil]])
        let quoted = try ReplayTable.parse("t,\"a,b\",\"say \"\"hi\"\"\"\n1,2,3\n", file: "q.csv")
        #expect(quoted.tags == ["a,b", #"say "hi""#])
    }

    @Test func `a file that is not CSV is refused with the line that shows it`() {
        func problem(_ text: String) -> ReplayTable.Problem? {
            do {
                _ = try ReplayTable.parse(text, file: "f.csv")
                return nil
            } catch {
                return error
            }
        }
        #expect(problem("{\"ts\": 1,\n \"v\": 2}\n")?.line == 1)
        let unclosed = problem("t,a\n1,2\n2,\"3\n3,4\n")
        #expect(unclosed?.line == 3)
        #expect(unclosed?.message.contains("never closed") == true)
        #expect(problem("t,a\n1,2\n2,x\"y\n")?.line == 3)
        #expect(problem("t,a\r\n1,2\r\n2,3,4\r\n")?.line == 3)
        #expect(problem("t,a\n1,2\n\n2,nope\n")?.line == 4)
    }
}

@Suite struct CommandIsolationTests {
    @Test func `a module command sees only the variables its module allows, never the orchestrator's secrets`() async throws {
        let parent = ["PATH": "/usr/bin:/bin", "HOME": "/root", "DATABASE_URL": "postgres://dang:secret@db/dang",
                      "DANG_API_TOKEN": "tok", "DEEPSEEK_API_KEY": "sk-1", "LANG": "C.UTF-8"]
        let environment = CommandTransport.environment(allowing: CommandTransport.defaultEnvironment, from: parent)
        #expect(environment == ["PATH": "/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8"])
        let result = await CommandTransport.run(
            ["/usr/bin/env"], environment: environment.merging(["EXTRA": "1"]) { $1 }, input: [], timeout: .seconds(10))
        let text = try String(decoding: result.get(), as: UTF8.self)
        #expect(Set(text.split(separator: "\n").map { String($0.split(separator: "=")[0]) }) == ["PATH", "HOME", "LANG", "EXTRA"])
    }

    @Test func `past its timeout the command's whole process group is stopped, children included`() async throws {
        let marker = FileManager.default.temporaryDirectory.appendingPathComponent("dang-child-\(UUID().uuidString)").path
        // The command starts a child that would outlive it, then hangs.
        let script = "sleep 300 & echo $! > \(marker); wait"
        let started = ContinuousClock.now
        let result = await CommandTransport.run(["/bin/sh", "-c", script], environment: ["PATH": "/usr/bin:/bin"], input: [], timeout: .milliseconds(500))
        guard case .failure = result else {
            Issue.record("a hanging command gave a result")
            return
        }
        // Well before the child's 300 s; generous, since parallel suites share two cooperative threads.
        #expect(ContinuousClock.now - started < .seconds(60))
        let child = try #require(Int32(String(contentsOfFile: marker, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
        var gone = false
        for _ in 0..<50 {
            // Reaped by init once killed, or a zombie until then: either way not running.
            let state = (try? String(contentsOfFile: "/proc/\(child)/stat", encoding: .utf8))?.split(separator: " ").dropFirst(2).first
            if state == nil || state == "Z" {
                gone = true
                break
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(gone)
    }
}

@Suite struct TagCardinalityTests {
    static let now: Int64 = 1_790_000_000_000

    func pipeline(map: TopicMap = TopicMap(), maxTags: Int = 100) -> (IngestPipeline, CollectingSink) {
        var config = OrchestratorConfig.defaults(topicMap: map)
        config.detection.multivariateEnabled = false
        config.detection.maxTags = maxTags
        let sink = CollectingSink()
        return (IngestPipeline(config: config, sinks: [sink], logger: Logger(label: "test"), clock: { Self.now }), sink)
    }

    func send(_ pipeline: IngestPipeline, _ topic: String, _ text: String, at ms: Int64 = Self.now) {
        var t = topic
        var p = text
        t.withUTF8 { topicBytes in p.withUTF8 { pipeline.handle(topic: UnsafeRawBufferPointer(topicBytes), payload: UnsafeRawBufferPointer($0), receivedAt: ms) } }
    }

    @Test func `a tag name past ingest.max_tag_bytes is refused and counted, and takes no slot`() {
        let (pipeline, _) = self.pipeline()
        self.send(pipeline, "plant/s/a/u/" + String(repeating: "x", count: 3000), "1")
        self.send(pipeline, "plant/s/a/u", #"{"values": {"\#(String(repeating: "y", count: 250))": 1}}"#)  // fits: 256-byte names, 263 in all
        self.send(pipeline, "market/" + String(repeating: "z/", count: 400) + "end", "1")
        let counters = pipeline.counters
        #expect(counters.rejected[.tagTooLong] == 2)
        #expect(counters.tags == 1)
    }

    @Test func `junk topics that filled max_tags are forgotten once idle; the real tag gets in; mapped tags stay`() {
        var map = TopicMap()
        map.tags["s/a/u/MAPPED"] = TagInfo(limits: .init(hi: 100))
        let (pipeline, sink) = self.pipeline(map: map, maxTags: 50)
        self.send(pipeline, "plant/s/a/u/MAPPED", #"{"ts": \#(Self.now), "v": 1}"#)
        self.send(pipeline, "plant/s/a/u/ALARMED", #"{"ts": \#(Self.now), "v": 1}"#)
        for i in 0..<48 { self.send(pipeline, "plant/junk/j/j/T\(i)", #"{"ts": \#(Self.now), "v": \#(i)}"#) }
        self.send(pipeline, "plant/s/a/u/REAL", "1")
        #expect(pipeline.counters.tags == 50)
        #expect(pipeline.counters.tagLimitRejections == 1)
        #expect(pipeline.processedCount(tag: "s/a/u/REAL") == nil)
        // Not yet idle long enough: nothing goes.
        #expect(pipeline.evictIdle(now: Self.now + 3_600_000).isEmpty)
        // A day later; ALARMED kept a data-quality alarm open by its last sample.
        self.send(pipeline, "plant/s/a/u/ALARMED", "NaN", at: Self.now)
        let evicted = pipeline.evictIdle(now: Self.now + 86_400_001)
        #expect(evicted.count == 48)
        #expect(Set(evicted.map(\.tag)) == Set((0..<48).map { "junk/j/j/T\($0)" }))
        #expect(pipeline.counters.tags == 2)
        #expect(pipeline.counters.evictedTags == 48)
        #expect(pipeline.processedCount(tag: "s/a/u/MAPPED") == 1)
        #expect(sink.events.withLock { $0 }.contains { $0.tag == "s/a/u/ALARMED" && $0.state == .raised })
        // The real tag now gets a (reused) slot, and a junk topic that comes back is a new tag of its
        // own: the topic cache never hands it another tag's slot.
        self.send(pipeline, "plant/s/a/u/REAL", #"{"ts": \#(Self.now + 86_400_100), "v": 7}"#, at: Self.now + 86_400_100)
        self.send(pipeline, "plant/junk/j/j/T0", #"{"ts": \#(Self.now + 86_400_200), "v": 99}"#, at: Self.now + 86_400_200)
        #expect(pipeline.windows(of: ["s/a/u/REAL"], limit: 10).first?.values == [7])
        #expect(pipeline.windows(of: ["junk/j/j/T0"], limit: 10).first?.values == [99])
        #expect(pipeline.counters.tags == 4)
    }

    @Test func `Sparkplug: no state for nodes never born, DDATA of an unborn device refused, device and alias caps hold`() {
        var config = OrchestratorConfig.defaults()
        config.detection.multivariateEnabled = false
        let pipeline = IngestPipeline(config: config, sinks: [], logger: Logger(label: "test"))
        let sent = Mutex<[String]>([])
        pipeline.attachCommandPublisher { topic, _ in sent.withLock { $0.append(topic) } }
        func send(_ topic: String, _ bytes: [UInt8], at ms: Int64 = Self.now) {
            var t = topic
            t.withUTF8 { topicBytes in bytes.withUnsafeBytes { pipeline.handle(topic: UnsafeRawBufferPointer(topicBytes), payload: $0, receivedAt: ms) } }
        }
        let data = HardeningTests.sparkplug(seq: 1, [HardeningTests.metric(nil, alias: 1, 1)])
        for i in 0..<2000 { send("spBv1.0/junk/NDATA/node\(i)", data) }
        #expect(pipeline.counters.rejected[.sparkplugUnborn] == 2000)
        #expect(pipeline.counters.tags == 0)
        // At most 200 rebirth requests to never-born nodes every 5 s, and none twice to one node.
        #expect(sent.withLock { $0.count } == 200)
        for i in 0..<2000 { send("spBv1.0/junk/NDATA/node\(i)", data, at: Self.now + 1000) }
        #expect(sent.withLock { $0.count } == 200)
        for i in 0..<2000 { send("spBv1.0/junk/NDATA/node\(i)", data, at: Self.now + 6000) }
        #expect(sent.withLock { $0.count } == 400)
        #expect(Set(sent.withLock { $0 }).count == 400)
        // A born node: its device's data counts only after the device's birth.
        send("spBv1.0/g/NBIRTH/e1", HardeningTests.sparkplug(seq: 0, []))
        send("spBv1.0/g/DDATA/e1/pump", HardeningTests.sparkplug(seq: 1, [HardeningTests.metric("T", alias: nil, 5)]))
        #expect(pipeline.counters.rejected[.sparkplugUnborn] == 6001)
        #expect(pipeline.tags(withPrefix: "g/e1/").isEmpty)
        send("spBv1.0/g/DBIRTH/e1/pump", HardeningTests.sparkplug(seq: 2, timestamp: UInt64(Self.now + 10), [HardeningTests.metric("T", alias: 3, 5), HardeningTests.metric("bad\u{1}name", alias: 4, 1)]))
        send("spBv1.0/g/DDATA/e1/pump", HardeningTests.sparkplug(seq: 3, timestamp: UInt64(Self.now + 20), [HardeningTests.metric(nil, alias: 3, 6), HardeningTests.metric(nil, alias: 4, 2)]))
        #expect(pipeline.tags(withPrefix: "g/e1/") == ["g/e1/pump/T"])
        #expect(pipeline.windows(of: ["g/e1/pump/T"], limit: 5).first?.values == [5, 6])
    }

    @Test func `the session's device cap refuses the device past it`() {
        var session = SparkplugSession(maxDevicesPerNode: 2)
        func handle(_ topic: String, _ bytes: [UInt8]) -> SparkplugSession.Outcome {
            bytes.withUnsafeBytes { session.handle(topic: topic, payload: $0, now: Self.now) }
        }
        _ = handle("spBv1.0/g/NBIRTH/e", HardeningTests.sparkplug(seq: 0, []))
        #expect(handle("spBv1.0/g/DBIRTH/e/d1", HardeningTests.sparkplug(seq: 1, [])).rejection == nil)
        #expect(handle("spBv1.0/g/DBIRTH/e/d2", HardeningTests.sparkplug(seq: 2, [])).rejection == nil)
        #expect(handle("spBv1.0/g/DBIRTH/e/d3", HardeningTests.sparkplug(seq: 3, [])).rejection == "sparkplug_device_limit")
        #expect(handle("spBv1.0/g/DBIRTH/e/d1", HardeningTests.sparkplug(seq: 4, [])).rejection == nil)
    }
}
