package import Foundation

/// What the API may do to the plant — exactly what MQTT may, through the same coordinator and
/// alert desk. `dang run` wires the orchestrator in; the API sees nothing else of it.
package protocol OperatorActions: Sendable {
    /// A person's request to run a module; nil when the module is not configured.
    func request(module: ModuleName, _ request: ManualRequest) -> Decision?
    /// An answer to a decision waiting for approval; false when none waits with this id.
    func approve(decision id: UUID, _ answer: ApprovalRequest) -> Bool
    func acknowledge(alert id: UUID, by: String?) async throws -> AlertDesk.Outcome
    /// Shelves an alert's tag and kind; the time it ends (epoch ms), nil for an unknown alert.
    func shelve(alert id: UUID, for duration: Duration, by: String?, reason: String?) async throws -> Int64?
    /// Ends the shelving of an alert's tag and kind.
    func unshelve(alert id: UUID, by: String?, reason: String?) async throws -> AlertDesk.Outcome
    /// Takes a tag out of service or puts it back; false when it already was so.
    func setOutOfService(tag: String, _ outOfService: Bool, by: String?, reason: String?) async throws -> Bool
    /// The tags out of service now.
    func outOfServiceTags() async throws -> [OutOfServiceTag]
    /// Reads the configuration and topic map again and applies what may change while running.
    func reload() -> ReloadReport
    /// A question to the advisor with the plant's context; nil when no advisor is configured.
    func ask(_ question: String, session: UUID, continuing: Bool) async -> ConciergeAnswer?
}

/// What the API may read of the running orchestrator: one consistent-enough snapshot of its
/// counters, taken when `/status` or `/metrics` is asked for (nothing on the hot path).
package protocol StatusSource: Sendable {
    func statusSnapshot() -> StatusSnapshot
    /// The tags under a unit or area path (`r1/cdu/cdu1`): their metadata, limits and newest
    /// `samples` good values, for the console's plant view.
    func readings(under unit: String, samples: Int) -> [TagReading]
    /// This instance's role: `single`, `active` or `standby` (without a whole snapshot).
    var role: String { get }
    /// The unit monitor named `unit` (a unit's path), nil when the path has none.
    func unitMonitor(_ unit: String) -> UnitMonitorState?
}

/// A tag as the console's plant view shows it (`GET /tags`).
package struct TagReading: Sendable, Encodable {
    package let tag: String
    package let description: String?
    package let unit: String?
    package let limits: Limits
    /// Epoch ms and values of the newest good samples, oldest first.
    package let times: [Int64]
    package let values: [Double]

    package struct Limits: Sendable, Encodable {
        package let lolo: Double?
        package let lo: Double?
        package let hi: Double?
        package let hihi: Double?
    }

    package init(tag: String, info: TagInfo?, times: [Int64], values: [Double]) {
        self.tag = tag
        self.description = info?.description
        self.unit = info?.unit
        self.limits = Limits(lolo: info?.limits.lolo, lo: info?.limits.lo, hi: info?.limits.hi, hihi: info?.limits.hihi)
        self.times = times
        self.values = values
    }

    package func encode(to encoder: any Encoder) throws {
        enum Key: String, CodingKey { case tag, description, unit, limits, times, values }
        var c = encoder.container(keyedBy: Key.self)
        try c.encode(self.tag, forKey: .tag)
        try c.encode(self.description, forKey: .description)
        try c.encode(self.unit, forKey: .unit)
        try c.encode(self.limits, forKey: .limits)
        try c.encode(self.times, forKey: .times)
        // Good samples are finite; a value JSON cannot carry would be null all the same.
        try c.encode(self.values.map { $0.isFinite ? $0 : nil }, forKey: .values)
    }
}

/// The orchestrator's state as `/status` and `/metrics` report it.
package struct StatusSnapshot: Sendable {
    package struct Module: Sendable {
        package var enabled: Bool
        package var transport: String
        package var inFlight: Int
        package var maxInFlight: Int
        package var requiresApproval: Bool
    }

    package struct Unit: Sendable {
        package var name: String
        package var tags: Int
        package var trained: Bool
    }

    package struct LLM: Sendable {
        package var active: Bool
        package var provider: String
        package var model: String
        package var counters: LLMClient.Counters?
    }

    package var version = DangVersion.current
    package var startedAt: Date
    package var mqttConnected: Bool
    package var mqttConnects: Int
    package var mqttLastError: String?
    package var droppedWhileAway: Int
    package var record: RecordWriter.Counters
    package var poolRefused: Int
    package var ingest: IngestCounters
    package var units: [Unit]
    package var modules: [ModuleName: Module]
    package var decisions: CoordinatorStateMachine.Counters
    package var openInvocations: Int
    package var llm: LLM
    package var shelvedAlerts: Int
    package var refusedAcknowledgements: Int
    /// Lifecycle transitions by an operator (acknowledged, shelved, unshelved), by kind and severity.
    package var alertTransitions: [AlertTally: Int] = [:]
    /// Decisions by module and action.
    package var decisionTallies: [DecisionTally: Int] = [:]
    /// Open alert episodes by severity.
    package var activeAlerts: [AlertSeverity: Int] = [:]
    /// This instance (`instance.id`), its role (`single`, `active`, `standby`) and, when active
    /// under `ha`, the lease's epoch.
    package var instance = AvailabilitySettings.hostName
    package var role = "single"
    package var leaseEpoch: Int64?
    /// The shards this instance holds (`sharding.shards`); nil without sharding.
    package var shards: [Int]?
    /// Configuration reloads applied and refused.
    package var reloadsApplied = 0
    package var reloadsRefused = 0
    /// `database.spool_max_bytes` (0: not known), for readiness.
    package var spoolCapacityBytes = 0
    /// Tags out of service now.
    package var outOfServiceTags = 0

    package init(
        startedAt: Date, mqttConnected: Bool, mqttConnects: Int, mqttLastError: String?, droppedWhileAway: Int,
        record: RecordWriter.Counters, poolRefused: Int, ingest: IngestCounters, units: [Unit], modules: [ModuleName: Module],
        decisions: CoordinatorStateMachine.Counters, openInvocations: Int, llm: LLM, shelvedAlerts: Int, refusedAcknowledgements: Int
    ) {
        self.startedAt = startedAt
        self.mqttConnected = mqttConnected
        self.mqttConnects = mqttConnects
        self.mqttLastError = mqttLastError
        self.droppedWhileAway = droppedWhileAway
        self.record = record
        self.poolRefused = poolRefused
        self.ingest = ingest
        self.units = units
        self.modules = modules
        self.decisions = decisions
        self.openInvocations = openInvocations
        self.llm = llm
        self.shelvedAlerts = shelvedAlerts
        self.refusedAcknowledgements = refusedAcknowledgements
    }
}

extension StatusSnapshot {
    /// Why the instance should not be sent work (`GET /readyz`); empty when it is ready: the broker
    /// and the database are connected and the spool is at most 90 % full.
    package var notReadyReasons: [String] {
        var reasons: [String] = []
        if self.role == "standby" { reasons.append("this instance is a standby: the active one serves (ha.enabled)") }
        if !self.mqttConnected {
            reasons.append("the MQTT broker is not connected" + (self.mqttLastError.map { " (\($0))" } ?? ""))
        }
        if !self.record.connected { reasons.append("the database is not connected (records are spooled)") }
        if self.spoolCapacityBytes > 0 && self.record.spooledBytes > self.spoolCapacityBytes / 10 * 9 {
            reasons.append("the spool holds \(self.record.spooledBytes) of its \(self.spoolCapacityBytes) bytes (over 90 %)")
        }
        return reasons
    }
}
