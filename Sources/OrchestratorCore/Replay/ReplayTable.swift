import Foundation

/// A replay input (docs/detection.md, "Offline replay"): a CSV with a header, the timestamp first,
/// then one numeric column per tag.
package struct ReplayTable: Sendable {
    /// How the first column is to be read.
    package enum TimeFormat: Sendable, Equatable {
        case rfc3339
        case epochMilliseconds
        case sampleIndex
    }

    package let file: String
    package let tags: [String]
    /// The first column exactly as written, echoed into the output.
    package let timestamps: [String]
    /// Epoch milliseconds of each row (sample indices become one second apart from the epoch).
    package let times: [Int64]
    /// `values[row][column]`; `nil` for an empty cell.
    package let values: [[Double?]]
    package let timeFormat: TimeFormat

    /// Why a replay file was refused: the file, line and field.
    package struct Problem: Error, CustomStringConvertible, Sendable {
        package let file: String
        package let line: Int
        package let field: String
        package let message: String
        package var description: String { "\(self.file):\(self.line): \(self.field): \(self.message)" }
    }

    package static func load(file: String) throws(Problem) -> ReplayTable {
        guard let data = FileManager.default.contents(atPath: file) else {
            throw Problem(file: file, line: 0, field: "", message: "cannot read the file")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw Problem(file: file, line: 0, field: "", message: "the file is not valid UTF-8")
        }
        return try Self.parse(text, file: file)
    }

    package static func parse(_ text: String, file: String) throws(Problem) -> ReplayTable {
        // Records by RFC 4180: LF or CRLF line ends, a UTF-8 byte-order mark, quoted fields (with
        // commas, "" and line breaks inside).
        let records = try Self.records(text, file: file)
        guard let header = records.first else { throw Problem(file: file, line: 1, field: "", message: "empty file: expected a header") }
        let names = header.fields
        guard names.count >= 2 else {
            throw Problem(file: file, line: 1, field: "header", message: "expected a timestamp column and at least one tag column")
        }
        let tags = names.dropFirst().map { $0.trimmingCharacters(in: .whitespaces) }
        if let duplicate = tags.enumerated().first(where: { index, name in tags[..<index].contains(name) }) {
            throw Problem(file: file, line: 1, field: duplicate.element, message: "duplicate column name")
        }
        if let empty = tags.firstIndex(where: \.isEmpty) {
            throw Problem(file: file, line: 1, field: "column \(empty + 2)", message: "empty column name")
        }

        var timestamps: [String] = []
        var rows: [[Double?]] = []
        timestamps.reserveCapacity(records.count - 1)
        rows.reserveCapacity(records.count - 1)
        var lineOfRow: [Int] = []
        for record in records.dropFirst() {
            let lineNumber = record.line
            let fields = record.fields
            lineOfRow.append(lineNumber)
            guard fields.count == names.count else {
                throw Problem(
                    file: file, line: lineNumber, field: "",
                    message: "expected \(names.count) fields as in the header, found \(fields.count)")
            }
            timestamps.append(fields[0].trimmingCharacters(in: .whitespaces))
            var row: [Double?] = []
            row.reserveCapacity(tags.count)
            for (column, field) in fields.dropFirst().enumerated() {
                let text = field.trimmingCharacters(in: .whitespaces)
                if text.isEmpty {
                    row.append(nil)
                } else if let value = Double(text) {
                    row.append(value)
                } else {
                    throw Problem(file: file, line: lineNumber, field: tags[column], message: "\"\(text)\" is not a number")
                }
            }
            rows.append(row)
        }
        guard !timestamps.isEmpty else { throw Problem(file: file, line: 2, field: "", message: "no data rows") }
        let (format, times) = try Self.times(timestamps, file: file, column: names[0], lines: lineOfRow)
        return ReplayTable(file: file, tags: tags, timestamps: timestamps, times: times, values: rows, timeFormat: format)
    }

    /// The CSV records of a text with the line each starts on; blank lines are skipped.
    static func records(_ text: String, file: String) throws(Problem) -> [(line: Int, fields: [String])] {
        var bytes = Array(text.utf8)
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes.removeFirst(3) }
        var records: [(line: Int, fields: [String])] = []
        var fields: [String] = []
        var field: [UInt8] = []
        var line = 1
        var recordLine = 1
        var quoted = false
        var quoteLine = 0
        var wasQuoted = false
        var i = 0
        func endField() {
            fields.append(String(decoding: field, as: UTF8.self))
            field.removeAll(keepingCapacity: true)
            wasQuoted = false
        }
        func endRecord() {
            endField()
            if !(fields.count == 1 && fields[0].allSatisfy(\.isWhitespace)) { records.append((recordLine, fields)) }
            fields.removeAll()
        }
        while i < bytes.count {
            let byte = bytes[i]
            if quoted {
                if byte == UInt8(ascii: "\"") {
                    if i + 1 < bytes.count, bytes[i + 1] == UInt8(ascii: "\"") {
                        field.append(byte)
                        i += 2
                        continue
                    }
                    quoted = false
                } else {
                    if byte == UInt8(ascii: "\n") { line += 1 }
                    field.append(byte)
                }
                i += 1
                continue
            }
            switch byte {
            case UInt8(ascii: ","):
                endField()
            case UInt8(ascii: "\r") where i + 1 < bytes.count && bytes[i + 1] == UInt8(ascii: "\n"):
                break  // the LF that follows ends the record
            case UInt8(ascii: "\n"):
                endRecord()
                line += 1
                recordLine = line
            case UInt8(ascii: "\""):
                guard field.allSatisfy({ $0 == UInt8(ascii: " ") }), !wasQuoted else {
                    throw Problem(
                        file: file, line: line, field: "field \(fields.count + 1)",
                        message: "a quote inside an unquoted field: not CSV (quote the whole field and double the quotes inside)")
                }
                field.removeAll(keepingCapacity: true)
                quoted = true
                wasQuoted = true
                quoteLine = line
            case 0:
                throw Problem(file: file, line: line, field: "", message: "a NUL byte: this is not a CSV text file")
            default:
                field.append(byte)
            }
            i += 1
        }
        if quoted {
            throw Problem(file: file, line: quoteLine, field: "field \(fields.count + 1)", message: "a quoted field is never closed")
        }
        if !field.isEmpty || !fields.isEmpty { endRecord() }
        return records
    }

    /// Reads the first column as RFC 3339 / `YYYY-MM-DD HH:MM:SS` (UTC when no offset is given),
    /// epoch milliseconds (integers ≥ 10¹¹, i.e. after 1973), or a sample index (other integers).
    static func times(_ column: [String], file: String, column name: String, lines: [Int]) throws(Problem) -> (TimeFormat, [Int64]) {
        if let first = column.first, Int64(first) != nil {
            var times: [Int64] = []
            times.reserveCapacity(column.count)
            for (index, text) in column.enumerated() {
                guard let value = Int64(text) else {
                    throw Problem(file: file, line: lines[index], field: name, message: "\"\(text)\" is not an integer like the rows before")
                }
                times.append(value)
            }
            if let bad = times.firstIndex(where: { !RFC3339.storableRange.contains(Double($0)) || abs($0) > 1 << 52 }) {
                throw Problem(file: file, line: lines[bad], field: name, message: "\(times[bad]) is out of range for a timestamp or index")
            }
            if times.allSatisfy({ $0 >= 100_000_000_000 }) { return (.epochMilliseconds, times) }
            return (.sampleIndex, times.map { $0 * 1000 })
        }
        var times: [Int64] = []
        times.reserveCapacity(column.count)
        for (index, text) in column.enumerated() {
            let withZone = Self.hasZone(text) ? text : text + "Z"
            guard let ms = RFC3339.epochMilliseconds(withZone) else {
                throw Problem(
                    file: file, line: lines[index], field: name,
                    message: "\"\(text)\" is not a timestamp (RFC 3339, YYYY-MM-DD HH:MM:SS, epoch ms or a sample index)")
            }
            times.append(ms)
        }
        return (.rfc3339, times)
    }

    private static func hasZone(_ text: String) -> Bool {
        if text.hasSuffix("Z") || text.hasSuffix("z") { return true }
        let tail = text.suffix(6)
        return tail.count == 6 && (tail.first == "+" || tail.first == "-") && tail.dropFirst(3).first == ":"
    }
}
