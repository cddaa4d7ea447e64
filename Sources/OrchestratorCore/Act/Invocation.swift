package import Foundation

/// `invocations.status` (docs/record.md, "Schema").
package enum InvocationStatus: String, Sendable, CaseIterable {
    case pending
    case ok
    case error
    case timeout
    case expired
}

/// One invocation of a module, from decision to result.
package struct Invocation: Sendable, Equatable {
    package let id: UUID
    package let decisionID: UUID
    package let module: ModuleName
    /// The trigger's kind, the key (with the module) of the outcome statistics.
    package let triggerKind: String
    package let scopeKey: String
    /// JSON object text of the prepared data and settings.
    package var params: String
    /// JSON object text of the trigger.
    package let trigger: String
    package var status: InvocationStatus = .pending
    /// Deliveries so far (the first one included).
    package var attempts = 0
    /// Epoch ms of the first delivery; `nil` while it waits for approval.
    package var publishedAt: Int64?
    /// When the current attempt times out.
    package var deadline: Int64?
    /// When the next attempt is due, after a timeout or a failed delivery.
    package var retryAt: Int64?
    /// When an approval it waits for expires.
    package var approvalExpiresAt: Int64?
    package var completedAt: Int64?
    /// The module's result (JSON object text), or why it failed.
    package var result: String?

    package init(
        id: UUID = UUID(), decisionID: UUID, module: ModuleName, triggerKind: String, scopeKey: String, params: String,
        trigger: String
    ) {
        self.id = id
        self.decisionID = decisionID
        self.module = module
        self.triggerKind = triggerKind
        self.scopeKey = scopeKey
        self.params = params
        self.trigger = trigger
    }

    /// Held until the LLM advisor has answered (or failed to), then delivered (not recorded: after
    /// a restart it is delivered at once).
    package var awaitingAdvice = false

    package var isAwaitingApproval: Bool { self.status == .pending && self.publishedAt == nil && !self.awaitingAdvice }

    /// The invocation message (docs/mqtt-contract.md, "Outputs") for the current attempt.
    package func message(at now: Int64, timeout: Duration, replyTo: String) -> [UInt8] {
        var json = JSONWriter()
        json.field("invocation_id", string: self.id.uuidString.lowercased())
        json.field("decision_id", string: self.decisionID.uuidString.lowercased())
        json.field("module", string: self.module.rawValue)
        json.field("ts", integer: now)
        json.field("deadline_ms", integer: timeout.milliseconds)
        json.field("attempt", integer: Int64(self.attempts))
        json.field("params", rawJSON: Array(self.params.utf8))
        json.field("trigger", rawJSON: Array(self.trigger.utf8))
        json.field("reply_to", string: replyTo)
        return json.finish()
    }

    /// The row for `invocations` (full state: written again on every change, last one wins).
    package var record: InvocationRecord {
        InvocationRecord(
            invocationID: self.id, decisionID: self.decisionID, module: self.module.rawValue, params: self.params,
            publishedAt: self.publishedAt, completedAt: self.completedAt, status: self.status.rawValue, attempts: self.attempts,
            result: self.result, triggerKind: self.triggerKind, scopeKey: self.scopeKey)
    }
}

/// A module's answer (docs/mqtt-contract.md, "Inputs"): `{"invocation_id", "status": "ok"|"error", "output": {...},
/// "metrics": {"benefit": number}}`.
package struct ModuleResult: Sendable, Equatable {
    package let invocationID: UUID
    package let ok: Bool
    package let benefit: Double?
    /// The whole result as received (JSON object text), for the record.
    package let json: String

    /// Why a result message was refused.
    package enum Rejection: String, Sendable, Error {
        case notJSON = "not_json"
        case missingInvocationID = "missing_invocation_id"
        case badStatus = "bad_status"
        case badMetrics = "bad_metrics"
    }

    private struct Wire: Decodable {
        struct Metrics: Decodable {
            let benefit: Double?
        }
        let invocation_id: String?
        let status: String?
    }

    private struct WireMetrics: Decodable {
        let metrics: Wire.Metrics?
    }

    package static func parse(_ bytes: [UInt8]) -> Result<ModuleResult, Rejection> {
        let data = Data(bytes)
        guard let wire = try? JSONDecoder().decode(Wire.self, from: data) else { return .failure(.notJSON) }
        guard let text = wire.invocation_id, let id = UUID(uuidString: text) else { return .failure(.missingInvocationID) }
        guard let status = wire.status, status == "ok" || status == "error" else { return .failure(.badStatus) }
        // A number or nothing: `true`, text or a non-finite value is refused.
        guard let metrics = try? JSONDecoder().decode(WireMetrics.self, from: data) else { return .failure(.badMetrics) }
        return .success(
            ModuleResult(
                invocationID: id, ok: status == "ok", benefit: metrics.metrics?.benefit,
                json: String(decoding: bytes, as: UTF8.self)))
    }
}
