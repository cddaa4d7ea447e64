#if canImport(Glibc)
import Glibc
#endif

/// Quality of a sample: `q` (docs/mqtt-contract.md, "Inputs").
package enum SampleQuality: UInt8, Sendable {
    case good
    case uncertain
    case bad

    package var name: String {
        switch self {
        case .good: "good"
        case .uncertain: "uncertain"
        case .bad: "bad"
        }
    }
}

/// A payload decoded from one MQTT message (docs/mqtt-contract.md, "Inputs").
package enum SamplePayload: Equatable, Sendable {
    /// `{"ts": …, "v": …, "q": …}` or a bare number. `timestamp` is epoch ms, `nil` = receipt time.
    case single(timestamp: Int64?, value: Double, quality: SampleQuality)
    /// `{"ts": …, "values": {"TAG": number, …}}` on a unit's topic.
    case batch(timestamp: Int64?, values: [(name: String, value: Double)], quality: SampleQuality)

    package static func == (lhs: SamplePayload, rhs: SamplePayload) -> Bool {
        switch (lhs, rhs) {
        case (.single(let a, let b, let c), .single(let x, let y, let z)):
            return a == x && b == y && c == z
        case (.batch(let a, let b, let c), .batch(let x, let y, let z)):
            return a == x && c == z && b.count == y.count && zip(b, y).allSatisfy { $0.name == $1.name && $0.value == $1.value }
        default:
            return false
        }
    }
}

/// Why a payload was refused; each reason has its own counter.
package enum PayloadRejection: String, Sendable, CaseIterable, Error {
    case empty
    case tooLarge = "too_large"
    case malformedNumber = "malformed_number"
    case malformedJSON = "malformed_json"
    case nonFinite = "non_finite"
    case missingValue = "missing_value"
    case badTimestamp = "bad_timestamp"
    case badQuality = "bad_quality"
    case tooDeep = "too_deep"
    /// Sparkplug: a topic not of the `spBv1.0/{group}/{type}/{edge}[/{device}]` shape.
    case sparkplugTopic = "sparkplug_topic"
    /// Sparkplug: not a Sparkplug B protobuf payload.
    case sparkplugPayload = "sparkplug_payload"
    /// Sparkplug: more edge nodes than the orchestrator keeps state for.
    case sparkplugNodeLimit = "sparkplug_node_limit"
    /// Sparkplug: a sequence number outside 0…255 (a protocol error; the node is asked to rebirth).
    case sparkplugSequence = "sparkplug_sequence"
    /// Sparkplug: data of a node or device that was not born in this session (a rebirth is asked).
    case sparkplugUnborn = "sparkplug_unborn"
    /// Sparkplug: more devices on one edge node than the orchestrator keeps state for.
    case sparkplugDeviceLimit = "sparkplug_device_limit"
    /// A sample time more than `ingest.max_future_skew` ahead of the wall clock, or outside what
    /// PostgreSQL can store: refused, and a data-quality event of its tag; it never moves the tag's clock.
    case futureTimestamp = "future_timestamp"
    /// A tag identifier longer than `ingest.max_tag_bytes`.
    case tagTooLong = "tag_too_long"
}

/// Decodes sample payloads straight from the message bytes.
///
/// Hand-written on purpose: it runs for every sample, and Foundation's JSON decoders allocate a
/// tree per message. It accepts exactly the shapes of docs/mqtt-contract.md, "Inputs" (strict
/// JSON; unknown keys are skipped, nesting is bounded) and refuses everything else with a
/// ``PayloadRejection``.
package enum SamplePayloadParser {
    /// Deepest nesting accepted inside skipped values.
    static let maxDepth = 16

    package static func parse(_ bytes: UnsafeRawBufferPointer) -> Result<SamplePayload, PayloadRejection> {
        var cursor = Cursor(bytes: bytes)
        cursor.skipWhitespace()
        guard let first = cursor.peek else { return .failure(.empty) }
        if first == UInt8(ascii: "{") {
            do {
                let payload = try cursor.parseSampleObject()
                cursor.skipWhitespace()
                guard cursor.atEnd else { return .failure(.malformedJSON) }
                return .success(payload)
            } catch {
                return .failure(error)
            }
        }
        // A bare number as UTF-8 text.
        do {
            let value = try cursor.parseNumber(rejectionIfMalformed: .malformedNumber, allowWords: true)
            cursor.skipWhitespace()
            guard cursor.atEnd else { return .failure(.malformedNumber) }
            guard value.isFinite else { return .failure(.nonFinite) }
            return .success(.single(timestamp: nil, value: value, quality: .good))
        } catch {
            return .failure(error)
        }
    }
}

private struct Cursor {
    let bytes: UnsafeRawBufferPointer
    var index = 0

    init(bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
    }

    var atEnd: Bool { self.index >= self.bytes.count }
    var peek: UInt8? { self.index < self.bytes.count ? self.bytes[self.index] : nil }

    mutating func skipWhitespace() {
        while let byte = self.peek, byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 {
            self.index += 1
        }
    }

    mutating func expect(_ byte: UInt8) throws(PayloadRejection) {
        self.skipWhitespace()
        guard self.peek == byte else { throw .malformedJSON }
        self.index += 1
    }

    /// Parses `{"ts": …, "v": …, "q": …}` or `{"ts": …, "values": {…}}`.
    mutating func parseSampleObject() throws(PayloadRejection) -> SamplePayload {
        try self.expect(UInt8(ascii: "{"))
        var timestamp: Int64? = nil
        var value: Double? = nil
        var quality = SampleQuality.good
        var batch: [(name: String, value: Double)]? = nil
        var nonFinite = false

        self.skipWhitespace()
        if self.peek == UInt8(ascii: "}") {
            self.index += 1
            throw .missingValue
        }
        while true {
            self.skipWhitespace()
            let key = try self.parseKey()
            try self.expect(UInt8(ascii: ":"))
            self.skipWhitespace()
            switch key {
            case .ts:
                timestamp = try self.parseTimestamp()
            case .v:
                let parsed = try self.parseNumber(rejectionIfMalformed: .malformedJSON, allowWords: true)
                if !parsed.isFinite { nonFinite = true }
                value = parsed
            case .q:
                quality = try self.parseQuality()
            case .values:
                batch = try self.parseValues(nonFinite: &nonFinite)
            case .other:
                try self.skipValue(depth: 1)
            }
            self.skipWhitespace()
            guard let byte = self.peek else { throw .malformedJSON }
            self.index += 1
            if byte == UInt8(ascii: "}") { break }
            guard byte == UInt8(ascii: ",") else { throw .malformedJSON }
        }
        if let batch {
            // A NaN in a batch is that tag's problem, not the other tags': the values are kept and
            // the pipeline refuses the non-finite ones one by one.
            guard value == nil else { throw .malformedJSON }
            return .batch(timestamp: timestamp, values: batch, quality: quality)
        }
        if nonFinite { throw .nonFinite }
        guard let value else { throw .missingValue }
        return .single(timestamp: timestamp, value: value, quality: quality)
    }

    enum Key {
        case ts, v, q, values, other
    }

    /// Reads a key string; only escape-free keys can be one of ours.
    mutating func parseKey() throws(PayloadRejection) -> Key {
        guard self.peek == UInt8(ascii: "\"") else { throw .malformedJSON }
        let start = self.index + 1
        var escaped = false
        try self.skipString()
        let end = self.index - 1
        for i in start..<end where self.bytes[i] == UInt8(ascii: "\\") { escaped = true }
        if escaped { return .other }
        let length = end - start
        func at(_ offset: Int) -> UInt8 { self.bytes[start + offset] }
        switch length {
        case 1 where at(0) == UInt8(ascii: "v"): return .v
        case 1 where at(0) == UInt8(ascii: "q"): return .q
        case 2 where at(0) == UInt8(ascii: "t") && at(1) == UInt8(ascii: "s"): return .ts
        case 6:
            let word: [UInt8] = Array("values".utf8)
            for offset in 0..<6 where at(offset) != word[offset] { return .other }
            return .values
        default: return .other
        }
    }

    /// Skips a JSON string starting at `"`, validating escapes and refusing raw control characters.
    mutating func skipString() throws(PayloadRejection) {
        guard self.peek == UInt8(ascii: "\"") else { throw .malformedJSON }
        self.index += 1
        while let byte = self.peek {
            self.index += 1
            switch byte {
            case UInt8(ascii: "\""):
                return
            case UInt8(ascii: "\\"):
                guard let escape = self.peek else { throw .malformedJSON }
                self.index += 1
                if escape == UInt8(ascii: "u") {
                    for _ in 0..<4 {
                        guard let hex = self.peek, Self.hexValue(hex) != nil else { throw .malformedJSON }
                        self.index += 1
                    }
                } else if !"\"\\/bfnrt".utf8.contains(escape) {
                    throw .malformedJSON
                }
            case 0..<0x20:
                throw .malformedJSON
            default:
                continue
            }
        }
        throw .malformedJSON
    }

    /// Decodes a JSON string (used for batch tag names, which become identifiers).
    mutating func parseString() throws(PayloadRejection) -> String {
        let start = self.index + 1
        try self.skipString()
        let raw = UnsafeRawBufferPointer(rebasing: self.bytes[start..<(self.index - 1)])
        guard raw.contains(UInt8(ascii: "\\")) else {
            guard let text = String(validating: raw, as: UTF8.self) else { throw .malformedJSON }
            return text
        }
        var scalars = String.UnicodeScalarView()
        var utf8: [UInt8] = []
        var i = 0
        func flush() throws(PayloadRejection) {
            guard !utf8.isEmpty else { return }
            guard let text = String(validating: utf8, as: UTF8.self) else { throw .malformedJSON }
            scalars.append(contentsOf: text.unicodeScalars)
            utf8.removeAll()
        }
        while i < raw.count {
            let byte = raw[i]
            if byte != UInt8(ascii: "\\") {
                utf8.append(byte)
                i += 1
                continue
            }
            try flush()
            let escape = raw[i + 1]
            i += 2
            switch escape {
            case UInt8(ascii: "n"): scalars.append("\n")
            case UInt8(ascii: "t"): scalars.append("\t")
            case UInt8(ascii: "r"): scalars.append("\r")
            case UInt8(ascii: "b"): scalars.append("\u{08}")
            case UInt8(ascii: "f"): scalars.append("\u{0C}")
            case UInt8(ascii: "u"):
                var code: UInt32 = 0
                for k in 0..<4 { code = code << 4 | UInt32(Self.hexValue(raw[i + k])!) }
                i += 4
                // A surrogate pair arrives as two escapes.
                if (0xD800...0xDBFF).contains(code), i + 6 <= raw.count, raw[i] == UInt8(ascii: "\\"),
                    raw[i + 1] == UInt8(ascii: "u")
                {
                    var low: UInt32 = 0
                    for k in 0..<4 {
                        guard let digit = Self.hexValue(raw[i + 2 + k]) else { throw .malformedJSON }
                        low = low << 4 | UInt32(digit)
                    }
                    guard (0xDC00...0xDFFF).contains(low) else { throw .malformedJSON }
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    i += 6
                }
                guard let scalar = Unicode.Scalar(code) else { throw .malformedJSON }
                scalars.append(scalar)
            default:
                scalars.append(Unicode.Scalar(escape))
            }
        }
        try flush()
        return String(scalars)
    }

    static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// A JSON number (or, for bare payloads, `nan`/`inf` words, reported as non-finite).
    /// With `allowWords`, `nan`, `inf`, `-inf`, `infinity` (any case) are read as non-finite values:
    /// not JSON, but plant bridges send them for a sample's value.
    mutating func parseNumber(rejectionIfMalformed: PayloadRejection, allowWords: Bool = false) throws(PayloadRejection) -> Double {
        let start = self.index
        if allowWords {
            var probe = self.index
            if probe < self.bytes.count && self.bytes[probe] == UInt8(ascii: "-") { probe += 1 }
            if probe < self.bytes.count && self.bytes[probe].isASCIILetter && self.bytes[probe] != UInt8(ascii: "-") {
                while probe < self.bytes.count, self.bytes[probe].isASCIILetter { probe += 1 }
                let word = String(decoding: UnsafeRawBufferPointer(rebasing: self.bytes[start..<probe]), as: UTF8.self)
                    .lowercased()
                guard ["nan", "-nan", "inf", "-inf", "infinity", "-infinity"].contains(word) else { throw rejectionIfMalformed }
                self.index = probe
                return .nan
            }
        }
        while let byte = self.peek,
            (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || byte == UInt8(ascii: "-")
                || byte == UInt8(ascii: "+") || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "e")
                || byte == UInt8(ascii: "E")
        {
            self.index += 1
        }
        let length = self.index - start
        guard length > 0 else { throw rejectionIfMalformed }
        guard length <= 64, Self.isJSONNumber(self.bytes, start, self.index) else { throw rejectionIfMalformed }
        if let value = DecimalText.fastPath(self.bytes, start, self.index) { return value }
        let value = withUnsafeTemporaryAllocation(of: CChar.self, capacity: length + 1) { buffer -> Double? in
            for i in 0..<length { buffer[i] = CChar(bitPattern: self.bytes[start + i]) }
            buffer[length] = 0
            var end: UnsafeMutablePointer<CChar>? = nil
            let parsed = strtod(buffer.baseAddress!, &end)
            guard let end, end - buffer.baseAddress! == length else { return nil }
            return parsed
        }
        guard let value else { throw rejectionIfMalformed }
        return value
    }

    /// JSON's number grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    static func isJSONNumber(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> Bool {
        var i = start
        func digit(_ k: Int) -> Bool { k < end && (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[k]) }
        if i < end && bytes[i] == UInt8(ascii: "-") { i += 1 }
        guard digit(i) else { return false }
        if bytes[i] == UInt8(ascii: "0") { i += 1 } else { while digit(i) { i += 1 } }
        if i < end && bytes[i] == UInt8(ascii: ".") {
            i += 1
            guard digit(i) else { return false }
            while digit(i) { i += 1 }
        }
        if i < end && (bytes[i] == UInt8(ascii: "e") || bytes[i] == UInt8(ascii: "E")) {
            i += 1
            if i < end && (bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-")) { i += 1 }
            guard digit(i) else { return false }
            while digit(i) { i += 1 }
        }
        return i == end
    }

    /// `ts`: epoch milliseconds (an integer) or an RFC 3339 string.
    mutating func parseTimestamp() throws(PayloadRejection) -> Int64 {
        if self.peek == UInt8(ascii: "\"") {
            let start = self.index + 1
            try self.skipString()
            let raw = UnsafeRawBufferPointer(rebasing: self.bytes[start..<(self.index - 1)])
            guard let ms = RFC3339.epochMilliseconds(raw), RFC3339.storableRange.contains(Double(ms)) else { throw .badTimestamp }
            return ms
        }
        let value = try self.parseNumber(rejectionIfMalformed: .badTimestamp)
        guard value.isFinite, value == value.rounded(), RFC3339.storableRange.contains(value) else { throw .badTimestamp }
        return Int64(value)
    }

    mutating func parseQuality() throws(PayloadRejection) -> SampleQuality {
        guard self.peek == UInt8(ascii: "\"") else { throw .badQuality }
        let start = self.index + 1
        try self.skipString()
        let raw = UnsafeRawBufferPointer(rebasing: self.bytes[start..<(self.index - 1)])
        // By length, then the bytes (the generic `elementsEqual` against a String's UTF-8 view
        // showed in the ingest profile).
        func spells(_ word: StaticString) -> Bool {
            raw.count == word.utf8CodeUnitCount && memcmp(raw.baseAddress!, word.utf8Start, raw.count) == 0
        }
        if spells("good") { return .good }
        if spells("uncertain") { return .uncertain }
        if spells("bad") { return .bad }
        throw .badQuality
    }

    mutating func parseValues(nonFinite: inout Bool) throws(PayloadRejection) -> [(name: String, value: Double)] {
        try self.expect(UInt8(ascii: "{"))
        var values: [(name: String, value: Double)] = []
        self.skipWhitespace()
        if self.peek == UInt8(ascii: "}") {
            self.index += 1
            return values
        }
        while true {
            self.skipWhitespace()
            let name = try self.parseString()
            try self.expect(UInt8(ascii: ":"))
            self.skipWhitespace()
            let value = try self.parseNumber(rejectionIfMalformed: .malformedJSON, allowWords: true)
            if !value.isFinite { nonFinite = true }
            values.append((name, value))
            self.skipWhitespace()
            guard let byte = self.peek else { throw .malformedJSON }
            self.index += 1
            if byte == UInt8(ascii: "}") { return values }
            guard byte == UInt8(ascii: ",") else { throw .malformedJSON }
        }
    }

    /// Skips any JSON value, refusing nesting deeper than ``SamplePayloadParser/maxDepth``.
    mutating func skipValue(depth: Int) throws(PayloadRejection) {
        guard depth <= SamplePayloadParser.maxDepth else { throw .tooDeep }
        self.skipWhitespace()
        guard let byte = self.peek else { throw .malformedJSON }
        switch byte {
        case UInt8(ascii: "\""):
            try self.skipString()
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            let close = byte == UInt8(ascii: "{") ? UInt8(ascii: "}") : UInt8(ascii: "]")
            self.index += 1
            self.skipWhitespace()
            if self.peek == close {
                self.index += 1
                return
            }
            while true {
                if close == UInt8(ascii: "}") {
                    self.skipWhitespace()
                    try self.skipString()
                    try self.expect(UInt8(ascii: ":"))
                }
                try self.skipValue(depth: depth + 1)
                self.skipWhitespace()
                guard let next = self.peek else { throw .malformedJSON }
                self.index += 1
                if next == close { return }
                guard next == UInt8(ascii: ",") else { throw .malformedJSON }
            }
        case UInt8(ascii: "t"), UInt8(ascii: "f"), UInt8(ascii: "n"):
            for word in ["true", "false", "null"] where self.matches(word) {
                self.index += word.utf8.count
                return
            }
            throw .malformedJSON
        default:
            _ = try self.parseNumber(rejectionIfMalformed: .malformedJSON)
        }
    }

    func matches(_ word: String) -> Bool {
        let utf8 = word.utf8
        guard self.index + utf8.count <= self.bytes.count else { return false }
        return zip(utf8, self.bytes[self.index...]).allSatisfy { $0 == $1 }
    }
}

extension UInt8 {
    fileprivate var isASCIILetter: Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(self) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(self)
            || self == UInt8(ascii: "-")
    }
}
