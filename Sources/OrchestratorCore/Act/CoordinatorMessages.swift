package import Foundation

/// The decision side's MQTT topics (docs/mqtt-contract.md, "Decisions and invocations") and the
/// payloads people send on them or to the HTTP API: module results, approvals, manual requests.
package enum CoordinatorMessage: Equatable, Sendable {
    /// `{prefix}/result/{module}`: the module name as it came (checked against the invocation).
    case result(module: String)
    /// `{prefix}/approve/{decision id}`; nil id: not a decision id.
    case approve(decision: UUID?)
    /// `{prefix}/request/{module}`; nil module: not a module name.
    case request(module: ModuleName?)

    /// The filters the orchestrator subscribes to for the decision side (acknowledgements included).
    package static func subscriptions(prefix: String) -> [String] {
        ["\(prefix)/result/+", "\(prefix)/approve/+", "\(prefix)/request/+", "\(prefix)/ack/+"]
    }

    /// Which decision-side message a topic carries; nil for any other topic.
    package init?(topic: String, prefix: String) {
        let base = prefix + "/"
        guard topic.hasPrefix(base) else { return nil }
        let rest = topic.dropFirst(base.count).split(separator: "/", omittingEmptySubsequences: false)
        guard rest.count == 2 else { return nil }
        let last = String(rest[1])
        switch rest[0] {
        case "result": self = .result(module: last)
        case "approve": self = .approve(decision: UUID(uuidString: last))
        case "request": self = .request(module: ModuleName(rawValue: last))
        default: return nil
        }
    }
}

/// `{"approve": true|false, "by": …}`. Anything else (an empty payload, `{}`, `"approve": 1`) is no
/// answer: decision ids are public on `{prefix}/decision`, so approval must be said outright.
package struct ApprovalRequest: Decodable, Sendable, Equatable {
    package let approve: Bool
    package let by: String?

    package init(approve: Bool, by: String?) {
        self.approve = approve
        self.by = by
    }

    /// The payload's answer, `by` cut to 200 characters; nil when it says no answer.
    package static func parse(_ payload: [UInt8]) -> ApprovalRequest? {
        guard let answer = try? JSONDecoder().decode(ApprovalRequest.self, from: Data(payload)) else { return nil }
        return ApprovalRequest(approve: answer.approve, by: answer.by.map { String($0.prefix(200)) })
    }
}

/// A person's request to run a module: `{"scope": "r1/cdu/cdu1", "by": "operator name", "params":
/// {...}}`, every field optional; an empty payload is an empty request.
package struct ManualRequest: Sendable, Equatable {
    package var scope: String?
    package var by: String?
    /// The extra parameters: a JSON object's text, passed to the module under `request`.
    package var params: String?

    package init(scope: String? = nil, by: String? = nil, params: String? = nil) {
        self.scope = scope
        self.by = by
        self.params = params
    }

    /// The request in a payload; nil when it is not a JSON object or `params` is not an object.
    /// A `scope` or `by` that is not a string is ignored; they are cut to 512 and 200 characters.
    package static func parse(_ payload: [UInt8]) -> ManualRequest? {
        if payload.isEmpty { return ManualRequest() }
        guard let body = JSONValue(parsing: payload), case .object(let object) = body else { return nil }
        var request = ManualRequest(scope: body.string("scope", limit: 512), by: body.string("by", limit: 200))
        if let extra = object["params"] {
            guard case .object = extra else { return nil }
            request.params = extra.text
        }
        return request
    }
}

extension ModuleResult {
    /// A local command answers one invocation: a result without an `invocation_id` is its answer.
    static func attachingID(_ stdout: [UInt8], invocation: UUID) -> [UInt8] {
        guard case .object(var object)? = JSONValue(parsing: stdout), object["invocation_id"] == nil else { return stdout }
        object["invocation_id"] = .string(invocation.uuidString.lowercased())
        return Array(JSONValue.object(object).text.utf8)
    }
}
