import LibPQ
import Testing

@testable import OrchestratorCore

@Suite(.timeLimit(.minutes(1)))
struct PostgresTests {
    @Test func `migrations apply once and are idempotent`() throws {
        let connection = try PostgresConnection(conninfo: TestServices.freshDatabase())
        let first = try Migrations.apply(on: connection)
        #expect(first.applied == Migrations.all.map(\.version))
        let second = try Migrations.apply(on: connection)
        #expect(second.applied.isEmpty)
        #expect(second.current == Migrations.latestVersion)
        let tables = try connection.query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1")
        #expect(tables.rows.map { $0[0]! } == ["alerts", "decisions", "invocations", "schema_migrations"])
    }

    @Test func `a schema newer than this build is refused`() throws {
        let connection = try PostgresConnection(conninfo: TestServices.freshDatabase())
        try Migrations.apply(on: connection)
        try connection.query("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", [Migrations.latestVersion + 1, "future"])
        #expect(throws: MigrationError.self) { try Migrations.apply(on: connection) }
    }

    @Test func `parameters are bound, never spliced into SQL`() throws {
        let connection = try PostgresConnection(conninfo: TestServices.freshDatabase())
        let hostile = "x'); DROP TABLE t; --\u{1F600}"
        try connection.query("CREATE TABLE t (s text, d double precision, n bigint)")
        try connection.query("INSERT INTO t VALUES ($1, $2, $3)", [hostile, 1.5, nil])
        let rows = try connection.query("SELECT s, d, n FROM t")
        #expect(rows.rows == [[hostile, "1.5", nil]])
    }

    @Test func `a failed transaction rolls back`() throws {
        let connection = try PostgresConnection(conninfo: TestServices.freshDatabase())
        try connection.query("CREATE TABLE t (n int PRIMARY KEY)")
        #expect(throws: PostgresError.self) {
            try connection.withTransaction { connection in
                try connection.query("INSERT INTO t VALUES ($1)", [1])
                try connection.query("INSERT INTO t VALUES ($1)", [1])
            }
        }
        #expect(try connection.query("SELECT count(*) FROM t").rows == [["0"]])
        let error = #expect(throws: PostgresError.self) {
            try connection.query("INSERT INTO t VALUES ($1)", ["not a number"])
        }
        #expect(error?.sqlState == "22P02")
        #expect(error?.isTransient == false)
    }

    @Test(arguments: [
        "postgres://dang:hunter2@127.0.0.1:1/none?connect_timeout=2",
        "postgres://dang:hunter2@[::1/db",  // libpq quotes a malformed URI in its error
        "host=127.0.0.1 port=1 password=hunter2 connect_timeout=2 bogus=1",
    ])
    func `connection errors do not echo the password`(conninfo: String) {
        let error = #expect(throws: PostgresError.self) { try PostgresConnection(conninfo: conninfo) }
        #expect(error?.code == .connectionFailed)
        #expect(error?.description.contains("hunter2") == false)
        #expect(error?.description.isEmpty == false)
    }
}
