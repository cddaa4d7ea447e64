import Foundation
import Logging
import SwiftProtobuf
package import OrchestratorCore

/// Fuzz targets over message *sequences* through the whole ingest pipeline (issue 16): a single
/// payload cannot reach the state that a birth with a wild `seq` followed by data, or a sample from
/// year 9999 followed by a real one, gets into. The input bytes are read as a program of steps.
extension FuzzTargets {
    /// A little-endian reader over the fuzz input that never runs out (zeros past the end).
    struct Program {
        let bytes: UnsafeRawBufferPointer
        var index = 0

        var atEnd: Bool { self.index >= self.bytes.count }

        mutating func byte() -> UInt8 {
            defer { self.index += 1 }
            return self.index < self.bytes.count ? self.bytes[self.index] : 0
        }

        mutating func uint64() -> UInt64 {
            (0..<8).reduce(UInt64(0)) { value, shift in value | UInt64(self.byte()) << (8 * UInt64(shift)) }
        }

        /// One of the values that break arithmetic, or an arbitrary one.
        mutating func extreme(_ near: UInt64) -> UInt64 {
            switch self.byte() % 12 {
            case 0: 0
            case 1: UInt64.max
            case 2: UInt64(Int64.max)
            case 3: UInt64(bitPattern: Int64.min)
            case 4: 255
            case 5: 256
            case 6: near
            case 7: near &+ UInt64(self.byte())
            case 8: near &- UInt64(self.byte())
            case 9: 1 << 53 - 1
            case 10: 253_402_300_799_999
            default: self.uint64()
            }
        }
    }

    static let logger: Logger = {
        var logger = Logger(label: "dang-fuzz")
        logger.logLevel = .critical
        return logger
    }()

    static func pipeline() -> IngestPipeline {
        var map = TopicMap()
        map.tags["s/a/u/T1"] = TagInfo(limits: .init(lo: 0, hi: 100, hihi: 120, deadband: 1))
        map.tags["s/a/u/T1"]?.maxRatePerMinute = 10
        map.tags["s/a/u/T1"]?.flatline = .init(tolerance: 0, samples: 5, duration: .seconds(10))
        map.tags["s/a/u/T1"]?.expectedPeriod = .seconds(1)
        var config = OrchestratorConfig.defaults(topicMap: map)
        config.detection.maxTags = 64
        config.detection.multivariateBaseline = 20
        return IngestPipeline(config: config, sinks: [], logger: Self.logger, clock: { 1_790_000_000_000 })
    }

    /// Births, data and deaths of a few edge nodes and devices in any order, with wild `seq`,
    /// `bdSeq`, timestamps, aliases and values; the orchestrator's clock wanders too.
    static func sparkplugSequence(_ bytes: UnsafeRawBufferPointer) {
        let pipeline = Self.pipeline()
        pipeline.attachCommandPublisher { _, _ in }
        var program = Program(bytes: bytes)
        var now: Int64 = 1_790_000_000_000
        let types = ["NBIRTH", "NDATA", "NDEATH", "DBIRTH", "DDATA", "DDEATH", "NCMD", "STATE"]
        var steps = 0
        while !program.atEnd, steps < 64 {
            steps += 1
            let type = types[Int(program.byte()) % types.count]
            let node = "e\(program.byte() % 3)"
            let device = "d\(program.byte() % 3)"
            var payload = Org_Eclipse_Tahu_Protobuf_Payload()
            if program.byte() & 1 == 1 { payload.seq = program.extreme(UInt64(steps % 256)) }
            if program.byte() & 1 == 1 { payload.timestamp = program.extreme(UInt64(now)) }
            for _ in 0..<(program.byte() % 4) {
                var metric = Org_Eclipse_Tahu_Protobuf_Payload.Metric()
                switch program.byte() % 4 {
                case 0: metric.name = "bdSeq"
                case 1: metric.name = "M\(program.byte() % 4)"
                case 2: metric.name = String(decoding: [program.byte(), program.byte()], as: UTF8.self)
                default: break
                }
                if program.byte() & 1 == 1 { metric.alias = program.extreme(1) }
                if program.byte() & 1 == 1 { metric.timestamp = program.extreme(UInt64(now)) }
                metric.datatype = UInt32(program.byte() % 14)
                switch program.byte() % 4 {
                case 0: metric.doubleValue = Double(bitPattern: program.uint64())
                case 1: metric.longValue = program.extreme(7)
                case 2: metric.intValue = UInt32(truncatingIfNeeded: program.uint64())
                default: metric.booleanValue = true
                }
                payload.metrics.append(metric)
            }
            let topic = type.hasPrefix("D") ? "spBv1.0/g/\(type)/\(node)/\(device)" : "spBv1.0/g/\(type)/\(node)"
            let encoded = (try? payload.serializedBytes()) ?? []
            var text = topic
            text.withUTF8 { t in encoded.withUnsafeBytes { pipeline.handle(topic: UnsafeRawBufferPointer(t), payload: $0, receivedAt: now) } }
            now = now &+ Int64(program.byte()) * 100
            if program.byte() % 8 == 0 { pipeline.tick(now: now) }
        }
        _ = pipeline.evictIdle(now: now)
        _ = pipeline.snapshots()
    }

    /// A stream of JSON samples and unit batches with extreme times, values and qualities, the
    /// receipt clock jumping back and forth, timer ticks and evictions in between.
    static func sampleStream(_ bytes: UnsafeRawBufferPointer) {
        let pipeline = Self.pipeline()
        var program = Program(bytes: bytes)
        var now: Int64 = 1_790_000_000_000
        let topics = ["plant/s/a/u/T1", "plant/s/a/u/T2", "market/brent", "plant/s/a/u", "plant/x/y/z/W"]
        let values = ["0", "-1", "1e308", "-1e308", "5e-324", "NaN", "\"x\"", "120.5", "99.9", "1e-300", "null", "17"]
        let times = ["0", "-1", "9223372036854775807", "-9223372036854775808", "9007199254740991", "253402300799999",
                     "\"9999-12-31T23:59:59Z\"", "\"0001-01-01T00:00:00Z\"", "1.5", "1e300"]
        var steps = 0
        while !program.atEnd, steps < 128 {
            steps += 1
            let topic = topics[Int(program.byte()) % topics.count]
            let value = values[Int(program.byte()) % values.count]
            let ts: String
            switch program.byte() % 4 {
            case 0: ts = times[Int(program.byte()) % times.count]
            case 1: ts = "\(now &+ Int64(Int8(bitPattern: program.byte())) * 1000)"
            case 2: ts = "\(Int64(bitPattern: program.uint64()))"
            default: ts = ""
            }
            let quality = ["good", "uncertain", "bad", ""][Int(program.byte()) % 4]
            var json = "{"
            if !ts.isEmpty { json += "\"ts\": \(ts)," }
            if !quality.isEmpty { json += "\"q\": \"\(quality)\"," }
            json += topic == "plant/s/a/u" ? "\"values\": {\"T1\": \(value), \"T3\": \(value)}}" : "\"v\": \(value)}"
            var t = topic
            t.withUTF8 { topicBytes in
                json.withUTF8 { pipeline.handle(topic: UnsafeRawBufferPointer(topicBytes), payload: UnsafeRawBufferPointer($0), receivedAt: now) }
            }
            switch program.byte() % 16 {
            case 0: now = now &- Int64(program.byte()) * 60_000  // the clock steps back
            case 1: now = now &+ 86_400_000 * Int64(program.byte() % 3)  // a day passes
            case 2: pipeline.tick(now: now)
            case 3: _ = pipeline.evictIdle(now: now)
            default: now = now &+ Int64(program.byte()) * 10
            }
        }
        _ = pipeline.snapshots()
    }
}
