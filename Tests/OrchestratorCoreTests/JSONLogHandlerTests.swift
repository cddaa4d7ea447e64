import Foundation
import Logging
import Synchronization
import Testing

@testable import OrchestratorCore

/// `--log-format json`: each log call is one line holding one JSON object that any JSON reader
/// parses back, whatever the message and the metadata hold.
@Suite struct JSONLogHandlerTests {
    final class Lines: Sendable {
        let lines = Mutex<[[UInt8]]>([])
        var all: [[UInt8]] { self.lines.withLock { $0 } }
    }

    func logger(_ lines: Lines, level: Logger.Level = .info) -> Logger {
        var handler = JSONLogHandler(label: "dang.test") { line in lines.lines.withLock { $0.append(line) } }
        handler.logLevel = level
        handler.metadata["instance"] = "gw-1"
        return Logger(label: "dang.test", factory: { _ in handler })
    }

    func object(_ line: [UInt8]) throws -> [String: Any] {
        #expect(line.last == UInt8(ascii: "\n"))
        #expect(line.dropLast().allSatisfy { $0 != UInt8(ascii: "\n") }, "one line per call")
        return try #require(try JSONSerialization.jsonObject(with: Data(line)) as? [String: Any])
    }

    @Test func `a line has time, level, label, message and the metadata fields`() throws {
        let lines = Lines()
        let logger = self.logger(lines)
        logger.warning("message rejected", metadata: ["reason": "malformed_json", "count": "\(3)", "tags": ["a", "b"], "unit": ["name": "cdu1"]])
        logger.debug("not at info")
        #expect(lines.all.count == 1)
        let object = try self.object(lines.all[0])
        #expect(object["level"] as? String == "warning")
        #expect(object["label"] as? String == "dang.test")
        #expect(object["message"] as? String == "message rejected")
        #expect(object["reason"] as? String == "malformed_json" && object["count"] as? String == "3")
        #expect(object["instance"] as? String == "gw-1")
        #expect(object["tags"] as? [String] == ["a", "b"])
        #expect((object["unit"] as? [String: Any])?["name"] as? String == "cdu1")
        let time = try #require(object["time"] as? String)
        #expect(time.count == 24 && time.hasSuffix("Z") && time.contains("T"), "\(time)")
        let parsed = try #require(try? Date(time, strategy: .iso8601.year().month().day().time(includingFractionalSeconds: true)))
        #expect(abs(parsed.timeIntervalSinceNow) < 60)
    }

    @Test func `hostile strings stay data on their own line, and a field cannot replace the fixed four`() throws {
        let lines = Lines()
        let hostile = "r1/\"x\"\n{\"level\":\"critical\"}\u{0}\u{1b}[31m\\é✓"
        self.logger(lines).error("tag \(hostile)", metadata: ["mqtt.topic": "\(hostile)", "level": "forged", "message": "forged"])
        #expect(lines.all.count == 1)
        let object = try self.object(lines.all[0])
        #expect(object["message"] as? String == "tag \(hostile)")
        #expect(object["mqtt.topic"] as? String == hostile)
        #expect(object["level"] as? String == "error")
        #expect(object["metadata.level"] as? String == "forged" && object["metadata.message"] as? String == "forged")
    }
}
