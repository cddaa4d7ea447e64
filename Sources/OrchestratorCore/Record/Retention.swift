package import LibPQ

/// Deletes old rows in small batches, so retention never holds long locks or bloats one transaction.
package enum Retention {
    /// A table's retention rule: rows whose time column is older than `keep` go.
    package struct Rule: Sendable, Equatable {
        package let table: String
        package let keep: Duration
    }

    /// The statement for each table: only finished rows go (open alerts and pending invocations
    /// stay), and a decision still referenced by an invocation or an LLM exchange stays.
    static func statement(for table: String) -> String? {
        switch table {
        case "alerts":
            "DELETE FROM alerts WHERE alert_id IN (SELECT alert_id FROM alerts WHERE state = 'cleared' AND coalesce(cleared_at, raised_at) < now() - make_interval(secs => $1) LIMIT $2)"
        case "invocations":
            "DELETE FROM invocations WHERE invocation_id IN (SELECT invocation_id FROM invocations WHERE status <> 'pending' AND coalesce(completed_at, published_at, '-infinity') < now() - make_interval(secs => $1) LIMIT $2)"
        case "llm_exchanges":
            "DELETE FROM llm_exchanges WHERE exchange_id IN (SELECT exchange_id FROM llm_exchanges WHERE ts < now() - make_interval(secs => $1) LIMIT $2)"
        case "decisions":
            """
            DELETE FROM decisions WHERE decision_id IN (
                SELECT d.decision_id FROM decisions d
                WHERE d.ts < now() - make_interval(secs => $1)
                  AND NOT EXISTS (SELECT 1 FROM invocations i WHERE i.decision_id = d.decision_id)
                  AND NOT EXISTS (SELECT 1 FROM llm_exchanges l WHERE l.decision_id = d.decision_id)
                LIMIT $2)
            """
        case "tag_state":
            // State, not history: a tag not heard of for this long is not coming back soon.
            "DELETE FROM tag_state WHERE tag IN (SELECT tag FROM tag_state WHERE updated_at < now() - make_interval(secs => $1) LIMIT $2)"
        default:
            nil
        }
    }

    /// The tables retention applies to.
    package static let tables = ["alerts", "invocations", "llm_exchanges", "decisions", "tag_state"]

    /// Runs every rule, `batch` rows per statement, until a table has nothing older or `maxBatches`
    /// statements have run for it. Returns the rows deleted per table.
    @discardableResult
    package static func run(_ rules: [Rule], batch: Int = 1000, maxBatches: Int = 100, on connection: PostgresConnection)
        throws -> [String: Int]
    {
        var deleted: [String: Int] = [:]
        for rule in rules {
            guard let sql = Self.statement(for: rule.table) else { continue }
            let seconds = Double(rule.keep.components.seconds) + Double(rule.keep.components.attoseconds) / 1e18
            for _ in 0..<maxBatches {
                let result = try connection.query(sql, [seconds, batch])
                deleted[rule.table, default: 0] += result.affected
                if result.affected < batch { break }
            }
        }
        return deleted
    }
}
