import Foundation
import SwiftProtobuf

/// Sparkplug B ingest (`spBv1.0/{group}/{type}/{edge}[/{device}]`, docs/mqtt-contract.md,
/// "Sparkplug B"): births build each edge node's alias table, data messages become samples of the
/// tags `{group}/{edge}/{device}/{metric}` (`{group}/{edge}/{metric}` for node metrics), sequence
/// numbers are checked, deaths mark a node's or device's tags stale. Pure state: the pipeline feeds
/// it messages under its lock and acts on what comes back.
package struct SparkplugSession: Sendable {
    /// What one message (or a timer tick) produced.
    package struct Outcome: Sendable {
        /// Live samples for the detectors: tag, value, sample time (ms, or nil for receipt time), and
        /// quality (a metric's `Quality` property: 0 bad, 500 stale → uncertain, 192 or none good).
        package var samples: [(tag: String, value: Double, time: Int64?, quality: SampleQuality)] = []
        /// Metrics flagged `is_historical` (store-and-forward, backfill): history, never live.
        package var historical: [(tag: String, value: Double, time: Int64)] = []
        /// Tags whose source died (NDEATH/DDEATH): mark them stale.
        package var dead: [String] = []
        /// Data-quality problems of nodes (sequence gap, data before birth): `(node, text)`.
        package var problems: [(node: String, text: String)] = []
        /// Nodes to ask to publish their births again (NCMD `Node Control/Rebirth`).
        package var rebirths: [(group: String, edge: String)] = []
        /// Why the message was refused, if it was.
        package var rejection: String? = nil
        /// Metrics skipped (not numeric, no name for the alias…).
        package var skipped = 0

        package var isEmpty: Bool {
            self.samples.isEmpty && self.historical.isEmpty && self.dead.isEmpty && self.problems.isEmpty && self.rebirths.isEmpty
        }

        mutating func problem(_ node: String, _ text: String) { self.problems.append((node, text)) }

        mutating func rebirth(_ request: (group: String, edge: String)?) {
            if let request, !self.rebirths.contains(where: { $0 == request }) { self.rebirths.append(request) }
        }
    }

    /// A message that came ahead of a missing sequence number, waiting for it.
    private struct Held {
        var seq: UInt64
        var type: String
        var device: String?
        var message: Org_Eclipse_Tahu_Protobuf_Payload
    }

    private struct Node {
        /// alias → (device or nil for node metrics, metric name)
        var aliases: [UInt64: (device: String?, name: String)] = [:]
        var born = false
        /// Devices that sent a DBIRTH since the node's birth (DDATA of any other is refused).
        var devices: Set<String> = []
        var seq: UInt64?
        var bdSeq: UInt64?
        /// Tags seen per device (nil key: node metrics), for deaths.
        var tags: [String: Set<String>] = [:]
        var lastRebirthRequest: Int64 = .min / 2
        /// Messages ahead of a gap, and since when the gap is open (Reorder Timeout).
        var held: [Held] = []
        var gapSince: Int64? = nil
    }

    /// Nodes that have been born (state is kept for nothing else).
    private var nodes: [String: Node] = [:]
    /// When a rebirth was last asked of a node that was never born here (bounded: at most
    /// `maxNodes` entries, the oldest forgotten first).
    private var unbornRequests: [String: Int64] = [:]
    /// Aliases held over all nodes.
    private var aliasCount = 0
    /// Rebirth requests to never-born nodes in the current 5 s window.
    private var unbornWindowStart: Int64? = nil
    private var unbornWindowCount = 0
    /// A never-born node is asked again at most this often (ms), so that others get their turn.
    static let unbornInterval: Int64 = 60_000
    /// At most this many rebirth requests to never-born nodes every 5 s.
    package let maxUnbornRebirths = 200
    /// At most this many nodes, devices per node, metrics per node and aliases in all (a hostile
    /// stream cannot grow memory unbounded).
    package let maxNodes: Int
    package let maxAliasesPerNode: Int
    package let maxDevicesPerNode: Int
    package let maxAliases: Int
    /// How long (ms) messages ahead of a missing sequence number wait for it; 0: a gap is reported
    /// at once.
    package let reorderTimeout: Int64
    /// At most this many messages held per node, and in all, while waiting for missing ones.
    package let maxHeldPerNode = 64
    package let maxHeld = 4096
    /// Messages held over all nodes.
    private var heldCount = 0
    /// Nodes with held messages (what a timer tick looks at).
    private var waiting: Set<String> = []

    package init(
        maxNodes: Int = 10_000, maxAliasesPerNode: Int = 100_000, maxDevicesPerNode: Int = 1_000, maxAliases: Int = 1_000_000,
        reorderTimeout: Duration = .zero
    ) {
        self.maxNodes = maxNodes
        self.maxAliasesPerNode = maxAliasesPerNode
        self.maxDevicesPerNode = maxDevicesPerNode
        self.maxAliases = maxAliases
        self.reorderTimeout = max(0, reorderTimeout.milliseconds)
    }

    package static let namespace = "spBv1.0"
    /// `spBv1.0/`, the prefix of every Sparkplug topic.
    package static let topicPrefix = namespace + "/"

    /// Handles one message on `spBv1.0/…`. `now` is the orchestrator's clock (ms).
    package mutating func handle(topic: String, payload: UnsafeRawBufferPointer, now: Int64) -> Outcome {
        var outcome = Outcome()
        let levels = topic.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard levels.count == 4 || levels.count == 5, levels[0] == Self.namespace, levels.dropFirst().allSatisfy(Self.isValidName) else {
            outcome.rejection = "sparkplug_topic"
            return outcome
        }
        let group = levels[1]
        let type = levels[2]
        let edge = levels[3]
        let device: String? = levels.count == 5 ? levels[4] : nil
        switch type {
        case "NCMD", "DCMD", "STATE": return outcome  // commands and host state: not ours to ingest
        case "NBIRTH", "NDEATH", "NDATA": guard device == nil else { outcome.rejection = "sparkplug_topic"; return outcome }
        case "DBIRTH", "DDEATH", "DDATA": guard device != nil else { outcome.rejection = "sparkplug_topic"; return outcome }
        default:
            outcome.rejection = "sparkplug_topic"
            return outcome
        }
        let message: Org_Eclipse_Tahu_Protobuf_Payload
        do {
            message = try Org_Eclipse_Tahu_Protobuf_Payload(serializedBytes: Array(payload))
        } catch {
            outcome.rejection = "sparkplug_payload"
            return outcome
        }
        let key = "\(group)/\(edge)"
        if self.nodes[key] == nil {
            // Only a birth makes a node known; anything else from an unknown node is answered with
            // a (rate-limited) rebirth request, and no state is kept for it.
            guard type == "NBIRTH" else {
                guard type != "NDEATH" else { return outcome }
                outcome.rebirth(self.rebirthUnborn(key, group: group, edge: edge, now: now))
                outcome.rejection = "sparkplug_unborn"
                return outcome
            }
            guard self.nodes.count < self.maxNodes else {
                outcome.rejection = "sparkplug_node_limit"
                return outcome
            }
            self.nodes[key] = Node()
            self.unbornRequests[key] = nil
        }
        var node = self.nodes[key]!
        defer { self.nodes[key] = node }

        // Sequence numbers: NBIRTH starts at 0; every later message of the node adds one (mod 256).
        // A seq outside 0…255 is a protocol error (the field is a uint64 on the wire): the message
        // is refused and the node asked to start again, never used in arithmetic.
        if message.hasSeq, message.seq > 255, type != "NDEATH" {
            outcome.problem(key, "\(type) with sequence number \(message.seq) outside 0…255")
            outcome.rebirth(node.born ? self.rebirth(&node, group: group, edge: edge, now: now) : nil)
            self.release(&node, key: key)
            node.born = false
            outcome.rejection = "sparkplug_sequence"
            return outcome
        }
        if type == "NBIRTH" {
            self.aliasCount -= node.aliases.count
            self.release(&node, key: key)
            node = Node(lastRebirthRequest: node.lastRebirthRequest)
            node.born = true
            node.seq = message.hasSeq ? message.seq : 0
            node.bdSeq = message.metrics.first { $0.name == "bdSeq" }.flatMap(Self.unsigned)
        } else if type != "NDEATH" {
            guard node.born else {
                outcome.problem(key, "\(type) before NBIRTH")
                outcome.rebirth(self.rebirth(&node, group: group, edge: edge, now: now))
                return outcome
            }
            if message.hasSeq, let last = node.seq {
                let expected = (last &+ 1) % 256
                if message.seq != expected {
                    // How far ahead of the expected number: 1…127 ahead, 128…255 behind (late).
                    let ahead = (message.seq &+ 256 &- expected) % 256
                    if self.reorderTimeout > 0 {
                        guard ahead < 128 else {
                            // A message from before the expected one: its turn has passed (a gap
                            // already given up on, or a redelivery).
                            outcome.rejection = "sparkplug_sequence"
                            return outcome
                        }
                        if node.held.count < self.maxHeldPerNode, self.heldCount < self.maxHeld {
                            if !node.held.contains(where: { $0.seq == message.seq }) {
                                node.held.append(Held(seq: message.seq, type: type, device: device, message: message))
                                self.heldCount += 1
                                self.waiting.insert(key)
                            }
                            node.gapSince = node.gapSince ?? now
                            if now &- node.gapSince! >= self.reorderTimeout {
                                self.giveUpWaiting(&node, key: key, group: group, edge: edge, now: now, into: &outcome)
                            }
                            return outcome
                        }
                        // No room to wait: the gap is given up on now, and this message follows.
                        self.giveUpWaiting(&node, key: key, group: group, edge: edge, now: now, into: &outcome)
                    } else {
                        outcome.problem(key, "sequence gap: expected \(expected), got \(message.seq)")
                        outcome.rebirth(self.rebirth(&node, group: group, edge: edge, now: now))
                    }
                }
                node.seq = message.seq
            }
        }
        self.apply(type: type, device: device, message: message, to: &node, key: key, group: group, edge: edge, now: now, into: &outcome)
        // The missing message came: those held behind it follow, in order.
        if !node.held.isEmpty, node.born { self.drainHeld(&node, key: key, group: group, edge: edge, now: now, into: &outcome) }
        return outcome
    }

    /// What a message of a born node says: births, deaths and metrics.
    private mutating func apply(
        type: String, device: String?, message: Org_Eclipse_Tahu_Protobuf_Payload, to node: inout Node, key: String, group: String,
        edge: String, now: Int64, into outcome: inout Outcome
    ) {
        if let device {
            switch type {
            case "DBIRTH":
                guard node.devices.contains(device) || node.devices.count < self.maxDevicesPerNode else {
                    outcome.rejection = "sparkplug_device_limit"
                    return
                }
                node.devices.insert(device)
            case "DDATA" where !node.devices.contains(device):
                // Data of a device this session never saw born: its aliases would be guesses.
                outcome.problem(key, "DDATA of device \(device.prefix(64)) before its DBIRTH")
                outcome.rebirth(self.rebirth(&node, group: group, edge: edge, now: now))
                outcome.rejection = "sparkplug_unborn"
                return
            default:
                break
            }
        }

        switch type {
        case "NDEATH", "DDEATH":
            if type == "NDEATH" {
                // A death from an older session (its bdSeq is not the birth's) is stale news.
                if let death = message.metrics.first(where: { $0.name == "bdSeq" }).flatMap(Self.unsigned), let birth = node.bdSeq, death != birth {
                    return
                }
                outcome.dead += node.tags.values.flatMap { $0 }.sorted()
                self.release(&node, key: key)
                node.born = false
            } else {
                outcome.dead += node.tags[device ?? ""].map { Array($0).sorted() } ?? []
                if let device { node.devices.remove(device) }
            }
            return
        default:
            break
        }

        let births = type == "NBIRTH" || type == "DBIRTH"
        let messageTime = message.hasTimestamp ? Int64(clamping: message.timestamp) : nil
        for metric in message.metrics {
            var name: String? = metric.hasName ? metric.name : nil
            // A name is checked before it is stored as an alias's, so a bad one takes no room.
            if let named = name, !Self.isValidName(named) {
                outcome.skipped += 1
                continue
            }
            if births, let named = name, metric.hasAlias {
                if node.aliases[metric.alias] != nil {
                    node.aliases[metric.alias] = (device, named)
                } else if node.aliases.count < self.maxAliasesPerNode, self.aliasCount < self.maxAliases {
                    node.aliases[metric.alias] = (device, named)
                    self.aliasCount += 1
                }
            }
            if name == nil, metric.hasAlias, let known = node.aliases[metric.alias] {
                name = known.name
            }
            guard let metricName = name else {
                outcome.skipped += 1
                continue
            }
            if metricName == "bdSeq" || metricName.hasPrefix("Node Control/") || metricName.hasPrefix("Device Control/") {
                continue  // protocol metrics, not measurements
            }
            guard !(metric.hasIsNull && metric.isNull), let value = Self.number(metric) else {
                outcome.skipped += 1
                continue
            }
            let tag = [group, edge, device, metricName].compactMap { $0 }.joined(separator: "/")
            let time = metric.hasTimestamp ? Int64(clamping: metric.timestamp) : messageTime
            if metric.hasIsHistorical && metric.isHistorical {
                // Store-and-forward data: kept as the tag's history (good samples only, as every
                // sample there), not taken for its present.
                if let time, Self.quality(metric) == .good { outcome.historical.append((tag, value, time)) } else { outcome.skipped += 1 }
                continue
            }
            if node.tags[device ?? ""] != nil || node.tags.count <= self.maxDevicesPerNode,
                node.tags[device ?? "", default: []].count < self.maxAliasesPerNode
            {
                node.tags[device ?? "", default: []].insert(tag)
            }
            outcome.samples.append((tag, value, time, Self.quality(metric)))
        }
    }

    /// Applies the held messages that now follow in order.
    private mutating func drainHeld(_ node: inout Node, key: String, group: String, edge: String, now: Int64, into outcome: inout Outcome) {
        while node.born, let last = node.seq, let index = node.held.firstIndex(where: { $0.seq == (last &+ 1) % 256 }) {
            let next = node.held.remove(at: index)
            self.heldCount -= 1
            node.seq = next.seq
            self.apply(type: next.type, device: next.device, message: next.message, to: &node, key: key, group: group, edge: edge, now: now, into: &outcome)
        }
        if node.held.isEmpty {
            node.gapSince = nil
            self.waiting.remove(key)
        }
    }

    /// The Reorder Timeout passed (or there is no room to wait): the gap is reported, the node
    /// asked to rebirth, and what was held is applied in sequence order.
    private mutating func giveUpWaiting(_ node: inout Node, key: String, group: String, edge: String, now: Int64, into outcome: inout Outcome) {
        guard let last = node.seq else { return }
        let expected = (last &+ 1) % 256
        let held = node.held.sorted { ($0.seq &+ 256 &- expected) % 256 < ($1.seq &+ 256 &- expected) % 256 }
        let waited = node.gapSince.map { max(0, now &- $0) } ?? 0
        outcome.problem(key, "sequence gap: expected \(expected), got \(held.first.map { "\($0.seq)" } ?? "none") (waited \(waited) ms)")
        outcome.rebirth(self.rebirth(&node, group: group, edge: edge, now: now))
        self.release(&node, key: key)
        for message in held where node.born {
            node.seq = message.seq
            self.apply(type: message.type, device: message.device, message: message.message, to: &node, key: key, group: group, edge: edge, now: now, into: &outcome)
        }
    }

    /// Forgets a node's held messages.
    private mutating func release(_ node: inout Node, key: String) {
        self.heldCount -= node.held.count
        node.held.removeAll()
        node.gapSince = nil
        self.waiting.remove(key)
    }

    /// The timer: gaps that waited the Reorder Timeout in vain are given up on.
    package mutating func expire(now: Int64) -> Outcome {
        var outcome = Outcome()
        guard !self.waiting.isEmpty else { return outcome }
        for key in self.waiting.sorted() {
            guard var node = self.nodes[key], let since = node.gapSince else {
                self.waiting.remove(key)
                continue
            }
            guard now &- since >= self.reorderTimeout || now < since else { continue }
            let parts = key.split(separator: "/", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { continue }
            self.giveUpWaiting(&node, key: key, group: parts[0], edge: parts[1], now: now, into: &outcome)
            self.nodes[key] = node
        }
        return outcome
    }

    /// The connection to the broker was lost: every message since is missing, so every node must
    /// be born again before its data is believed, and every tag it had is stale. Returns those tags.
    package mutating func connectionLost() -> [String] {
        var tags: [String] = []
        for key in self.nodes.keys {
            // (A node already unborn had its tags made stale or uncertain then.)
            guard var node = self.nodes[key], node.born else { continue }
            tags += node.tags.values.flatMap { $0 }
            self.release(&node, key: key)
            node.born = false
            self.nodes[key] = node
        }
        return tags.sorted()
    }

    /// A metric's `Quality` property (Sparkplug 3.0 §6.4.9.1: 0 bad, 192 good, 500 stale): good
    /// without one; stale, or a code the specification does not name, is uncertain.
    static func quality(_ metric: Org_Eclipse_Tahu_Protobuf_Payload.Metric) -> SampleQuality {
        guard metric.hasProperties, let index = metric.properties.keys.firstIndex(of: "Quality"),
            index < metric.properties.values.count
        else { return .good }
        let property = metric.properties.values[index]
        let code: Int64
        switch property.value {
        case .intValue(let raw)?: code = Int64(Int32(bitPattern: raw))
        case .longValue(let raw)?: code = Int64(bitPattern: raw)
        default: return .uncertain
        }
        switch code {
        case 192: return .good
        case 0: return .bad
        default: return .uncertain
        }
    }

    /// A rebirth request to a node never born here: at most one per node a minute, at most 200 in
    /// all every 5 s, and at most `maxNodes` such nodes remembered (junk node names cannot grow this
    /// without bound).
    private mutating func rebirthUnborn(_ key: String, group: String, edge: String, now: Int64) -> (group: String, edge: String)? {
        if let last = self.unbornRequests[key], now &- last < Self.unbornInterval, now >= last { return nil }
        // And at most `maxUnbornRebirths` such requests every 5 s in all: after our own restart every
        // node is unborn to us and each gets its request soon (2,400 nodes a minute), but a flood of
        // junk node names cannot turn the orchestrator into an NCMD generator.
        if let start = self.unbornWindowStart, now &- start < 5000, now >= start {
            guard self.unbornWindowCount < self.maxUnbornRebirths else { return nil }
        } else {
            self.unbornWindowStart = now
            self.unbornWindowCount = 0
        }
        if self.unbornRequests.count >= self.maxNodes {
            self.unbornRequests = self.unbornRequests.filter { now &- $0.value < Self.unbornInterval }
            guard self.unbornRequests.count < self.maxNodes else { return nil }
        }
        self.unbornWindowCount += 1
        self.unbornRequests[key] = now
        return (group, edge)
    }

    /// A rebirth request, at most one per node every 5 s.
    private func rebirth(_ node: inout Node, group: String, edge: String, now: Int64) -> (group: String, edge: String)? {
        guard now &- node.lastRebirthRequest >= 5000 else { return nil }
        node.lastRebirthRequest = now
        return (group, edge)
    }

    /// The numeric value of a metric by its Sparkplug datatype; nil for strings, bytes, datasets,
    /// templates and unknown types.
    static func number(_ metric: Org_Eclipse_Tahu_Protobuf_Payload.Metric) -> Double? {
        guard let value = metric.value else { return nil }
        let type = metric.hasDatatype ? metric.datatype : 0
        switch value {
        case .intValue(let raw):
            // Int8/16/32 travel as their two's complement in uint32.
            switch type {
            case 1: return Double(Int8(truncatingIfNeeded: raw))
            case 2: return Double(Int16(truncatingIfNeeded: raw))
            case 3: return Double(Int32(bitPattern: raw))
            default: return Double(raw)
            }
        case .longValue(let raw):
            switch type {
            case 4: return Double(Int64(bitPattern: raw))
            case 13: return nil  // DateTime: a time, not a measurement
            default: return Double(raw)
            }
        case .floatValue(let v): return v.isFinite ? Double(v) : nil
        case .doubleValue(let v): return v.isFinite ? v : nil
        case .booleanValue(let v): return v ? 1 : 0
        default: return nil
        }
    }

    static func unsigned(_ metric: Org_Eclipse_Tahu_Protobuf_Payload.Metric) -> UInt64? {
        switch metric.value {
        case .intValue(let v)?: UInt64(v)
        case .longValue(let v)?: v
        default: nil
        }
    }

    static func isValidName(_ level: String) -> Bool {
        !level.isEmpty && level.utf8.count <= 256
            && !level.unicodeScalars.contains { $0 == "+" || $0 == "#" || $0.value < 0x20 || $0.value == 0x7F }
    }

    /// The NCMD that asks an edge node for its births again.
    package static func rebirthCommand(now: Int64) -> [UInt8] {
        var metric = Org_Eclipse_Tahu_Protobuf_Payload.Metric()
        metric.name = "Node Control/Rebirth"
        metric.datatype = 11  // Boolean
        metric.booleanValue = true
        var payload = Org_Eclipse_Tahu_Protobuf_Payload()
        payload.timestamp = UInt64(max(0, now))
        payload.metrics = [metric]
        return (try? payload.serializedBytes()) ?? []
    }
}
