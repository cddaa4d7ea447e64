import Foundation
package import Logging
import Synchronization

/// `--log-format json`: one JSON object per line — `time` (UTC, ISO 8601 with milliseconds),
/// `level`, `label`, `message`, then the metadata fields (the logger's, the provider's and the
/// call's, the call's winning), for log shippers (journald, Vector, Loki, Fluent Bit) that read
/// structured lines. Strings are escaped by ``JSONWriter``, so a hostile tag name in a message or
/// a field stays data on its own line. A metadata field named like one of the fixed four is written
/// as `metadata.<name>`. Each line is written whole under a lock, so lines from
/// threads never interleave.
package struct JSONLogHandler: LogHandler {
    package var metadata: Logger.Metadata = [:]
    package var metadataProvider: Logger.MetadataProvider?
    package var logLevel: Logger.Level = .info
    private let label: String
    private let write: @Sendable ([UInt8]) -> Void

    /// A handler writing to standard error (file descriptor 2).
    package static func standardError(label: String, metadataProvider: Logger.MetadataProvider? = nil) -> JSONLogHandler {
        JSONLogHandler(label: label, metadataProvider: metadataProvider, write: Self.writeStandardError)
    }

    /// A handler handing each line (with its newline) to `write`.
    package init(label: String, metadataProvider: Logger.MetadataProvider? = nil, write: @escaping @Sendable ([UInt8]) -> Void) {
        self.label = label
        self.metadataProvider = metadataProvider
        self.write = write
    }

    package subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    package func log(event: LogEvent) {
        var fields = self.metadata
        if let provided = self.metadataProvider?.get() { fields.merge(provided) { _, new in new } }
        if let own = event.metadata { fields.merge(own) { _, new in new } }
        var writer = JSONWriter()
        writer.field("time", string: Self.timestamp())
        writer.field("level", string: event.level.rawValue)
        writer.field("label", string: self.label)
        writer.field("message", string: event.message.description)
        for (key, value) in fields.sorted(by: { $0.key < $1.key }) {
            let name = Self.reserved.contains(key) ? "metadata." + key : key
            writer.field(name, rawJSON: Self.json(value))
        }
        var line = writer.finish()
        line.append(UInt8(ascii: "\n"))
        self.write(line)
    }

    private static let reserved: Set<String> = ["time", "level", "label", "message"]

    /// A metadata value as JSON: strings as strings, lists as arrays, dictionaries as objects.
    static func json(_ value: Logger.Metadata.Value) -> [UInt8] {
        var bytes: [UInt8] = []
        Self.append(value, to: &bytes)
        return bytes
    }

    private static func append(_ value: Logger.Metadata.Value, to bytes: inout [UInt8]) {
        switch value {
        case .string(let text):
            JSONWriter.appendString(text, to: &bytes)
        case .stringConvertible(let convertible):
            JSONWriter.appendString(convertible.description, to: &bytes)
        case .array(let values):
            bytes.append(UInt8(ascii: "["))
            for (index, element) in values.enumerated() {
                if index > 0 { bytes.append(UInt8(ascii: ",")) }
                Self.append(element, to: &bytes)
            }
            bytes.append(UInt8(ascii: "]"))
        case .dictionary(let entries):
            bytes.append(UInt8(ascii: "{"))
            for (index, entry) in entries.sorted(by: { $0.key < $1.key }).enumerated() {
                if index > 0 { bytes.append(UInt8(ascii: ",")) }
                JSONWriter.appendString(entry.key, to: &bytes)
                bytes.append(UInt8(ascii: ":"))
                Self.append(entry.value, to: &bytes)
            }
            bytes.append(UInt8(ascii: "}"))
        }
    }

    /// Now, UTC, as `2026-12-07T05:06:44.123Z`.
    static func timestamp() -> String {
        Date.now.formatted(Self.timeFormat)
    }

    private static let timeFormat = Date.ISO8601FormatStyle(includingFractionalSeconds: true)

    private static let lock = Mutex(())

    private static let writeStandardError: @Sendable ([UInt8]) -> Void = { line in
        Self.lock.withLock { _ in FileHandle.standardError.write(Data(line)) }
    }
}
