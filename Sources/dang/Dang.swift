import ArgumentParser
import Foundation
import Logging
import OrchestratorCore

@main
struct Dang: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dang",
        abstract: "DAN_G Orchestrator: MQTT in, detection, alerts out, PostgreSQL record.",
        version: DangVersion.current,
        subcommands: [Run.self, CheckConfig.self, Migrate.self, Simulate.self, Worker.self, Replay.self, Bench.self, BenchSubscriber.self, BenchDetectors.self, BenchRecord.self, BenchDecisions.self, ExportFinetune.self, EvalAdvisor.self, BenchPredictions.self, BenchFlatline.self, BenchFailover.self]
    )

    /// One malloc arena (``MallocArenas``), set before any thread but this one allocates; then the
    /// command line.
    static func main() async {
        MallocArenas.apply(environment: ProcessInfo.processInfo.environment)
        await Self.main(nil)
    }
}

/// Options every command that reads the configuration shares.
struct ConfigOptions: ParsableArguments {
    @Option(name: .long, help: "Configuration file.")
    var config: String = "config/orchestrator.yaml"

    @Option(name: .customLong("log-level"), help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevelName: String = "info"

    var logLevel: Logger.Level { Logger.Level(rawValue: self.logLevelName) ?? .info }

    @Option(name: .customLong("log-format"), help: "Log lines as text (the default) or json: one object per line (time, level, label, message, metadata fields).")
    var logFormat: LogFormat = .text

    func validate() throws {
        guard Logger.Level(rawValue: self.logLevelName) != nil else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
    }

    /// Loads the file, prints warnings, and exits with every error listed.
    func load(logger: Logger) throws -> OrchestratorConfig {
        do {
            let config = try OrchestratorConfig.load(file: self.config)
            for warning in config.warnings { logger.warning("\(warning)") }
            return config
        } catch {
            printError(error.description)
            throw ExitCode(2)
        }
    }
}

/// Overrides that point a command at any broker and database without editing files.
struct ServerOptions: ParsableArguments {
    @Option(name: .long, help: "Broker URL, mqtt://host:port or mqtts://host:port (or DANG_MQTT_URL).")
    var mqttURL: String?

    @Option(name: .long, help: "PostgreSQL URL or conninfo (or DATABASE_URL, or the PG* variables).")
    var databaseURL: String?

    @Option(name: .long, help: "Directory of the durable spool (overrides database.spool_dir).")
    var spoolDir: String?

    func apply(to config: inout OrchestratorConfig) throws {
        do {
            try self.override(&config)
        } catch {
            printError(error.description)
            throw ExitCode(2)
        }
    }

    /// The overrides, throwing the configuration's own error (a reload reports it).
    func override(_ config: inout OrchestratorConfig) throws(ConfigError) {
        try config.applyOverrides(mqttURL: self.mqttURL, databaseURL: self.databaseURL, environment: ProcessInfo.processInfo.environment)
        if let spoolDir = self.spoolDir { config.database.spoolDirectory = spoolDir }
    }
}

/// `--log-format`.
enum LogFormat: String, ExpressibleByArgument {
    case text
    case json
}

func makeLogger(level: Logger.Level, format: LogFormat = .text) -> Logger {
    LoggingSystem.bootstrap { label in
        switch format {
        case .text:
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        case .json:
            var handler = JSONLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }
    return Logger(label: "dang")
}

/// Prints a value as one JSON object, keys sorted (the commands' `--json`).
func printJSON(_ value: some Encodable) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

func printError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}
