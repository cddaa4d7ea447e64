/// Writes one flat JSON object; strings are escaped per RFC 8259, so hostile tag names stay data.
package struct JSONWriter {
    private var bytes: [UInt8] = [UInt8(ascii: "{")]

    package init() {}

    private mutating func key(_ name: String) {
        if self.bytes.count > 1 { self.bytes.append(UInt8(ascii: ",")) }
        Self.appendString(name, to: &self.bytes)
        self.bytes.append(UInt8(ascii: ":"))
    }

    package mutating func field(_ name: String, string value: String) {
        self.key(name)
        Self.appendString(value, to: &self.bytes)
    }

    package mutating func field(_ name: String, integer value: Int64) {
        self.key(name)
        self.bytes.append(contentsOf: String(value).utf8)
    }

    package mutating func field(_ name: String, number value: Double) {
        self.key(name)
        if value.isFinite {
            self.bytes.append(contentsOf: "\(value)".utf8)
        } else {
            self.bytes.append(contentsOf: "null".utf8)
        }
    }

    package mutating func field(_ name: String, rawJSON value: [UInt8]) {
        self.key(name)
        self.bytes.append(contentsOf: value)
    }

    package mutating func field(_ name: String, strings values: some Sequence<String>) {
        self.key(name)
        self.bytes.append(UInt8(ascii: "["))
        for (index, value) in values.enumerated() {
            if index > 0 { self.bytes.append(UInt8(ascii: ",")) }
            Self.appendString(value, to: &self.bytes)
        }
        self.bytes.append(UInt8(ascii: "]"))
    }

    package mutating func finish() -> [UInt8] {
        self.bytes.append(UInt8(ascii: "}"))
        return self.bytes
    }

    package static func appendString(_ value: String, to bytes: inout [UInt8]) {
        bytes.append(UInt8(ascii: "\""))
        for byte in value.utf8 {
            let escaped: UInt8
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"): escaped = byte
            case UInt8(ascii: "\n"): escaped = UInt8(ascii: "n")
            case UInt8(ascii: "\r"): escaped = UInt8(ascii: "r")
            case UInt8(ascii: "\t"): escaped = UInt8(ascii: "t")
            case 0..<0x20, 0x7F:
                bytes.append(UInt8(ascii: "\\"))
                bytes.append(UInt8(ascii: "u"))
                bytes.append(UInt8(ascii: "0"))
                bytes.append(UInt8(ascii: "0"))
                bytes.append(Self.hexDigit(byte >> 4))
                bytes.append(Self.hexDigit(byte & 0xF))
                continue
            default:
                bytes.append(byte)
                continue
            }
            bytes.append(UInt8(ascii: "\\"))
            bytes.append(escaped)
        }
        bytes.append(UInt8(ascii: "\""))
    }

    private static func hexDigit(_ nibble: UInt8) -> UInt8 {
        nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "a") + nibble - 10
    }
}
