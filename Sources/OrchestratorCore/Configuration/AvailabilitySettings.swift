import Foundation

/// `instance` and `ha`: who this gateway is, and whether it shares its database with others that
/// elect one active among them (docs/availability.md).
package struct AvailabilitySettings: Sendable, Equatable {
    /// `instance.id`: on every decision and invocation row, in the status, and the default MQTT
    /// client id's suffix. Default: the host name.
    package var instanceID: String
    /// `ha.enabled`: elect one active through a lease in PostgreSQL; the others stand by, warm.
    package var enabled: Bool
    /// `ha.lease`: how long a lease holds without renewal (renewed every `lease / 3`). A standby takes
    /// over within about `lease + lease / 2` of the active's last renewal (docs/availability.md).
    package var lease: Duration
    /// `sharding.shards`: the process units are hashed to this many shards, each leased like the
    /// active role (``ShardMap``; docs/availability.md, "Sharding"). 1: no sharding.
    package var shards: Int

    /// At most this many shards: each is a lease row renewed by its holder every `lease / 3`.
    package static let maxShards = 64

    package init(
        instanceID: String = AvailabilitySettings.hostName, enabled: Bool = false, lease: Duration = .seconds(3), shards: Int = 1
    ) {
        self.instanceID = instanceID
        self.enabled = enabled
        self.lease = lease
        self.shards = shards
    }

    /// Whether the units are spread over several shards (`sharding.shards` > 1, with `ha.enabled`).
    package var isSharded: Bool { self.enabled && self.shards > 1 }

    /// The host name, made safe for a client id and a label ([0-9A-Za-z-_], at most 64 bytes).
    package static let hostName: String = {
        var name = [CChar](repeating: 0, count: 256)
        let host = gethostname(&name, name.count) == 0
            ? String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : ""
        let safe = String(String.UnicodeScalarView(host.unicodeScalars.map { Self.isWordCharacter($0) ? $0 : "-" }).prefix(64))
        return safe.isEmpty ? "orchestrator" : safe
    }()

    /// Whether an instance id is usable: 1–64 bytes of [0-9A-Za-z-_.].
    package static func isValid(_ id: String) -> Bool {
        !id.isEmpty && id.utf8.count <= 64 && id.unicodeScalars.allSatisfy { Self.isWordCharacter($0) || $0 == "." }
    }

    /// [0-9A-Za-z-_]
    private static func isWordCharacter(_ scalar: Unicode.Scalar) -> Bool {
        ("0"..."9").contains(scalar) || ("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar) || scalar == "-" || scalar == "_"
    }
}
