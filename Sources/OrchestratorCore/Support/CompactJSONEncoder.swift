/// Encodes an `Encodable` value as compact JSON bytes, keys in the order the value encodes them,
/// strings escaped by ``JSONWriter/appendString(_:to:)``, numbers in Swift's shortest round-trip
/// form, non-finite numbers as `null`.
///
/// For the decision path, where Foundation's `JSONEncoder` cost tens of microseconds per invocation
/// (a boxed value tree, then a second pass to write it): this writes straight into one buffer.
/// Dictionaries encode in their own (unspecified) order; types that need a stable order encode an
/// ordered list of keys themselves.
package struct CompactJSONEncoder {
    package init() {}

    package func encode(_ value: some Encodable) throws -> [UInt8] {
        let sink = Sink()
        try value.encode(to: Writer(sink: sink))
        sink.close(levels: 0)
        return sink.bytes
    }

    /// The shared output and the stack of open containers (`true`: one with a member written).
    /// Used by one encoding on one thread, never shared: its accesses need no run-time
    /// exclusivity checks (which cost more than the appends themselves).
    fileprivate final class Sink {
        @exclusivity(unchecked) var bytes: [UInt8] = []
        /// For each open container: its closing byte, and whether a member was written.
        @exclusivity(unchecked) var open: [(close: UInt8, hasMember: Bool)] = []

        init() { self.bytes.reserveCapacity(1024) }

        /// Closes containers until `levels` remain open.
        func close(levels: Int) {
            while self.open.count > levels { self.bytes.append(self.open.removeLast().close) }
        }

        func separator(at level: Int) {
            if self.open.count > level + 1 { self.close(levels: level + 1) }
            if self.open[level].hasMember {
                self.bytes.append(UInt8(ascii: ","))
            } else {
                self.open[level].hasMember = true
            }
        }

        func begin(_ opening: UInt8, _ closing: UInt8) -> Int {
            self.bytes.append(opening)
            self.open.append((closing, false))
            return self.open.count - 1
        }

        func key(_ key: String, at level: Int) {
            self.separator(at: level)
            JSONWriter.appendString(key, to: &self.bytes)
            self.bytes.append(UInt8(ascii: ":"))
        }

        func null() { self.bytes.append(contentsOf: [0x6E, 0x75, 0x6C, 0x6C]) }
        func bool(_ value: Bool) { self.bytes.append(contentsOf: value ? Array("true".utf8) : Array("false".utf8)) }
        func string(_ value: String) { JSONWriter.appendString(value, to: &self.bytes) }
        func integer(_ value: some BinaryInteger) {
            guard let small = Int64(exactly: value) else {
                self.bytes.append(contentsOf: String(value).utf8)
                return
            }
            // Digits straight into the buffer: no String per number.
            var magnitude = small.magnitude
            if small < 0 { self.bytes.append(UInt8(ascii: "-")) }
            let start = self.bytes.count
            repeat {
                self.bytes.append(UInt8(ascii: "0") + UInt8(magnitude % 10))
                magnitude /= 10
            } while magnitude > 0
            self.bytes[start...].reverse()
        }
        func double(_ value: Double) {
            if value.isFinite { self.bytes.append(contentsOf: "\(value)".utf8) } else { self.null() }
        }
    }

    fileprivate struct Writer: Encoder {
        let sink: Sink
        var codingPath: [any CodingKey] { [] }
        var userInfo: [CodingUserInfoKey: Any] { [:] }

        func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
            KeyedEncodingContainer(Keyed<Key>(sink: self.sink, level: self.sink.begin(UInt8(ascii: "{"), UInt8(ascii: "}"))))
        }

        func unkeyedContainer() -> any UnkeyedEncodingContainer {
            Unkeyed(sink: self.sink, level: self.sink.begin(UInt8(ascii: "["), UInt8(ascii: "]")))
        }

        func singleValueContainer() -> any SingleValueEncodingContainer { Single(sink: self.sink) }
    }

    fileprivate struct Keyed<Key: CodingKey>: KeyedEncodingContainerProtocol {
        let sink: Sink
        let level: Int
        var codingPath: [any CodingKey] { [] }

        func encodeNil(forKey key: Key) {
            self.sink.key(key.stringValue, at: self.level)
            self.sink.null()
        }
        func encode(_ value: Bool, forKey key: Key) {
            self.sink.key(key.stringValue, at: self.level)
            self.sink.bool(value)
        }
        func encode(_ value: String, forKey key: Key) {
            self.sink.key(key.stringValue, at: self.level)
            self.sink.string(value)
        }
        func encode(_ value: Double, forKey key: Key) {
            self.sink.key(key.stringValue, at: self.level)
            self.sink.double(value)
        }
        func encode(_ value: Int, forKey key: Key) {
            self.sink.key(key.stringValue, at: self.level)
            self.sink.integer(value)
        }
        func encode(_ value: Int64, forKey key: Key) {
            self.sink.key(key.stringValue, at: self.level)
            self.sink.integer(value)
        }
        func encode(_ value: Int8, forKey key: Key) {
            self.sink.key(key.stringValue, at: self.level)
            self.sink.integer(value)
        }
        func encode(_ value: Int16, forKey key: Key) {
            self.sink.key(key.stringValue, at: self.level)
            self.sink.integer(value)
        }
        func encode(_ value: Int32, forKey key: Key) {
            self.sink.key(key.stringValue, at: self.level)
            self.sink.integer(value)
        }
        func encode(_ value: UInt, forKey key: Key) {
            self.sink.key(key.stringValue, at: self.level)
            self.sink.integer(value)
        }
        func encode(_ value: UInt8, forKey key: Key) {
            self.sink.key(key.stringValue, at: self.level)
            self.sink.integer(value)
        }
        func encode(_ value: UInt16, forKey key: Key) {
            self.sink.key(key.stringValue, at: self.level)
            self.sink.integer(value)
        }
        func encode(_ value: UInt32, forKey key: Key) {
            self.sink.key(key.stringValue, at: self.level)
            self.sink.integer(value)
        }
        func encode(_ value: UInt64, forKey key: Key) {
            self.sink.key(key.stringValue, at: self.level)
            self.sink.integer(value)
        }
        func encode(_ value: Float, forKey key: Key) {
            self.sink.key(key.stringValue, at: self.level)
            self.sink.double(Double(value))
        }
        func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
            self.sink.key(key.stringValue, at: self.level)
            try value.encode(to: Writer(sink: self.sink))
        }

        func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key) -> KeyedEncodingContainer<NestedKey> {
            self.sink.key(key.stringValue, at: self.level)
            return Writer(sink: self.sink).container(keyedBy: keyType)
        }

        func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
            self.sink.key(key.stringValue, at: self.level)
            return Writer(sink: self.sink).unkeyedContainer()
        }

        func superEncoder() -> any Encoder { Writer(sink: self.sink) }
        func superEncoder(forKey key: Key) -> any Encoder { Writer(sink: self.sink) }
    }

    fileprivate struct Unkeyed: UnkeyedEncodingContainer {
        let sink: Sink
        let level: Int
        var codingPath: [any CodingKey] { [] }
        private(set) var count = 0

        init(sink: Sink, level: Int) {
            self.sink = sink
            self.level = level
        }

        private mutating func next() {
            self.sink.separator(at: self.level)
            self.count += 1
        }

        mutating func encodeNil() {
            self.next()
            self.sink.null()
        }
        mutating func encode(_ value: Bool) {
            self.next()
            self.sink.bool(value)
        }
        mutating func encode(_ value: String) {
            self.next()
            self.sink.string(value)
        }
        mutating func encode(_ value: Double) {
            self.next()
            self.sink.double(value)
        }
        mutating func encode(_ value: Int) {
            self.next()
            self.sink.integer(value)
        }
        mutating func encode(_ value: Int64) {
            self.next()
            self.sink.integer(value)
        }
        mutating func encode(_ value: Int8) {
            self.next()
            self.sink.integer(value)
        }
        mutating func encode(_ value: Int16) {
            self.next()
            self.sink.integer(value)
        }
        mutating func encode(_ value: Int32) {
            self.next()
            self.sink.integer(value)
        }
        mutating func encode(_ value: UInt) {
            self.next()
            self.sink.integer(value)
        }
        mutating func encode(_ value: UInt8) {
            self.next()
            self.sink.integer(value)
        }
        mutating func encode(_ value: UInt16) {
            self.next()
            self.sink.integer(value)
        }
        mutating func encode(_ value: UInt32) {
            self.next()
            self.sink.integer(value)
        }
        mutating func encode(_ value: UInt64) {
            self.next()
            self.sink.integer(value)
        }
        mutating func encode(_ value: Float) {
            self.next()
            self.sink.double(Double(value))
        }
        mutating func encode<T: Encodable>(_ value: T) throws {
            self.next()
            try value.encode(to: Writer(sink: self.sink))
        }

        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
            self.next()
            return Writer(sink: self.sink).container(keyedBy: keyType)
        }

        mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
            self.next()
            return Writer(sink: self.sink).unkeyedContainer()
        }

        mutating func superEncoder() -> any Encoder {
            self.next()
            return Writer(sink: self.sink)
        }
    }

    fileprivate struct Single: SingleValueEncodingContainer {
        let sink: Sink
        var codingPath: [any CodingKey] { [] }

        func encodeNil() { self.sink.null() }
        func encode(_ value: Bool) { self.sink.bool(value) }
        func encode(_ value: String) { self.sink.string(value) }
        func encode(_ value: Double) { self.sink.double(value) }
        func encode(_ value: Int) { self.sink.integer(value) }
        func encode(_ value: Int64) { self.sink.integer(value) }
        func encode(_ value: Int8) { self.sink.integer(value) }
        func encode(_ value: Int16) { self.sink.integer(value) }
        func encode(_ value: Int32) { self.sink.integer(value) }
        func encode(_ value: UInt) { self.sink.integer(value) }
        func encode(_ value: UInt8) { self.sink.integer(value) }
        func encode(_ value: UInt16) { self.sink.integer(value) }
        func encode(_ value: UInt32) { self.sink.integer(value) }
        func encode(_ value: UInt64) { self.sink.integer(value) }
        func encode(_ value: Float) { self.sink.double(Double(value)) }
        func encode<T: Encodable>(_ value: T) throws { try value.encode(to: Writer(sink: self.sink)) }
    }
}
