package import Foundation
package import LibPQ

/// The recorded decisions an advisor is evaluated on (`dang eval-advisor`): every decision the rules
/// sent to a module whose invocation ended (ok, error, timeout), rebuilt as the question the live
/// advisor would have been asked — the trigger, the selection steps, and the numbers of the tags the
/// invocation carried — with the outcome it had.
package enum AdvisorTestSet {
    /// Which decisions: the held-out share of `export-finetune` (never in its train or validation
    /// files), or all.
    package enum Split: String, Sendable, CaseIterable {
        case heldOut = "held-out"
        case all
    }

    package struct Case: Sendable {
        package let question: Advisor.Question
        /// `ok`, `error`, `timeout` or `expired`.
        package let outcome: String
        package let benefit: Double?

        /// Whether invoking was worth it: the invocation ended `ok` (with a positive benefit when one was reported).
        package var worthIt: Bool { self.outcome == "ok" && (self.benefit.map { $0 > 0 } ?? true) }
    }

    package static func load(
        split: Split, heldOutShare: Double, limit: Int, from: Int64? = nil, to: Int64? = nil, on connection: PostgresConnection
    ) throws -> [Case] {
        let rows = try connection.query(
            """
            SELECT d.decision_id::text, d.module, d.action, d.trigger::text, d.reasons::text, d.confidence, i.status, i.params::text,
                   i.result->'metrics'->>'benefit'
            FROM decisions d
            JOIN LATERAL (SELECT status, params, result FROM invocations WHERE decision_id = d.decision_id
                          ORDER BY published_at DESC NULLS LAST LIMIT 1) i ON true
            WHERE d.module IS NOT NULL AND d.action IN ('invoke', 'defer') AND d.source IN ('rules', 'schedule')
              AND i.status IN ('ok', 'error', 'timeout')
              AND ($1::bigint IS NULL OR d.ts >= to_timestamp($1::double precision / 1000))
              AND ($2::bigint IS NULL OR d.ts < to_timestamp($2::double precision / 1000))
            ORDER BY d.ts, d.decision_id
            """, [from, to])
        var cases: [Case] = []
        for row in rows.rows {
            guard cases.count < limit else { break }
            guard let idText = row[0], let id = UUID(uuidString: idText), let moduleText = row[1], let module = ModuleName(rawValue: moduleText),
                let status = row[6]
            else { continue }
            if split == .heldOut && !FinetuneExport.isHeldOut(id, share: heldOutShare) { continue }
            let trigger = JSONValue(parsing: Array((row[3] ?? "{}").utf8)) ?? .object([:])
            let steps = Self.steps(row[4] ?? "[]")
            let params = JSONValue(parsing: Array((row[7] ?? "{}").utf8)) ?? .object([:])
            let decision = Decision(
                id: id, trigger: Self.trigger(trigger, module: module), module: module, action: row[2] == "defer" ? .defer : .invoke,
                steps: steps, confidence: row[5].flatMap(Double.init) ?? 0, priority: Self.priority(steps), scopeKey: params.string("scope") ?? "",
                usableTags: [])
            var tags: [(last: Double, count: Int, mean: Double, sd: Double, lo: Double?, hi: Double?)] = []
            if case .object(let data)? = params["tags"] {
                for name in data.keys.sorted() {
                    guard let entry = data[name], case .array(let values)? = entry["v"] else { continue }
                    let limits = entry["limits"]
                    tags.append(
                        Advisor.Question.tag(
                            values: values.compactMap(\.number), lo: limits?["lo"]?.number ?? limits?["lolo"]?.number,
                            hi: limits?["hi"]?.number ?? limits?["hihi"]?.number))
                }
            }
            let horizon = params["horizon"]?.number.map { Int(max(1, min($0, 100_000))) } ?? 12
            cases.append(
                Case(
                    question: Advisor.Question(decision: decision, tags: tags, bounds: Advisor.Question.bounds(module: module, horizon: horizon)),
                    outcome: status, benefit: row[8].flatMap(Double.init)))
        }
        return cases
    }

    /// The trigger as recorded: its kind and, for an alert, the alert's kind, severity, value and score.
    static func trigger(_ json: JSONValue, module: ModuleName) -> TriggerEvent {
        let kind = json.string("kind").flatMap(TriggerRule.Kind.init(rawValue:)) ?? .equipment
        var alert: AlertEvent? = nil
        if let alertKind = json.string("alert_kind").flatMap(AlertKind.init(rawValue:)) {
            let time = json["ts"]?.number.map { Int64(max(-9e15, min($0, 9e15))) } ?? 0
            alert = AlertEvent(
                alertID: json.string("alert_id").flatMap(UUID.init(uuidString:)) ?? UUID(), state: .raised,
                severity: json.string("severity").flatMap(AlertSeverity.init(rawValue:)) ?? .info, kind: alertKind,
                tag: json.string("tag", limit: 512) ?? "", topic: "", timestamp: time, raisedAt: time, clearedAt: nil,
                value: json["value"]?.number ?? .nan, score: json["score"]?.number ?? 0, message: "")
        }
        return TriggerEvent(
            rule: json.string("name", limit: 200) ?? "", kind: kind, module: module, source: .rules, alert: alert,
            time: json["time"]?.number.map { Int64(max(-9e15, min($0, 9e15))) } ?? 0)
    }

    static func steps(_ text: String) -> [StepVerdict] {
        guard case .array(let items)? = JSONValue(parsing: Array(text.utf8)) else { return [] }
        return items.compactMap { item in
            guard let step = item.string("step"), let verdict = item.string("verdict").flatMap(StepVerdict.Verdict.init(rawValue:)) else {
                return nil
            }
            return StepVerdict(step: step, verdict: verdict, detail: item.string("detail") ?? "")
        }
    }

    /// The priority the `priority` step recorded ("priority 4.5").
    static func priority(_ steps: [StepVerdict]) -> Double {
        guard let detail = steps.first(where: { $0.step == "priority" })?.detail else { return 1 }
        return detail.split(separator: " ").dropFirst().first.flatMap { Double($0) } ?? 1
    }
}
