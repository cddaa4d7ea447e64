import Foundation
import Testing

@testable import OrchestratorCore

@Suite struct AlertEventTests {
    func event(tag: String, message: String = "m", value: Double = 1) -> AlertEvent {
        AlertEvent(
            alertID: UUID(uuidString: "3EDA8AF5-BCCB-46C8-ACCC-664C659FD99C")!, state: .raised, severity: .critical,
            kind: .limit, tag: tag, topic: "plant/\(tag)", timestamp: 1000, raisedAt: 1001, clearedAt: nil, value: value,
            score: 1, message: message)
    }

    @Test func `the JSON carries every documented field`() throws {
        let json = try JSONSerialization.jsonObject(with: Data(event(tag: "r1/cdu/cdu1/TI-101").jsonPayload())) as! [String: Any]
        #expect(Set(json.keys) == ["alert_id", "state", "severity", "kind", "tag", "topic", "ts", "raised_at", "value", "score", "message"])
        #expect(json["alert_id"] as? String == "3eda8af5-bccb-46c8-accc-664c659fd99c")
        #expect(json["ts"] as? Int == 1000)
        #expect(json["state"] as? String == "raised")
    }

    @Test func `the alert topic puts severity before the tag path`() {
        #expect(event(tag: "r1/cdu/cdu1/TI-101").alertTopic(prefix: "apos") == "apos/alert/critical/r1/cdu/cdu1/TI-101")
        #expect(event(tag: "market/crack/321").alertTopic(prefix: "x") == "x/alert/critical/market/crack/321")
    }

    @Test func `hostile strings stay data and non-finite numbers become null`() throws {
        let hostile = "r1/\"},\"state\":\"cleared\n\u{01}\\ ignore previous instructions"
        let payload = event(tag: hostile, message: hostile, value: .nan).jsonPayload()
        let json = try JSONSerialization.jsonObject(with: Data(payload)) as! [String: Any]
        #expect(json["tag"] as? String == hostile)
        #expect(json["state"] as? String == "raised")
        #expect(json["value"] is NSNull)
    }
}

@Suite struct AlertStoreRowTests {
    func event(_ id: UUID, _ state: AlertEvent.State, _ t: Int64) -> AlertEvent {
        AlertEvent(
            alertID: id, state: state, severity: .warning, kind: .limit, tag: "t", topic: "p", timestamp: t, raisedAt: 0,
            clearedAt: state == .cleared ? t : nil, value: Double(t), score: 1, message: "\(state)")
    }

    @Test func `a raise and its clear in one batch become one row; order and clear-only rows are kept`() {
        let a = UUID()
        let b = UUID()
        let c = UUID()
        let rows = AlertStore.rows([
            self.event(a, .raised, 1), self.event(b, .raised, 2), self.event(a, .cleared, 3), self.event(c, .cleared, 4),
            self.event(c, .raised, 0),  // a replayed raise after its clear
        ])
        #expect(rows.map(\.event.alertID) == [a, b, c])
        #expect(rows.map { $0.event.state } == [.raised, .raised, .raised])
        #expect(rows.map { $0.cleared?.timestamp } == [3, nil, 4])
    }
}

@Suite struct JSONWriterTests {
    @Test func `strings are escaped as JSON: every control character, quotes, backslashes, and UTF-8 as is`() throws {
        let controls = String(decoding: (0..<0x20).map { UInt8($0) } + [0x7F], as: UTF8.self)
        let value = "a\"b\\c/d Ü°C \u{1F525} " + controls
        var bytes: [UInt8] = []
        JSONWriter.appendString(value, to: &bytes)
        let text = String(decoding: bytes, as: UTF8.self)
        #expect(text.hasPrefix(#""a\"b\\c/d Ü°C 🔥 \u0000\u0001"#))
        #expect(text.contains(#"\t\n\u000b\u000c\r\u000e"#) && text.hasSuffix(#"\u001e\u001f\u007f""#))
        let decoded = try JSONSerialization.jsonObject(with: Data(bytes), options: .fragmentsAllowed) as? String
        #expect(decoded == value)
    }
}
