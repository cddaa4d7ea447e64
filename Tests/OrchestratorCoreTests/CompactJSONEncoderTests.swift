import Foundation
import Testing

@testable import OrchestratorCore

/// The decision path's JSON encoder: what it writes parses back to what Foundation's encoder
/// writes, for nested objects, arrays, optionals, hostile strings and non-finite numbers.
@Suite struct CompactJSONEncoderTests {
    struct Inner: Encodable {
        let name: String
        let values: [Double?]
        let times: [Int64]
        let flag: Bool?
    }

    struct Outer: Encodable {
        let id: Int
        let inner: [Inner]
        let map: [String: Inner]
        let empty: [Int]
        let nested: [[String]]
        let nothing: String?
        let explicitNull: String?

        enum CodingKeys: String, CodingKey { case id, inner, map, empty, nested, nothing, explicitNull = "explicit_null" }

        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(self.id, forKey: .id)
            try c.encode(self.inner, forKey: .inner)
            try c.encode(self.map, forKey: .map)
            try c.encode(self.empty, forKey: .empty)
            try c.encode(self.nested, forKey: .nested)
            try c.encodeIfPresent(self.nothing, forKey: .nothing)
            try c.encode(self.explicitNull, forKey: .explicitNull)
        }
    }

    static func parsed(_ bytes: [UInt8]) throws -> NSObject {
        try #require(try JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed]) as? NSObject)
    }

    @Test func `nested values parse back to what Foundation's encoder writes`() throws {
        let hostile = "r1/\"quoted\"\\back\nline\u{0}nul\u{1F}é🔥"
        let inner = Inner(name: hostile, values: [1.5, nil, -0.25, 1e-7, 123_456_789.125], times: [0, -1, .max, .min], flag: nil)
        let value = Outer(
            id: 42, inner: [inner, Inner(name: "", values: [], times: [], flag: true)], map: [hostile: inner, "b": inner], empty: [],
            nested: [[], ["a"], ["b", "c"]], nothing: nil, explicitNull: nil)
        let ours = try CompactJSONEncoder().encode(value)
        let foundation = try JSONEncoder().encode(value)
        #expect(try Self.parsed(ours) == Self.parsed(Array(foundation)))
        #expect(String(decoding: ours, as: UTF8.self).contains(#""explicit_null":null"#))
        #expect(!String(decoding: ours, as: UTF8.self).contains("nothing"))
    }

    @Test func `non-finite numbers are null, and top-level values need no container`() throws {
        #expect(try CompactJSONEncoder().encode([Double.nan, .infinity, -.infinity, 2]) == Array("[null,null,null,2.0]".utf8))
        #expect(try CompactJSONEncoder().encode("a\"b") == Array(#""a\"b""#.utf8))
        #expect(try CompactJSONEncoder().encode(7 as Int64) == Array("7".utf8))
        #expect(try CompactJSONEncoder().encode([[Int]]()) == Array("[]".utf8))
    }

    @Test func `an invocation's params keep the order of the tags and parse as before`() throws {
        var map = TopicMap()
        map.tags["u/T2"] = TagInfo(unit: "degC", limits: .init(lo: 1, hi: 9, deadband: 0))
        let windows = [
            TagWindow(tag: "u/T2", times: [1000, 2000, 3000], values: [1, .nan, 3]),
            TagWindow(tag: "u/T1", times: [1000], values: [5]),
        ]
        let trigger = TriggerEvent(rule: "r", kind: .equipment, module: .forecasting, source: .rules, scope: "u", time: 0)
        let decision = Decision(
            id: UUID(), trigger: trigger, module: .forecasting, action: .invoke, steps: [], confidence: 1, priority: 1, scopeKey: "u",
            usableTags: ["u/T2", "u/T1"])
        let settings = try #require(OrchestratorConfig.defaults(topicMap: map).modules[.forecasting])
        let text = InvocationParams(decision: decision, settings: settings, scopeKey: "u", windows: windows, topicMap: map).json()
        #expect(text.hasPrefix(#"{"scope":"u","data":"#))
        #expect(text.range(of: "\"u/T2\"")!.lowerBound < text.range(of: "\"u/T1\"")!.lowerBound)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        let tags = try #require(object["tags"] as? [String: [String: Any]])
        #expect(tags["u/T2"]?["t"] as? [Int] == [1000, 2000, 3000])
        #expect((tags["u/T2"]?["v"] as? [Any])?.count == 3)
        #expect((tags["u/T2"]?["v"] as? [Any])?[1] is NSNull)
        #expect((tags["u/T2"]?["limits"] as? [String: Double]) == ["lo": 1, "hi": 9])
        #expect(tags["u/T1"]?["limits"] == nil)
        #expect(object["horizon"] as? Int == settings.horizon)
        #expect(object["interval_ms"] as? Int == 1000)
    }
}

/// A person's extra parameters reach the module as they were written.
@Suite struct ManualRequestTests {
    @Test func `integers stay integers, exactly, and fractions stay fractions`() throws {
        let payload = #"{"scope":"r1/cdu","by":"op","params":{"n":12,"big":9007199254740993,"x":1.5,"neg":-3,"list":[1,2.25]}}"#
        let request = try #require(ManualRequest.parse(Array(payload.utf8)))
        let params = try #require(request.params)
        #expect(params.contains(#""n":12"#) && !params.contains("12.0"))
        #expect(params.contains("9007199254740993"))
        #expect(params.contains(#""x":1.5"#) && params.contains(#""neg":-3"#) && params.contains("[1,2.25]"))
        let value = try #require(JSONValue(parsing: Array(params.utf8)))
        let encoded = String(decoding: try CompactJSONEncoder().encode(value), as: UTF8.self)
        #expect(encoded.contains("9007199254740993") && encoded.contains(#""n":12"#))
    }

    @Test func `a command's answer without an invocation id gets one, its numbers untouched`() throws {
        let id = UUID()
        let answer = ModuleResult.attachingID(Array(#"{"status":"ok","output":{"rows":3,"id":9007199254740993}}"#.utf8), invocation: id)
        let text = String(decoding: answer, as: UTF8.self)
        #expect(text.contains(#""rows":3"#) && text.contains("9007199254740993"))
        #expect(text.contains(id.uuidString.lowercased()))
    }
}
