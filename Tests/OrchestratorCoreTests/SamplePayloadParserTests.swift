#if canImport(Glibc)
import Glibc
#endif
import Testing

@testable import DangTools
@testable import OrchestratorCore

@Suite struct SamplePayloadParserTests {
    func parse(_ text: String) -> Result<SamplePayload, PayloadRejection> {
        var copy = text
        return copy.withUTF8 { SamplePayloadParser.parse(UnsafeRawBufferPointer($0)) }
    }

    @Test func `a JSON sample with epoch milliseconds, value and quality`() {
        #expect(parse(#"{"ts": 1700000000123, "v": 351.25, "q": "uncertain"}"#) == .success(.single(timestamp: 1_700_000_000_123, value: 351.25, quality: .uncertain)))
    }

    @Test func `quality defaults to good and the timestamp to receipt time`() {
        #expect(parse(#"{"v":-1.5e3}"#) == .success(.single(timestamp: nil, value: -1500, quality: .good)))
    }

    @Test func `an RFC 3339 timestamp is converted to epoch milliseconds`() {
        #expect(parse(#"{"ts":"2023-11-14T22:13:20.123Z","v":1}"#) == .success(.single(timestamp: 1_700_000_000_123, value: 1, quality: .good)))
        #expect(parse(#"{"ts":"2023-11-14T23:13:20+01:00","v":1}"#) == .success(.single(timestamp: 1_700_000_000_000, value: 1, quality: .good)))
    }

    @Test(arguments: ["42", " 42\n", "4.2e1", "42.0"])
    func `a bare number is a good sample at receipt time`(text: String) {
        #expect(parse(text) == .success(.single(timestamp: nil, value: 42, quality: .good)))
    }

    @Test func `numbers are the same doubles strtod reads, on the fast path and off it`() {
        var random = SplitMix64(seed: 11)
        var texts = ["0", "-0", "1e22", "1e23", "9007199254740993", "123456789012345678", "0.1", "-2.5E-3", "4.35e+2", "1E-22", "7e-23"]
        for _ in 0..<20_000 {
            let digits = 1 + Int(random.next() % 18)
            var mantissa = String(1 + random.next() % 9)
            for _ in 1..<digits { mantissa += String(random.next() % 10) }
            let point = Int(random.next() % UInt64(digits + 1))
            var text = point == 0 ? mantissa : point == digits ? mantissa : "\(mantissa.prefix(point)).\(mantissa.dropFirst(point))"
            if random.next() % 3 == 0 { text += "e\(Int(random.next() % 61) - 30)" }
            if random.next() % 2 == 0 { text = "-" + text }
            texts.append(text)
        }
        var fast = 0
        for text in texts {
            let expected = strtod(text, nil)
            guard case .success(.single(_, let value, _)) = parse(text) else {
                Issue.record("\(text) refused")
                continue
            }
            #expect(value.bitPattern == expected.bitPattern, "\(text): \(value) against strtod's \(expected)")
            var copy = text
            if copy.withUTF8({ DecimalText.fastPath(UnsafeRawBufferPointer($0), 0, $0.count) }) != nil { fast += 1 }
        }
        #expect(fast > texts.count / 3)  // the fast path is taken for most sensor-shaped numbers
    }

    @Test func `unknown keys are skipped, including nested ones`() {
        #expect(parse(#"{"source":{"a":[1,2,{"b":null}]},"v":3,"unit":"degC","ok":true}"#) == .success(.single(timestamp: nil, value: 3, quality: .good)))
    }

    @Test func `a batch carries several tags, with escaped names decoded`() {
        let result = parse(#"{"ts": 1000, "values": {"TI-101": 350.5, "FI\u002d101": 600}}"#)
        #expect(result == .success(.batch(timestamp: 1000, values: [("TI-101", 350.5), ("FI-101", 600)], quality: .good)))
        #expect(parse(#"{"q":"bad","values":{"A":1}}"#) == .success(.batch(timestamp: nil, values: [("A", 1)], quality: .bad)))
        // A NaN in a batch stays with its tag; the others are unaffected.
        if case .success(.batch(_, let values, _)) = parse(#"{"values":{"A":1,"B":NaN}}"#) {
            #expect(values.count == 2 && values[0].value == 1 && values[1].value.isNaN)
        } else {
            Issue.record("a batch with a NaN was refused whole")
        }
    }

    @Test(arguments: [
        ("", PayloadRejection.empty),
        ("   ", .empty),
        ("abc", .malformedNumber),
        ("12abc", .malformedNumber),
        ("0x10", .malformedNumber),
        ("NaN", .nonFinite),
        ("inf", .nonFinite),
        ("-inf", .nonFinite),
        ("-Infinity", .nonFinite),
        ("-", .malformedNumber),
        ("1e", .malformedNumber),
        ("infinite", .malformedNumber),
        (#"{"v": -Infinity}"#, .nonFinite),
        (#"{"x": NaN, "v": 1}"#, .malformedJSON),
        (#"{"v": 1, "ts": -99999999999999999}"#, .badTimestamp),
        (#"{"v": 1, "ts": "0000-01-01T00:00:00Z"}"#, .badTimestamp),
        (#"{"v": NaN}"#, .nonFinite),
        (#"{"v": 1e999}"#, .nonFinite),
        (#"{"v": "12"}"#, .malformedJSON),
        (#"{"v": 1"#, .malformedJSON),
        (#"{"v": 1} trailing"#, .malformedJSON),
        (#"{"v": 01}"#, .malformedJSON),
        (#"{"v": 1,}"#, .malformedJSON),
        (#"{"ts": 1}"#, .missingValue),
        ("{}", .missingValue),
        (#"{"v": 1, "q": "excellent"}"#, .badQuality),
        (#"{"v": 1, "ts": "yesterday"}"#, .badTimestamp),
        (#"{"v": 1, "ts": 1.5}"#, .badTimestamp),
        (#"{"v": 1, "ts": "2023-02-30T00:00:00Z"}"#, .badTimestamp),
        (#"{"v": 1, "x": "unterminated}"#, .malformedJSON),
        (#"{"v": 1, "x": "bad \q escape"}"#, .malformedJSON),
    ])
    func `malformed payloads are refused with a reason`(text: String, reason: PayloadRejection) {
        #expect(parse(text) == .failure(reason))
    }

    @Test func `deep nesting is refused instead of recursing without bound`() {
        let deep = #"{"x":"# + String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000) + #","v":1}"#
        #expect(parse(deep) == .failure(.tooDeep))
    }

    @Test func `raw control characters and invalid UTF-8 in batch names are refused`() {
        #expect(parse("{\"values\":{\"A\u{01}\":1}}") == .failure(.malformedJSON))
        let bytes: [UInt8] = Array(#"{"values":{""#.utf8) + [0xFF, 0xFE] + Array(#"":1}}"#.utf8)
        let result = bytes.withUnsafeBytes { SamplePayloadParser.parse($0) }
        #expect(result == .failure(.malformedJSON))
    }
}

@Suite struct RFC3339Tests {
    @Test(arguments: [
        ("1970-01-01T00:00:00Z", Int64(0)),
        ("2000-02-29T12:00:00.5Z", Int64(951_825_600_500)),
        ("2026-11-26 19:40:00Z", Int64(1_795_722_000_000)),
        ("2026-11-26T20:40:00.123456+01:00", Int64(1_795_722_000_123)),
    ])
    func `valid timestamps convert exactly`(text: String, expected: Int64) {
        #expect(RFC3339.epochMilliseconds(text) == expected)
    }

    @Test(arguments: ["2026-13-01T00:00:00Z", "2026-11-26T24:00:00Z", "2026-11-26T19:40:00", "2026-11-26", "2026-11-26T19:40:00.Z"])
    func `invalid timestamps are refused`(text: String) {
        #expect(RFC3339.epochMilliseconds(text) == nil)
    }
}
