package import Foundation
package import LibPQ

/// Decodes the rows of a query into `Decodable` types by column name (the `AS` names of the
/// SELECT, which are the coding keys), from libpq's text values: strings as they are, integers and
/// floating-point numbers parsed, booleans `t`/`f`, UUIDs, and SQL NULL as `nil`. A column missing
/// from the query, or a text that does not parse, is an error naming the column.
package enum RowDecoder {
    package static func decode<T: Decodable>(_ type: T.Type, from rows: PostgresRows) throws -> [T] {
        var index: [String: Int] = [:]
        for (position, name) in rows.columns.enumerated() { index[name] = position }
        return try rows.rows.map { try T(from: RowDecoding(columns: index, values: $0)) }
    }

    /// A column that is missing or does not read as its type.
    package struct Problem: Error, CustomStringConvertible {
        package let column: String
        package let message: String
        package var description: String { "column \(self.column): \(self.message)" }
    }
}

private struct RowDecoding: Decoder {
    let columns: [String: Int]
    let values: [String?]
    var codingPath: [any CodingKey] { [] }
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        KeyedDecodingContainer(RowContainer<Key>(row: self))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        throw RowDecoder.Problem(column: "-", message: "a row decodes into a keyed type")
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer {
        throw RowDecoder.Problem(column: "-", message: "a row decodes into a keyed type")
    }

    func text(_ key: some CodingKey) throws -> String? {
        guard let position = self.columns[key.stringValue] else {
            throw RowDecoder.Problem(column: key.stringValue, message: "not in the query")
        }
        return self.values[position]
    }
}

private struct RowContainer<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let row: RowDecoding
    var codingPath: [any CodingKey] { [] }
    var allKeys: [Key] { self.row.columns.keys.compactMap { Key(stringValue: $0) } }

    func contains(_ key: Key) -> Bool { self.row.columns[key.stringValue] != nil }

    func decodeNil(forKey key: Key) throws -> Bool { try self.row.text(key) == nil }

    private func parse<T>(_ key: Key, _ parse: (String) -> T?) throws -> T {
        guard let text = try self.row.text(key) else { throw RowDecoder.Problem(column: key.stringValue, message: "NULL") }
        guard let value = parse(text) else {
            throw RowDecoder.Problem(column: key.stringValue, message: "\(text.prefix(40)) is not a \(T.self)")
        }
        return value
    }

    func decode(_ type: String.Type, forKey key: Key) throws -> String { try self.parse(key) { $0 } }
    func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool { try self.parse(key) { $0 == "t" ? true : $0 == "f" ? false : nil } }
    func decode(_ type: Double.Type, forKey key: Key) throws -> Double { try self.parse(key) { Double($0) } }
    func decode(_ type: Int.Type, forKey key: Key) throws -> Int { try self.parse(key) { Int($0) } }
    func decode(_ type: Int64.Type, forKey key: Key) throws -> Int64 { try self.parse(key) { Int64($0) } }

    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
        if T.self == UUID.self { return try self.parse(key) { UUID(uuidString: $0) } as! T }
        if T.self == JSONValue.self {
            return try self.parse(key) { text in JSONValue(parsing: Array(text.utf8)) ?? .string(text) } as! T
        }
        throw RowDecoder.Problem(column: key.stringValue, message: "\(T.self) is not a column type")
    }

    func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
        throw RowDecoder.Problem(column: key.stringValue, message: "a column is not an object")
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        throw RowDecoder.Problem(column: key.stringValue, message: "a column is not an array")
    }

    func superDecoder() throws -> any Decoder { self.row }
    func superDecoder(forKey key: Key) throws -> any Decoder { self.row }
}
