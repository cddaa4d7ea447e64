import Foundation
import Logging
import SwiftProtobuf
import Synchronization
import Testing

@testable import OrchestratorCore

/// Sparkplug B through the real pipeline and detectors, with payloads built by the generated code.
@Suite struct SparkplugTests {
    typealias Payload = Org_Eclipse_Tahu_Protobuf_Payload
    typealias Metric = Org_Eclipse_Tahu_Protobuf_Payload.Metric

    final class Commands: Sendable {
        let sent = Mutex<[(topic: String, payload: [UInt8])]>([])
    }

    func pipeline(map: TopicMap = TopicMap(), reorderTimeout: Duration = .seconds(2)) -> (IngestPipeline, CollectingSink, Commands) {
        var config = OrchestratorConfig.defaults(topicMap: map)
        config.detection.multivariateEnabled = false
        config.topics.sparkplugReorderTimeout = reorderTimeout
        let sink = CollectingSink()
        let pipeline = IngestPipeline(config: config, sinks: [sink], logger: Logger(label: "test"))
        let commands = Commands()
        pipeline.attachCommandPublisher { topic, payload in commands.sent.withLock { $0.append((topic, payload)) } }
        return (pipeline, sink, commands)
    }

    static func metric(_ name: String?, alias: UInt64?, type: UInt32, _ set: (inout Metric) -> Void) -> Metric {
        var metric = Metric()
        if let name { metric.name = name }
        if let alias { metric.alias = alias }
        metric.datatype = type
        set(&metric)
        return metric
    }

    static func payload(seq: UInt64?, timestamp: UInt64 = 1_790_000_000_000, _ metrics: [Metric]) -> [UInt8] {
        var payload = Payload()
        payload.timestamp = timestamp
        if let seq { payload.seq = seq }
        payload.metrics = metrics
        return try! payload.serializedBytes()
    }

    func send(_ pipeline: IngestPipeline, _ topic: String, _ bytes: [UInt8], at ms: Int64 = 1_790_000_000_000) {
        var t = topic
        t.withUTF8 { topicBytes in
            bytes.withUnsafeBytes { pipeline.handle(topic: UnsafeRawBufferPointer(topicBytes), payload: $0, receivedAt: ms) }
        }
    }

    func birth(_ pipeline: IngestPipeline, at time: UInt64 = 1_790_000_000_000) {
        self.send(pipeline, "spBv1.0/plant1/NBIRTH/edge1", Self.payload(seq: 0, timestamp: time, [
            Self.metric("bdSeq", alias: nil, type: 8) { $0.longValue = 7 },
            Self.metric("Node Control/Rebirth", alias: nil, type: 11) { $0.booleanValue = false },
            Self.metric("Uptime", alias: 1, type: 4) { $0.longValue = 10 },
        ]))
        self.send(pipeline, "spBv1.0/plant1/DBIRTH/edge1/pump7", Self.payload(seq: 1, timestamp: time, [
            Self.metric("Temperature", alias: 10, type: 10) { $0.doubleValue = 61.5 },
            Self.metric("Offset", alias: 11, type: 1) { $0.intValue = UInt32(bitPattern: Int32(-5)) & 0xFF },
            Self.metric("Delta", alias: 12, type: 3) { $0.intValue = UInt32(bitPattern: -1200) },
            Self.metric("Count", alias: 13, type: 7) { $0.intValue = 4_000_000_000 },
            Self.metric("Ratio", alias: 14, type: 9) { $0.floatValue = 0.25 },
            Self.metric("Running", alias: 15, type: 11) { $0.booleanValue = true },
            Self.metric("Label", alias: 16, type: 12) { $0.stringValue = "text is not a measurement" },
        ]))
    }

    @Test func `births set up aliases; data by alias becomes samples of group/edge/device/metric with every basic type`() throws {
        let (pipeline, _, commands) = self.pipeline()
        self.birth(pipeline)
        let tags = pipeline.tags(withPrefix: "plant1/")
        #expect(tags == [
            "plant1/edge1/Uptime", "plant1/edge1/pump7/Count", "plant1/edge1/pump7/Delta", "plant1/edge1/pump7/Offset",
            "plant1/edge1/pump7/Ratio", "plant1/edge1/pump7/Running", "plant1/edge1/pump7/Temperature",
        ])
        let last = { (tag: String) in pipeline.windows(of: [tag], limit: 1).first?.values.last }
        #expect(last("plant1/edge1/pump7/Offset") == -5)
        #expect(last("plant1/edge1/pump7/Delta") == -1200)
        #expect(last("plant1/edge1/pump7/Count") == 4_000_000_000)
        #expect(last("plant1/edge1/pump7/Ratio") == 0.25)
        #expect(last("plant1/edge1/pump7/Running") == 1)
        // DDATA by alias only, next sequence number.
        self.send(pipeline, "spBv1.0/plant1/DDATA/edge1/pump7", Self.payload(seq: 2, timestamp: 1_790_000_001_000, [
            Self.metric(nil, alias: 10, type: 10) { $0.doubleValue = 62.0 }
        ]))
        #expect(last("plant1/edge1/pump7/Temperature") == 62.0)
        #expect(commands.sent.withLock { $0 }.isEmpty)
        #expect(pipeline.counters.totalRejected == 0)
    }

    @Test func `without a reorder timeout, a sequence gap raises data_quality on the node and asks it to rebirth, once per 5 s`() throws {
        let (pipeline, sink, commands) = self.pipeline(reorderTimeout: .zero)
        self.birth(pipeline)
        self.send(pipeline, "spBv1.0/plant1/DDATA/edge1/pump7", Self.payload(seq: 5, timestamp: 1_790_000_001_000, [Self.metric(nil, alias: 10, type: 10) { $0.doubleValue = 62 }]))
        self.send(pipeline, "spBv1.0/plant1/DDATA/edge1/pump7", Self.payload(seq: 9, timestamp: 1_790_000_002_000, [Self.metric(nil, alias: 10, type: 10) { $0.doubleValue = 62 }]), at: 1_790_000_001_000)
        let sent = commands.sent.withLock { $0 }
        #expect(sent.count == 1)
        #expect(sent.first?.topic == "spBv1.0/plant1/NCMD/edge1")
        let command = try Payload(serializedBytes: sent.first?.payload ?? [])
        #expect(command.metrics.first?.name == "Node Control/Rebirth" && command.metrics.first?.booleanValue == true)
        let raised = sink.events.withLock { $0 }.filter { $0.state == .raised && $0.kind == .dataQuality }
        #expect(raised.map(\.tag) == ["plant1/edge1"])
        #expect(raised.first?.message.contains("Sparkplug sequence") == true)
        #expect(raised.first?.alertTopic(prefix: "apos") == "apos/alert/info/spb/plant1/edge1")
    }

    static func temperature(_ pipeline: IngestPipeline) -> [Double] {
        pipeline.windows(of: ["plant1/edge1/pump7/Temperature"], limit: 100).first?.values ?? []
    }

    @Test func `a message ahead of a gap waits for the missing one: in time, both are applied in order and nothing is reported`() {
        let (pipeline, sink, commands) = self.pipeline()
        self.birth(pipeline)
        let t0: Int64 = 1_790_000_001_000
        self.send(pipeline, "spBv1.0/plant1/DDATA/edge1/pump7", Self.payload(seq: 3, timestamp: UInt64(t0 + 1000), [Self.metric(nil, alias: 10, type: 10) { $0.doubleValue = 64 }]), at: t0)
        #expect(Self.temperature(pipeline) == [61.5])  // held
        pipeline.tick(now: t0 + 1500)  // within the 2 s
        #expect(Self.temperature(pipeline) == [61.5])
        self.send(pipeline, "spBv1.0/plant1/DDATA/edge1/pump7", Self.payload(seq: 2, timestamp: UInt64(t0), [Self.metric(nil, alias: 10, type: 10) { $0.doubleValue = 63 }]), at: t0 + 1600)
        #expect(Self.temperature(pipeline) == [61.5, 63, 64])
        pipeline.tick(now: t0 + 5000)
        #expect(commands.sent.withLock { $0 }.isEmpty)
        #expect(!sink.events.withLock { $0 }.contains { $0.kind == .dataQuality })
        // The next message in order is taken as usual.
        self.send(pipeline, "spBv1.0/plant1/DDATA/edge1/pump7", Self.payload(seq: 4, timestamp: UInt64(t0 + 2000), [Self.metric(nil, alias: 10, type: 10) { $0.doubleValue = 65 }]), at: t0 + 5000)
        #expect(Self.temperature(pipeline) == [61.5, 63, 64, 65])
        #expect(pipeline.counters.totalRejected == 0)
    }

    @Test func `a gap still open after the reorder timeout is reported and asks for a rebirth; what waited is applied in order`() throws {
        let (pipeline, sink, commands) = self.pipeline()
        self.birth(pipeline)
        let t0: Int64 = 1_790_000_001_000
        self.send(pipeline, "spBv1.0/plant1/DDATA/edge1/pump7", Self.payload(seq: 5, timestamp: UInt64(t0 + 2000), [Self.metric(nil, alias: 10, type: 10) { $0.doubleValue = 66 }]), at: t0)
        self.send(pipeline, "spBv1.0/plant1/DDATA/edge1/pump7", Self.payload(seq: 4, timestamp: UInt64(t0 + 1000), [Self.metric(nil, alias: 10, type: 10) { $0.doubleValue = 65 }]), at: t0 + 100)
        pipeline.tick(now: t0 + 1999)
        #expect(commands.sent.withLock { $0 }.isEmpty)
        pipeline.tick(now: t0 + 2000)
        let sent = commands.sent.withLock { $0 }
        #expect(sent.map(\.topic) == ["spBv1.0/plant1/NCMD/edge1"])
        #expect(Self.temperature(pipeline) == [61.5, 65, 66])
        let raised = sink.events.withLock { $0 }.filter { $0.state == .raised && $0.kind == .dataQuality }
        #expect(raised.map(\.tag) == ["plant1/edge1"])
        // A late arrival of a number given up on is refused, counted, and changes nothing.
        self.send(pipeline, "spBv1.0/plant1/DDATA/edge1/pump7", Self.payload(seq: 2, timestamp: UInt64(t0), [Self.metric(nil, alias: 10, type: 10) { $0.doubleValue = 10 }]), at: t0 + 2100)
        #expect(Self.temperature(pipeline) == [61.5, 65, 66])
        #expect(pipeline.counters.rejected[.sparkplugSequence] == 1)
    }

    @Test func `messages held for a gap are bounded per node: past the bound the gap is given up at once`() {
        let (pipeline, _, commands) = self.pipeline()
        self.birth(pipeline)
        let t0: Int64 = 1_790_000_001_000
        // Sequence numbers 3…70 (2 never comes): 64 are held, the 65th gives the gap up.
        for seq in 3...67 {
            self.send(pipeline, "spBv1.0/plant1/DDATA/edge1/pump7", Self.payload(seq: UInt64(seq), timestamp: UInt64(t0 + Int64(seq)), [Self.metric(nil, alias: 10, type: 10) { $0.doubleValue = Double(seq) }]), at: t0)
        }
        #expect(commands.sent.withLock { $0 }.count == 1)
        #expect(Self.temperature(pipeline).suffix(65) == (3...67).map(Double.init)[...])
    }

    @Test func `is_historical metrics go to the tag's history in time order; no detector sees them and the present is unchanged`() {
        var map = TopicMap()
        map.tags["plant1/edge1/pump7/Temperature"] = TagInfo(unit: "degC", limits: .init(hi: 90, deadband: 1))
        let (pipeline, sink, _) = self.pipeline(map: map)
        self.birth(pipeline)  // 61.5 at 1_790_000_000_000
        self.send(pipeline, "spBv1.0/plant1/DDATA/edge1/pump7", Self.payload(seq: 2, timestamp: 1_790_000_010_000, [
            Self.metric(nil, alias: 10, type: 10) { $0.doubleValue = 62 },
            // Store-and-forward from before the birth, one of them far past the HI limit.
            Self.metric(nil, alias: 10, type: 10) { $0.doubleValue = 120; $0.isHistorical = true; $0.timestamp = 1_789_999_990_000 },
            Self.metric(nil, alias: 10, type: 10) { $0.doubleValue = 60; $0.isHistorical = true; $0.timestamp = 1_790_000_005_000 },
            // A historical sample of bad quality is not history.
            Self.metric(nil, alias: 10, type: 10) { $0.doubleValue = 59; $0.isHistorical = true; $0.timestamp = 1_790_000_006_000; $0.properties = Self.quality(0) },
        ]))
        #expect(Self.temperature(pipeline) == [120, 61.5, 60, 62])
        #expect(pipeline.windows(of: ["plant1/edge1/pump7/Temperature"], limit: 100).first?.times == [
            1_789_999_990_000, 1_790_000_000_000, 1_790_000_005_000, 1_790_000_010_000,
        ])
        #expect(!sink.events.withLock { $0 }.contains { $0.kind == .limit })
        #expect(pipeline.counters.historicalSamples == 2)
        #expect(pipeline.processedCount(tag: "plant1/edge1/pump7/Temperature") == 2)
    }

    static func quality(_ code: Int32) -> Payload.PropertySet {
        var value = Payload.PropertyValue()
        value.type = 3
        value.intValue = UInt32(bitPattern: code)
        var set = Payload.PropertySet()
        set.keys = ["Quality"]
        set.values = [value]
        return set
    }

    @Test func `a Quality property of 0 makes the sample bad data, 500 (stale) uncertain, 192 good`() {
        let (pipeline, sink, _) = self.pipeline()
        self.birth(pipeline)
        let view = { pipeline.views(of: ["plant1/edge1/pump7/Temperature"], window: 10).first?.lastQuality }
        self.send(pipeline, "spBv1.0/plant1/DDATA/edge1/pump7", Self.payload(seq: 2, timestamp: 1_790_000_001_000, [
            Self.metric(nil, alias: 10, type: 10) { $0.doubleValue = 62; $0.properties = Self.quality(500) }
        ]))
        #expect(view() == .uncertain)
        self.send(pipeline, "spBv1.0/plant1/DDATA/edge1/pump7", Self.payload(seq: 3, timestamp: 1_790_000_002_000, [
            Self.metric(nil, alias: 10, type: 10) { $0.doubleValue = 63; $0.properties = Self.quality(0) }
        ]))
        #expect(view() == .bad)
        #expect(pipeline.counters.badQualitySamples == 1)
        #expect(sink.events.withLock { $0 }.contains { $0.kind == .dataQuality && $0.state == .raised && $0.tag == "plant1/edge1/pump7/Temperature" })
        #expect(!Self.temperature(pipeline).contains(63))
        self.send(pipeline, "spBv1.0/plant1/DDATA/edge1/pump7", Self.payload(seq: 4, timestamp: 1_790_000_003_000, [
            Self.metric(nil, alias: 10, type: 10) { $0.doubleValue = 64; $0.properties = Self.quality(192) }
        ]))
        #expect(view() == .good)
    }

    @Test func `a lost connection makes every node unborn and its tags uncertain, with no alarm per tag`() {
        let (pipeline, sink, commands) = self.pipeline()
        self.birth(pipeline)
        let before = sink.events.withLock { $0 }.count
        pipeline.sparkplugConnectionLost()
        let views = pipeline.views(of: pipeline.tags(withPrefix: "plant1/"), window: 10)
        #expect(views.count == 7 && views.allSatisfy { $0.lastQuality == .uncertain })
        #expect(sink.events.withLock { $0 }.count == before)
        // Data after the loss is not believed before a new birth: a rebirth is asked for.
        self.send(pipeline, "spBv1.0/plant1/DDATA/edge1/pump7", Self.payload(seq: 2, timestamp: 1_790_000_001_000, [Self.metric(nil, alias: 10, type: 10) { $0.doubleValue = 62 }]), at: 1_790_000_001_000)
        #expect(commands.sent.withLock { $0 }.map(\.topic) == ["spBv1.0/plant1/NCMD/edge1"])
        #expect(Self.temperature(pipeline) == [61.5])
        // A second report of the same loss says nothing more; a new birth makes the tags good.
        pipeline.sparkplugConnectionLost()
        self.birth(pipeline, at: 1_790_000_002_000)
        #expect(pipeline.views(of: ["plant1/edge1/pump7/Temperature"], window: 10).first?.lastQuality == .good)
    }

    @Test func `data before birth is not guessed at: it asks for a rebirth`() {
        let (pipeline, _, commands) = self.pipeline()
        self.send(pipeline, "spBv1.0/plant1/NDATA/edge2", Self.payload(seq: 3, [Self.metric(nil, alias: 1, type: 10) { $0.doubleValue = 1 }]))
        #expect(commands.sent.withLock { $0 }.map(\.topic) == ["spBv1.0/plant1/NCMD/edge2"])
        #expect(pipeline.tags(withPrefix: "plant1/edge2/").isEmpty)
    }

    @Test func `NDEATH marks every tag of the node stale, DDEATH only the device's; a death from an old session is ignored`() {
        let (pipeline, sink, _) = self.pipeline()
        self.birth(pipeline)
        self.send(pipeline, "spBv1.0/plant1/DDEATH/edge1/pump7", Self.payload(seq: 2, []))
        var stale = Set(sink.events.withLock { $0 }.filter { $0.kind == .stale && $0.state == .raised }.map(\.tag))
        #expect(stale.count == 6 && !stale.contains("plant1/edge1/Uptime"))
        self.send(pipeline, "spBv1.0/plant1/NDEATH/edge1", Self.payload(seq: nil, [Self.metric("bdSeq", alias: nil, type: 8) { $0.longValue = 6 }]))
        stale = Set(sink.events.withLock { $0 }.filter { $0.kind == .stale && $0.state == .raised }.map(\.tag))
        #expect(!stale.contains("plant1/edge1/Uptime"))  // bdSeq 6 is not this session's 7
        self.send(pipeline, "spBv1.0/plant1/NDEATH/edge1", Self.payload(seq: nil, [Self.metric("bdSeq", alias: nil, type: 8) { $0.longValue = 7 }]))
        stale = Set(sink.events.withLock { $0 }.filter { $0.kind == .stale && $0.state == .raised }.map(\.tag))
        #expect(stale.contains("plant1/edge1/Uptime") && stale.count == 7)
        // Stale clears with the next good sample after a new birth.
        self.birth(pipeline, at: 1_790_000_060_000)
        #expect(sink.events.withLock { $0 }.contains { $0.kind == .stale && $0.state == .cleared && $0.tag == "plant1/edge1/Uptime" })
    }

    @Test func `a limit breach on a Sparkplug tag alerts on the spb alert topic`() {
        var map = TopicMap()
        map.tags["plant1/edge1/pump7/Temperature"] = TagInfo(unit: "degC", limits: .init(hi: 90, deadband: 1))
        let (pipeline, sink, _) = self.pipeline(map: map)
        self.birth(pipeline)
        self.send(pipeline, "spBv1.0/plant1/DDATA/edge1/pump7", Self.payload(seq: 2, timestamp: 1_790_000_002_000, [
            Self.metric(nil, alias: 10, type: 10) { $0.doubleValue = 95 }
        ]))
        let alert = sink.events.withLock { $0 }.first { $0.kind == .limit }
        #expect(alert?.tag == "plant1/edge1/pump7/Temperature")
        #expect(alert?.alertTopic(prefix: "apos") == "apos/alert/warning/spb/plant1/edge1/pump7/Temperature")
    }

    @Test func `garbage payloads and malformed topics are refused with counters`() {
        let (pipeline, _, _) = self.pipeline()
        self.send(pipeline, "spBv1.0/plant1/NDATA/edge1", [0xFF, 0xFF, 0xFF, 0xFF, 0x0F])
        self.send(pipeline, "spBv1.0/plant1/NDATA", Self.payload(seq: 0, []))
        self.send(pipeline, "spBv1.0/plant1/DDATA/edge1", Self.payload(seq: 0, []))
        self.send(pipeline, "spBv1.0/plant1/BOGUS/edge1", Self.payload(seq: 0, []))
        self.send(pipeline, "spBv1.0/plant1/NCMD/edge1", Self.payload(seq: 0, []))  // a command: not ours, not an error
        let counters = pipeline.counters
        #expect(counters.rejected[.sparkplugPayload] == 1)
        #expect(counters.rejected[.sparkplugTopic] == 3)
        #expect(counters.messages == 5)
    }
}
