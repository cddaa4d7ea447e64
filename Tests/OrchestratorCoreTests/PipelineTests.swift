import Foundation
import Logging
import Synchronization
import Testing

@testable import DangTools
@testable import OrchestratorCore

/// Collects what the pipeline delivers.
final class CollectingSink: AlertSink, Sendable {
    let events = Mutex<[AlertEvent]>([])
    func deliver(_ event: AlertEvent) { self.events.withLock { $0.append(event) } }
}

@Suite struct PipelineTests {
    func pipeline(map: TopicMap, settings: (inout DetectionSettings) -> Void = { _ in }) -> (IngestPipeline, CollectingSink) {
        var config = OrchestratorConfig.defaults(topicMap: map)
        settings(&config.detection)
        let sink = CollectingSink()
        return (IngestPipeline(config: config, sinks: [sink], logger: Logger(label: "test")), sink)
    }

    func publish(_ pipeline: IngestPipeline, _ topic: String, _ payload: String, at ms: Int64) {
        var t = topic
        var p = payload
        t.withUTF8 { topicBytes in
            p.withUTF8 { payloadBytes in
                pipeline.handle(topic: UnsafeRawBufferPointer(topicBytes), payload: UnsafeRawBufferPointer(payloadBytes), receivedAt: ms)
            }
        }
    }

    @Test func `a QoS 1 redelivery of samples already processed is counted, not fed again, and raises no data-quality alarm`() {
        var map = TopicMap()
        map.tags["r1/cdu/cdu1/TI-101"] = TagInfo()
        let (pipeline, sink) = self.pipeline(map: map)
        let topic = "plant/r1/cdu/cdu1/TI-101"
        func sample(_ second: Int64, _ value: Double) -> String { #"{"ts":\#(1_790_000_000_000 + second * 1000),"v":\#(value)}"# }
        for second: Int64 in 0..<20 { self.publish(pipeline, topic, sample(second, 350 + Double(second % 3)), at: 1_790_000_000_000 + second * 1000) }
        // After a broker restart the last three come again (at least once), then the stream goes on.
        for second: Int64 in 17..<20 { self.publish(pipeline, topic, sample(second, 350 + Double(second % 3)), at: 1_790_000_020_000) }
        for second: Int64 in 20..<25 { self.publish(pipeline, topic, sample(second, 350 + Double(second % 3)), at: 1_790_000_000_000 + second * 1000) }
        #expect(pipeline.processedCount(tag: "r1/cdu/cdu1/TI-101") == 25)
        #expect(pipeline.counters.redeliveries == 3)
        #expect(pipeline.counters.samples == 28)
        #expect(sink.events.withLock { $0 }.filter { $0.kind == .dataQuality }.isEmpty)

        // The same time with another value is no redelivery: the source is confused.
        self.publish(pipeline, topic, sample(24, 999), at: 1_790_000_025_000)
        #expect(pipeline.counters.redeliveries == 3)
        #expect(sink.events.withLock { $0 }.filter { $0.kind == .dataQuality && $0.state == .raised }.count == 1)
        #expect(pipeline.processedCount(tag: "r1/cdu/cdu1/TI-101") == 25)
    }

    @Test func `alerts made on the hot path carry the topic their sample came on`() {
        // The first sample of a topic takes the slow path (route, then the topic cache); later ones
        // find their slot by the topic's bytes, and their alerts read the topic from the cache.
        var map = TopicMap()
        let tags = (0..<300).map { "r1/cdu/cdu\($0 % 5)/TI-\($0)" }
        for tag in tags { map.tags[tag] = TagInfo(limits: .init(hi: 100)) }
        let (pipeline, sink) = self.pipeline(map: map)
        for tag in tags { self.publish(pipeline, "plant/\(tag)", #"{"ts":1790000000000,"v":50}"#, at: 1_790_000_001_000) }
        for tag in tags { self.publish(pipeline, "plant/\(tag)", #"{"ts":1790000001000,"v":150}"#, at: 1_790_000_002_000) }
        let raised = sink.events.withLock { $0 }.filter { $0.kind == .limit && $0.state == .raised }
        #expect(raised.count == tags.count)
        #expect(Set(raised.map(\.tag)) == Set(tags))
        #expect(raised.allSatisfy { $0.topic == "plant/" + $0.tag })
    }

    @Test func `a unit of the topic map trains on its baseline live, then names the tag that breaks the correlation`() {
        var map = TopicMap()
        for tag in ["r1/cdu/cdu1/TI-101", "r1/cdu/cdu1/TI-102", "r1/cdu/cdu1/FI-101"] { map.tags[tag] = TagInfo() }
        let (pipeline, sink) = self.pipeline(map: map) { settings in
            settings.multivariateBaseline = 200
            settings.trendEnabled = false
        }
        #expect(pipeline.units.map(\.name) == ["r1/cdu/cdu1"])
        var random = SplitMix64(seed: 8)
        for second in 0..<300 {
            let load = random.gaussian()
            let ms = Int64(second) * 1000
            // TI-101 and FI-101 follow the load; after 250 s FI-101 stops following it (a fault
            // no single tag shows: every value stays within its usual range).
            let flow = second < 250 ? 600 + 20 * load : 600 - 20 * load
            self.publish(pipeline, "plant/r1/cdu/cdu1/TI-101", "\(350 + 5 * load + 0.3 * random.gaussian())", at: ms)
            self.publish(pipeline, "plant/r1/cdu/cdu1/TI-102", "\(120 + random.gaussian())", at: ms)
            self.publish(pipeline, "plant/r1/cdu/cdu1/FI-101", "\(flow + 2 * random.gaussian())", at: ms)
            pipeline.tick(now: ms + 500)
        }
        #expect(pipeline.units.first?.trained == true)
        let alerts = sink.events.withLock { $0 }.filter { $0.kind == .multivariate && $0.state == .raised }
        #expect(alerts.count >= 1)
        #expect(alerts.first?.tag == "r1/cdu/cdu1")
        #expect(alerts.first.map { $0.timestamp >= 250_000 } == true)
        #expect(alerts.first?.message.contains("FI-101") == true)
        #expect(alerts.first?.alertTopic(prefix: "apos") == "apos/alert/warning/r1/cdu/cdu1")
    }

    @Test func `a tag with an expected period goes stale on the timer`() {
        var info = TagInfo()
        info.expectedPeriod = .seconds(1)
        let (pipeline, sink) = self.pipeline(map: TopicMap(tags: ["r1/a/u1/T": info]))
        self.publish(pipeline, "plant/r1/a/u1/T", "1", at: 0)
        self.publish(pipeline, "plant/r1/a/u1/T", "1", at: 1000)
        pipeline.tick(now: 3000)
        pipeline.tick(now: 5000)
        pipeline.tick(now: 6000)
        self.publish(pipeline, "plant/r1/a/u1/T", "1", at: 7000)
        let stale = sink.events.withLock { $0 }.filter { $0.kind == .stale }
        #expect(stale.map(\.state) == [.raised, .cleared])
        #expect(stale.first?.message.contains("no sample for") == true)
    }

    /// A broker outage silences every tag at once: that is one connection problem, not an alarm per
    /// periodic tag. Staleness waits while the broker is away, and after it is back a tag goes stale
    /// only when it stays silent for its own periods.
    @Test func `while the broker is away no tag goes stale, and silence counts again from its return`() {
        var info = TagInfo()
        info.expectedPeriod = .seconds(1)
        let map = TopicMap(tags: ["r1/a/u1/T": info, "r1/a/u1/U": info])
        let (pipeline, sink) = self.pipeline(map: map)
        for second: Int64 in 0...5 {
            self.publish(pipeline, "plant/r1/a/u1/T", "1", at: second * 1000)
            self.publish(pipeline, "plant/r1/a/u1/U", "1", at: second * 1000)
        }
        pipeline.brokerConnection(connected: false, at: 6000)
        for second: Int64 in 7...30 { pipeline.tick(now: second * 1000) }
        #expect(sink.events.withLock { $0 }.filter { $0.kind == .stale }.isEmpty)
        // Back at 31 s: T reports again, U stays silent and goes stale after its 3 periods.
        pipeline.brokerConnection(connected: true, at: 31_000)
        pipeline.tick(now: 32_000)
        pipeline.tick(now: 34_000)
        #expect(sink.events.withLock { $0 }.filter { $0.kind == .stale }.isEmpty)
        for second: Int64 in 32...36 { self.publish(pipeline, "plant/r1/a/u1/T", "1", at: second * 1000) }
        pipeline.tick(now: 35_000)
        pipeline.tick(now: 36_000)
        let stale = sink.events.withLock { $0 }.filter { $0.kind == .stale }
        #expect(stale.map(\.tag) == ["r1/a/u1/U"] && stale.map(\.state) == [.raised])
        // Without an outage the same silence is stale (the control).
        let (control, controlSink) = self.pipeline(map: map)
        for second: Int64 in 0...5 { self.publish(control, "plant/r1/a/u1/U", "1", at: second * 1000) }
        control.tick(now: 10_000)
        #expect(controlSink.events.withLock { $0 }.filter { $0.kind == .stale }.map(\.tag) == ["r1/a/u1/U"])
    }
}
