import ArgumentParser
import LibPQ
import Logging
import OrchestratorCore

/// `dang migrate`: brings the database schema up to date.
struct Migrate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Apply the database migrations and exit.")

    @OptionGroup var configOptions: ConfigOptions
    @OptionGroup var servers: ServerOptions

    func run() throws {
        let logger = makeLogger(level: self.configOptions.logLevel, format: self.configOptions.logFormat)
        var config = try self.configOptions.load(logger: logger)
        try self.servers.apply(to: &config)
        do {
            let connection = try PostgresConnection(conninfo: config.database.url)
            let report = try Migrations.apply(on: connection)
            if report.applied.isEmpty {
                print("schema is up to date at version \(report.current)")
            } else {
                print("applied migrations \(report.applied.map(String.init).joined(separator: ", ")); schema at version \(report.current)")
            }
        } catch {
            printError("migrate: \(error)")
            throw ExitCode(1)
        }
    }
}
