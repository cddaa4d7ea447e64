import Foundation

/// A replay input (SPEC §5): a CSV with a header, the timestamp first, then one numeric column per tag.
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
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { line in
            line.hasSuffix("\r") ? line.dropLast() : line
        }
        while lines.last?.isEmpty == true { lines.removeLast() }
        guard let header = lines.first else { throw Problem(file: file, line: 1, field: "", message: "empty file: expected a header") }
        let names = Self.fields(header)
        guard names.count >= 2 else {
            throw Problem(file: file, line: 1, field: "header", message: "expected a timestamp column and at least one tag column")
        }
        let tags = names.dropFirst().map { String($0).trimmingCharacters(in: .whitespaces) }
        if let duplicate = tags.enumerated().first(where: { index, name in tags[..<index].contains(name) }) {
            throw Problem(file: file, line: 1, field: duplicate.element, message: "duplicate column name")
        }
        if let empty = tags.firstIndex(where: \.isEmpty) {
            throw Problem(file: file, line: 1, field: "column \(empty + 2)", message: "empty column name")
        }

        var timestamps: [String] = []
        var rows: [[Double?]] = []
        timestamps.reserveCapacity(lines.count - 1)
        rows.reserveCapacity(lines.count - 1)
        for (offset, line) in lines.dropFirst().enumerated() {
            let lineNumber = offset + 2
            let fields = Self.fields(line)
            guard fields.count == names.count else {
                throw Problem(
                    file: file, line: lineNumber, field: "",
                    message: "expected \(names.count) fields as in the header, found \(fields.count)")
            }
            timestamps.append(String(fields[0]).trimmingCharacters(in: .whitespaces))
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
        let (format, times) = try Self.times(timestamps, file: file, column: String(names[0]))
        return ReplayTable(file: file, tags: tags, timestamps: timestamps, times: times, values: rows, timeFormat: format)
    }

    private static func fields(_ line: Substring) -> [Substring] {
        line.split(separator: ",", omittingEmptySubsequences: false)
    }

    /// Reads the first column as RFC 3339 / `YYYY-MM-DD HH:MM:SS` (UTC when no offset is given),
    /// epoch milliseconds (integers ≥ 10¹¹, i.e. after 1973), or a sample index (other integers).
    static func times(_ column: [String], file: String, column name: String) throws(Problem) -> (TimeFormat, [Int64]) {
        if let first = column.first, Int64(first) != nil {
            var times: [Int64] = []
            times.reserveCapacity(column.count)
            for (index, text) in column.enumerated() {
                guard let value = Int64(text) else {
                    throw Problem(file: file, line: index + 2, field: name, message: "\"\(text)\" is not an integer like the rows before")
                }
                times.append(value)
            }
            if let bad = times.firstIndex(where: { !RFC3339.storableRange.contains(Double($0)) || abs($0) > 1 << 52 }) {
                throw Problem(file: file, line: bad + 2, field: name, message: "\(times[bad]) is out of range for a timestamp or index")
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
                    file: file, line: index + 2, field: name,
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
