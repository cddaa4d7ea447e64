import Foundation
import Yams
package import Mosquitto

/// `database`.
package struct DatabaseSettings: Sendable, Equatable {
    package init() {}

    /// libpq connection string; empty means libpq reads the `PG*` environment variables.
    package var url = ""
    package var batchSize = 500
    /// A batch also ends at this many bytes of records (big invocation params or LLM exchanges make
    /// one statement, and one transaction, of a bounded size).
    package var batchBytes = 8 << 20
    package var flushInterval: Duration = .milliseconds(50)
    package var queueCapacity = 100_000
    /// Directory of the durable spool (empty: no spool, memory only).
    package var spoolDirectory = ".dang/spool"
    /// Largest spool, in bytes.
    package var spoolCapacity = 1 << 30
    package var spoolFsync: Spool.FsyncPolicy = .batch
    /// How often each tag's state is snapshotted into `tag_state` (zero: never).
    package var snapshotInterval: Duration = .seconds(10)
    /// How long finished rows are kept, per table (in `Retention.tables`' order: a decision's
    /// invocations and LLM exchanges before it), and how often retention runs.
    package var retention: [Retention.Rule] = [
        .init(table: "alerts", keep: .seconds(90 * 86400)), .init(table: "invocations", keep: .seconds(365 * 86400)),
        .init(table: "llm_exchanges", keep: .seconds(90 * 86400)), .init(table: "decisions", keep: .seconds(365 * 86400)),
        .init(table: "tag_state", keep: .seconds(30 * 86400)),
    ]
    package var retentionInterval: Duration = .seconds(600)
}
