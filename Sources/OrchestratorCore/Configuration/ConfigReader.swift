import Foundation
import Yams

/// One problem found in a configuration or topic-map file, with where it is.
package struct ConfigIssue: Sendable, CustomStringConvertible, Equatable {
    package enum Severity: String, Sendable {
        case error
        case warning
    }

    package let severity: Severity
    package let file: String
    /// 1-based line, 0 when the problem is the file as a whole.
    package let line: Int
    package let column: Int
    /// Dotted key path, e.g. `mqtt.keepalive`.
    package let key: String
    package let message: String

    package var description: String {
        let place = self.line > 0 ? "\(self.file):\(self.line):\(self.column)" : self.file
        let key = self.key.isEmpty ? "" : "\(self.key): "
        return "\(place): \(self.severity.rawValue): \(key)\(self.message)"
    }
}

/// Thrown when a configuration has at least one error; carries every problem found, not just the first.
package struct ConfigError: Error, CustomStringConvertible, Sendable {
    package let issues: [ConfigIssue]
    package var description: String { self.issues.map(\.description).joined(separator: "\n") }
}

/// Collects problems while a file is read, so that one run reports all of them.
final class ConfigDiagnostics {
    private(set) var issues: [ConfigIssue] = []
    let file: String
    let environment: [String: String]

    init(file: String, environment: [String: String]) {
        self.file = file
        self.environment = environment
    }

    func report(_ severity: ConfigIssue.Severity, _ key: String, at mark: Mark?, _ message: String) {
        self.issues.append(
            ConfigIssue(
                severity: severity, file: self.file, line: mark?.line ?? 0, column: mark?.column ?? 0,
                key: key, message: message))
    }

    var hasErrors: Bool { self.issues.contains { $0.severity == .error } }

    /// Parses YAML text into the root mapping, reporting syntax errors with their line.
    func parseRoot(_ text: String) -> YAMLSection? {
        do {
            // The basic resolver: every scalar stays text, read by type where it is used. (The
            // default one runs seven ICU regular expressions per scalar, which made a 10,000-tag
            // topic map slow to load and mapped megabytes of ICU into the process.)
            guard let node = try Yams.compose(yaml: text, .basic) else {
                return YAMLSection(mapping: Node.Mapping([]), path: "", mark: nil, diagnostics: self)
            }
            guard let mapping = node.mapping else {
                self.report(.error, "", at: node.mark, "the top level must be a mapping of keys to values")
                return nil
            }
            return YAMLSection(mapping: mapping, path: "", mark: node.mark, diagnostics: self)
        } catch let error as YamlError {
            let (mark, problem) = Self.describe(error, text: text)
            self.report(.error, "", at: mark, "YAML syntax: \(problem)")
            return nil
        } catch {
            self.report(.error, "", at: nil, "YAML syntax: \(error)")
            return nil
        }
    }

    /// Where a syntax error is to be looked for, and what it is. With a context (an open `[`, `{` or
    /// quote), the error is reported where that began — the end of the file, where the parser
    /// noticed, says nothing about where to look — and the place it was noticed follows.
    static func describe(_ error: YamlError, text: String) -> (Mark?, String) {
        switch error {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
            .composer(let context, let problem, let mark, _):
            guard let context else { return (mark, problem) }
            let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
            // Past the last character: the last line, or the empty one after a final newline.
            let atEnd = mark.line > lines.count || (mark.line == lines.count && mark.column > lines[mark.line - 1].count)
                || (mark.line == lines.count && lines.last?.isEmpty == true)
            let place = atEnd ? "reached the end of the file at \(mark.line):\(mark.column)" : "\(problem) at \(mark.line):\(mark.column)"
            let what: String
            if context.text.contains("flow sequence") {
                what = "unclosed '['"
            } else if context.text.contains("flow mapping") {
                what = "unclosed '{'"
            } else if context.text.contains("quoted scalar") {
                what = "unclosed quote"
            } else {
                return (context.mark, "\(context.text) \(problem) (at \(mark.line):\(mark.column))")
            }
            return (context.mark, "\(what) (\(place))")
        default:
            return (nil, "\(error)")
        }
    }

    /// An environment variable's name: ASCII letters, digits and `_`, not starting with a digit.
    static func isVariableName(_ name: some StringProtocol) -> Bool {
        guard let first = name.unicodeScalars.first, !("0"..."9").contains(first) else { return false }
        return name.unicodeScalars.allSatisfy { ("A"..."Z").contains($0) || ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "_" }
    }

    /// Replaces `${VAR}` and `${VAR:-default}` with values from the environment. An unset variable
    /// without a default is an error.
    func substitute(_ text: String, key: String, at mark: Mark?) -> String {
        guard text.contains("${") else { return text }
        var output = ""
        var rest = Substring(text)
        while let start = rest.range(of: "${") {
            output += rest[rest.startIndex..<start.lowerBound]
            guard let end = rest[start.upperBound...].firstIndex(of: "}") else {
                self.report(.error, key, at: mark, "unterminated ${...} in \"\(text)\"")
                return text
            }
            let body = rest[start.upperBound..<end]
            let name: Substring
            let fallback: Substring?
            if let separator = body.range(of: ":-") {
                name = body[body.startIndex..<separator.lowerBound]
                fallback = body[separator.upperBound...]
            } else {
                name = body
                fallback = nil
            }
            if !Self.isVariableName(name) {
                self.report(.error, key, at: mark, "invalid variable name \"\(name)\" in ${...}")
            } else if let value = self.environment[String(name)], !(value.isEmpty && fallback != nil) {
                output += value
            } else if let fallback {
                output += fallback
            } else {
                self.report(
                    .error, key, at: mark,
                    "environment variable \(name) is not set (write ${\(name):-default} to make it optional)")
            }
            rest = rest[rest.index(after: end)...]
        }
        output += rest
        return output
    }
}

/// A mapping being read: typed accessors that report problems with the key's line, and a
/// ``finish()`` that reports keys nobody asked for (usually typos).
struct YAMLSection {
    let mapping: Node.Mapping
    let path: String
    let mark: Mark?
    let diagnostics: ConfigDiagnostics
    private let consumed: Consumed
    /// Key → (key node, value node), the first of duplicates: a topic map of 10,000 tags is read
    /// in linear time, not by scanning the mapping once per key.
    private let index: [String: (key: Node, value: Node)]

    private final class Consumed {
        var keys: Set<String> = []
    }

    init(mapping: Node.Mapping, path: String, mark: Mark?, diagnostics: ConfigDiagnostics) {
        self.mapping = mapping
        self.path = path
        self.mark = mark
        self.diagnostics = diagnostics
        self.consumed = Consumed()
        var index: [String: (key: Node, value: Node)] = [:]
        index.reserveCapacity(mapping.count)
        for (key, value) in mapping {
            if let name = key.string, index[name] == nil { index[name] = (key, value) }
        }
        self.index = index
    }

    func keyPath(_ key: String) -> String { self.path.isEmpty ? key : "\(self.path).\(key)" }

    /// The raw node under `key`, marking the key as known.
    func node(_ key: String) -> Node? {
        self.consumed.keys.insert(key)
        guard let v = self.index[key]?.value else { return nil }
        if case .scalar = v, v.null != nil { return nil }
        return v
    }

    /// All keys present, in file order.
    var keys: [(key: String, mark: Mark?)] {
        self.mapping.compactMap { k, _ in k.string.map { ($0, k.mark) } }
    }

    func markOf(_ key: String) -> Mark? {
        self.index[key]?.value.mark ?? self.mark
    }

    func section(_ key: String) -> YAMLSection? {
        guard let node = self.node(key) else { return nil }
        guard let mapping = node.mapping else {
            self.diagnostics.report(.error, self.keyPath(key), at: node.mark, "expected a mapping of keys to values")
            return nil
        }
        return YAMLSection(mapping: mapping, path: self.keyPath(key), mark: node.mark, diagnostics: self.diagnostics)
    }

    /// A scalar as text after `${VAR}` substitution; reports non-scalars.
    func text(_ key: String) -> String? {
        guard let node = self.node(key) else { return nil }
        guard case .scalar(let scalar) = node else {
            self.diagnostics.report(.error, self.keyPath(key), at: node.mark, "expected a single value, not a list or mapping")
            return nil
        }
        return self.diagnostics.substitute(scalar.string, key: self.keyPath(key), at: node.mark)
    }

    func string(_ key: String, default value: String) -> String {
        self.text(key) ?? value
    }

    func optionalString(_ key: String) -> String? {
        guard let text = self.text(key), !text.isEmpty else { return nil }
        return text
    }

    /// A file's path: absolute, or relative to the configuration file's folder.
    func filePath(_ key: String) -> String? {
        guard let file = self.optionalString(key) else { return nil }
        if file.hasPrefix("/") { return file }
        return URL(fileURLWithPath: self.diagnostics.file).deletingLastPathComponent().appendingPathComponent(file).path
    }

    func int(_ key: String, default value: Int, in range: ClosedRange<Int>) -> Int {
        guard let text = self.text(key) else { return value }
        guard let parsed = Int(text.trimmingCharacters(in: .whitespaces)) else {
            self.diagnostics.report(.error, self.keyPath(key), at: self.markOf(key), "expected an integer, got \"\(text)\"")
            return value
        }
        guard range.contains(parsed) else {
            self.diagnostics.report(
                .error, self.keyPath(key), at: self.markOf(key),
                "\(parsed) is out of range \(range.lowerBound)...\(range.upperBound)")
            return value
        }
        return parsed
    }

    func double(_ key: String, default value: Double, in range: ClosedRange<Double>) -> Double {
        guard let text = self.text(key) else { return value }
        return self.parseDouble(text, key: key, in: range) ?? value
    }

    func optionalDouble(_ key: String) -> Double? {
        guard let text = self.text(key) else { return nil }
        return self.parseDouble(text, key: key, in: -Double.greatestFiniteMagnitude...Double.greatestFiniteMagnitude)
    }

    private func parseDouble(_ text: String, key: String, in range: ClosedRange<Double>) -> Double? {
        guard let parsed = Double(text.trimmingCharacters(in: .whitespaces)), parsed.isFinite else {
            self.diagnostics.report(.error, self.keyPath(key), at: self.markOf(key), "expected a number, got \"\(text)\"")
            return nil
        }
        guard range.contains(parsed) else {
            self.diagnostics.report(
                .error, self.keyPath(key), at: self.markOf(key),
                "\(parsed) is out of range \(range.lowerBound)...\(range.upperBound)")
            return nil
        }
        return parsed
    }

    func bool(_ key: String, default value: Bool) -> Bool {
        guard let text = self.text(key) else { return value }
        switch text.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default:
            self.diagnostics.report(.error, self.keyPath(key), at: self.markOf(key), "expected true or false, got \"\(text)\"")
            return value
        }
    }

    /// A duration: a bare number of seconds (`300`, `0.5`) or a number with a unit (`250ms`, `30s`, `5m`, `2h`).
    func duration(_ key: String, default value: Duration) -> Duration {
        guard let text = self.text(key) else { return value }
        guard let parsed = Self.parseDuration(text), parsed >= .zero else {
            self.diagnostics.report(
                .error, self.keyPath(key), at: self.markOf(key),
                "expected a duration such as 30, 30s, 250ms, 5m, 2h or 90d, got \"\(text)\"")
            return value
        }
        return parsed
    }

    static func parseDuration(_ text: String) -> Duration? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86400)]
        // At most about 31 years, far inside Int64 milliseconds.
        let largest = 1e12
        for (suffix, scale) in units where trimmed.hasSuffix(suffix) {
            guard let number = Double(trimmed.dropLast(suffix.count)), number.isFinite else { return nil }
            let ms = number * scale * 1000
            guard abs(ms) <= largest else { return nil }
            return .milliseconds(Int64(ms.rounded()))
        }
        guard let seconds = Double(trimmed), seconds.isFinite, abs(seconds * 1000) <= largest else { return nil }
        return .milliseconds(Int64((seconds * 1000).rounded()))
    }

    /// One of a fixed set of words.
    func choice<T: RawRepresentable>(_ key: String, default value: T) -> T where T.RawValue == String, T: CaseIterable {
        guard let text = self.text(key) else { return value }
        if let parsed = T(rawValue: text) { return parsed }
        let allowed = T.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", ")
        self.diagnostics.report(.error, self.keyPath(key), at: self.markOf(key), "\"\(text)\" is not one of \(allowed)")
        return value
    }

    /// The items of a list of mappings, one section each: a node that is not a list, or an item that
    /// is not a mapping, is reported with `expected` (what an item looks like, e.g. "{window,
    /// threshold_percent}"). Nil when the node is not a list.
    static func items(of node: Node, path: String, diagnostics: ConfigDiagnostics, expected: String) -> [YAMLSection]? {
        guard case .sequence(let items) = node else {
            diagnostics.report(.error, path, at: node.mark, "expected a list of \(expected)")
            return nil
        }
        return items.enumerated().compactMap { index, item in
            let itemPath = "\(path)[\(index)]"
            guard let mapping = item.mapping else {
                diagnostics.report(.error, itemPath, at: item.mark, "expected \(expected)")
                return nil
            }
            return YAMLSection(mapping: mapping, path: itemPath, mark: item.mark, diagnostics: diagnostics)
        }
    }

    /// Reports every key that was never read.
    func finish() {
        for (key, mark) in self.keys where !self.consumed.keys.contains(key) {
            self.diagnostics.report(.error, self.keyPath(key), at: mark, "unknown key")
        }
    }
}

extension Duration {
    /// A duration as the configuration writes it (`30`, `0.5`, `250ms`, `5m`, `2h`, `90d`), for
    /// command-line options that take one.
    package init?(configText text: String) {
        guard let parsed = YAMLSection.parseDuration(text) else { return nil }
        self = parsed
    }
}
