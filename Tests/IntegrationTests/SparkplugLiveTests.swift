import Foundation
import Mosquitto
import SwiftProtobuf
import Testing

@testable import OrchestratorCore

/// Sparkplug B over the real broker: births, data by alias, an alert on the `spb` topic, and a
/// rebirth request answered on NCMD after a sequence gap.
@Suite(.timeLimit(.minutes(1)))
struct SparkplugLiveTests {
    typealias Payload = Org_Eclipse_Tahu_Protobuf_Payload

    static func payload(seq: UInt64, time: UInt64, _ metrics: [(name: String?, alias: UInt64, value: Double)]) -> [UInt8] {
        var payload = Payload()
        payload.seq = seq
        payload.timestamp = time
        payload.metrics = metrics.map { entry in
            var metric = Payload.Metric()
            if let name = entry.name { metric.name = name }
            metric.alias = entry.alias
            metric.datatype = 10
            metric.doubleValue = entry.value
            return metric
        }
        return try! payload.serializedBytes()
    }

    @Test func `births, data by alias, an spb alert, and a rebirth request after a gap, over mosquitto`() async throws {
        let group = "it\(UUID().uuidString.prefix(6))"
        var map = LivePathTests.shippedMap
        map.tags["\(group)/edge1/pump7/Temperature"] = TagInfo(unit: "degC", limits: .init(hi: 90, deadband: 1))
        var config = TestServices.config(prefix: "it-spb", databaseURL: try await TestServices.freshDatabase(), topicMap: map)
        config.topics.sparkplug = true
        // As shipped: a persistent session for plant data, so Sparkplug B rides its own clean one
        // (a fresh id per run: the shared broker keeps persistent sessions between runs).
        config.mqtt.cleanStart = false
        config.mqtt.clientID = "dang-it-spb-\(UUID().uuidString.prefix(8))"
        let orchestrator = try Orchestrator(config: config, logger: testLogger)
        let watcher = try TestSubscriber(filters: ["it-spb/alert/+/spb/#", "spBv1.0/\(group)/NCMD/#"])
        let publisher = try TestPublisher()
        try await watcher.waitUntilConnected()
        try await publisher.waitUntilConnected()
        try await withRunningOrchestrator(orchestrator) {
            try await eventually("connected") { orchestrator.connectionStatus.connected }
            try await Task.sleep(for: .milliseconds(200))
            let t: UInt64 = 1_790_000_000_000
            try publisher.publish("spBv1.0/\(group)/NBIRTH/edge1", bytes: Self.payload(seq: 0, time: t, []))
            try publisher.publish("spBv1.0/\(group)/DBIRTH/edge1/pump7", bytes: Self.payload(seq: 1, time: t, [("Temperature", 10, 60)]))
            try publisher.publish("spBv1.0/\(group)/DDATA/edge1/pump7", bytes: Self.payload(seq: 2, time: t + 1000, [(nil, 10, 95)]))
            try await eventually("the limit alert on the spb topic") {
                watcher.messages.contains { $0.topic == "it-spb/alert/warning/spb/\(group)/edge1/pump7/Temperature" }
            }
            try publisher.publish("spBv1.0/\(group)/DDATA/edge1/pump7", bytes: Self.payload(seq: 7, time: t + 2000, [(nil, 10, 95)]))
            try await eventually("a rebirth request") { watcher.messages.contains { $0.topic == "spBv1.0/\(group)/NCMD/edge1" } }
            let command = try Payload(serializedBytes: watcher.messages.first { $0.topic.hasSuffix("NCMD/edge1") }!.payload)
            #expect(command.metrics.first?.name == "Node Control/Rebirth")
        }
    }

    /// `(online, timestamp)` of the STATE messages received so far.
    static func states(_ watcher: TestSubscriber, _ topic: String) -> [(online: Bool, timestamp: Int64, retained: Bool)] {
        watcher.messages.filter { $0.topic == topic }.compactMap { message in
            guard let json = message.json, let online = json["online"] as? Bool, let timestamp = json["timestamp"] as? Int64 else { return nil }
            return (online, timestamp, message.retained)
        }
    }

    @Test func `as the primary host: the retained STATE birth, offline answered with online at once, the death at a graceful stop`() async throws {
        let host = "dang-it-\(UUID().uuidString.prefix(8))"
        let topic = "spBv1.0/STATE/\(host)"
        var config = TestServices.config(prefix: "it-spbh", databaseURL: try await TestServices.freshDatabase(), topicMap: LivePathTests.shippedMap)
        config.topics.sparkplug = true
        config.topics.sparkplugHostID = host
        // A clean main session: the host role still gets a connection of its own (the main one's
        // will is the gateway status).
        config.mqtt.cleanStart = true
        config.mqtt.clientID = "dang-it-spbh-\(UUID().uuidString.prefix(8))"
        let orchestrator = try Orchestrator(config: config, logger: testLogger)
        let watcher = try TestSubscriber(filters: [topic])
        let publisher = try TestPublisher()
        try await watcher.waitUntilConnected()
        try await publisher.waitUntilConnected()
        let started = EpochMilliseconds.now()
        try await withRunningOrchestrator(orchestrator) {
            try await eventually("the STATE birth") { Self.states(watcher, topic).contains { $0.online } }
            let birth = Self.states(watcher, topic).first { $0.online }!.timestamp
            #expect(birth >= started - 1000 && birth <= EpochMilliseconds.now())
            // Someone says the host is offline: it says online again, with its connection's time.
            try publisher.publish(topic, #"{"online": false, "timestamp": \#(birth)}"#)
            try await eventually("the birth again") { Self.states(watcher, topic).filter { $0.online }.count >= 2 }
            #expect(Self.states(watcher, topic).filter { $0.online }.allSatisfy { $0.timestamp == birth })
            // Junk on the topic is not acted on.
            try publisher.publish(topic, "not json")
            try await Task.sleep(for: .milliseconds(300))
            #expect(Self.states(watcher, topic).filter { $0.online }.count == 2)
        }
        try await eventually("the death") { Self.states(watcher, topic).last.map { !$0.online } == true }
        let birth = Self.states(watcher, topic).first { $0.online }!.timestamp
        #expect(Self.states(watcher, topic).last!.timestamp > birth, "\(Self.states(watcher, topic))")
        // Retained: a subscriber that comes later is told the host is offline.
        let late = try TestSubscriber(filters: [topic])
        try await eventually("the retained death") { Self.states(late, topic).first.map { !$0.online && $0.retained } == true }
        try publisher.client.publish(topic: topic, payload: [], qos: 1, retain: true)  // (the shared broker forgets it)
    }
}
