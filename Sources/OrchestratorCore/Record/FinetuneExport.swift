package import Foundation
package import LibPQ

/// `dang export-finetune`: the decision record as chat-format JSONL for fine-tuning the advisor
/// (the seed's pending fine-tuning pipeline's data preparation).
///
/// One example per decision with a module: the user turn is the decision's situation as the advisor
/// sees it (trigger kind, alert kind and severity, each selection step's verdict, the rules'
/// confidence — no tag names or other telemetry text), the assistant turn the decision taken as the
/// advisor's JSON answer. By default only invocations that ended `ok` are kept (successful outcomes),
/// identical examples once, split into train and validation by a hash of the situation (stable from
/// one export to the next; one situation is never on both sides). A held-out share of the decisions
/// (by a hash of their id) is left out of both, for `dang eval-advisor` to test on. Manual requests
/// are examples too (a person's judgement).
package enum FinetuneExport {
    package struct Options: Sendable {
        package var includeFailed = false
        package var validationShare = 0.1
        /// Decisions kept out of both files, for `dang eval-advisor` (``isHeldOut(_:share:)``).
        package var heldOutShare = 0.1
        package var from: Int64?
        package var to: Int64?

        package init() {}
    }

    package struct Summary: Sendable, Equatable {
        package var decisions = 0
        package var duplicates = 0
        package var train = 0
        package var validation = 0
        /// Decisions left out for evaluation.
        package var heldOut = 0
    }

    static let system = "You advise the rule engine of an oil-refinery process-optimization orchestrator. Answer with one json object: {\"action\": \"invoke\" or \"skip\", \"module\": ..., \"confidence\": 0..1}."

    package static func export(
        _ options: Options, on connection: PostgresConnection, train: inout [UInt8], validation: inout [UInt8]
    ) throws -> Summary {
        let rows = try connection.query(
            """
            SELECT d.module, d.action, d.trigger::text, d.reasons::text, d.confidence, coalesce(i.status, 'none'), i.result->'metrics'->>'benefit',
                   d.decision_id::text
            FROM decisions d
            LEFT JOIN LATERAL (SELECT status, result FROM invocations WHERE decision_id = d.decision_id ORDER BY published_at DESC NULLS LAST LIMIT 1) i ON true
            WHERE d.module IS NOT NULL AND d.source IN ('rules', 'llm', 'schedule', 'api')
              AND ($1::bigint IS NULL OR d.ts >= to_timestamp($1::double precision / 1000))
              AND ($2::bigint IS NULL OR d.ts < to_timestamp($2::double precision / 1000))
              AND ($3 OR (d.action = 'invoke' AND i.status = 'ok'))
            ORDER BY d.ts, d.decision_id
            """, [options.from, options.to, options.includeFailed])
        var summary = Summary()
        var seen: Set<String> = []
        for row in rows.rows {
            guard let module = row[0], let action = row[1] else { continue }
            if let id = row[7].flatMap(UUID.init(uuidString:)), Self.isHeldOut(id, share: options.heldOutShare) {
                summary.heldOut += 1
                continue
            }
            let trigger = (try? JSONSerialization.jsonObject(with: Data((row[2] ?? "{}").utf8))) as? [String: Any] ?? [:]
            let steps = (try? JSONSerialization.jsonObject(with: Data((row[3] ?? "[]").utf8))) as? [[String: Any]] ?? []
            var situation: [String: Any] = [
                "trigger_kind": trigger["kind"] as? String ?? "unknown",
                "steps": Dictionary(steps.compactMap { step in (step["step"] as? String).map { ($0, step["verdict"] as? String ?? "") } }) { a, _ in a },
                "eligible": [module],
            ]
            if let kind = trigger["alert_kind"] as? String { situation["alert_kind"] = kind }
            if let severity = trigger["severity"] as? String { situation["severity"] = severity }
            if let confidence = row[4].flatMap(Double.init) { situation["rule_confidence"] = (confidence * 1000).rounded() / 1000 }
            if options.includeFailed { situation["outcome"] = row[5] ?? "none" }
            var answer: [String: Any] = ["action": action == "invoke" ? "invoke" : "skip", "module": module]
            let benefit = row[6].flatMap(Double.init)
            answer["confidence"] = row[5] == "ok" ? min(1, 0.5 + 0.5 * min(1, max(0, benefit ?? 0.5))) : 0.5
            let user = Self.text(situation)
            let assistant = Self.text(answer)
            summary.decisions += 1
            guard seen.insert(user + "\u{0}" + assistant).inserted else {
                summary.duplicates += 1
                continue
            }
            let example = Self.text([
                "messages": [
                    ["role": "system", "content": Self.system], ["role": "user", "content": user], ["role": "assistant", "content": assistant],
                ]
            ])
            if Double(Self.fnv(user) % 1000) < options.validationShare * 1000 {
                validation.append(contentsOf: Array(example.utf8) + [0x0A])
                summary.validation += 1
            } else {
                train.append(contentsOf: Array(example.utf8) + [0x0A])
                summary.train += 1
            }
        }
        return summary
    }

    static func text(_ object: Any) -> String {
        (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }

    /// Whether a decision is in the held-out share: never exported for training or validation, kept
    /// for `dang eval-advisor` (a stable hash of its id).
    package static func isHeldOut(_ decision: UUID, share: Double) -> Bool {
        Double(Self.fnv("held-out:" + decision.uuidString.lowercased()) % 1000) < share * 1000
    }

    /// FNV-1a, 64 bits: a stable split across exports and machines.
    static func fnv(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x100_0000_01b3
        }
        return hash
    }
}
