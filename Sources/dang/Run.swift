import ArgumentParser
import Logging
import OrchestratorCore
import ServiceLifecycle
import UnixSignals

/// `dang run`: the daemon.
struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the orchestrator until SIGINT or SIGTERM.")

    @OptionGroup var configOptions: ConfigOptions
    @OptionGroup var servers: ServerOptions

    func run() async throws {
        let logger = makeLogger(level: self.configOptions.logLevel)
        var config = try self.configOptions.load(logger: logger)
        try self.servers.apply(to: &config)
        let orchestrator = try Orchestrator(config: config, logger: logger, extraSinks: [AlertLogSink(logger: logger)])
        let group = ServiceGroup(
            configuration: .init(
                services: orchestrator.services.map { .init(service: $0) },
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        logger.notice("dang \(DangVersion.current) starting", metadata: ["config": "\(self.configOptions.config)"])
        try await group.run()
        logger.notice("dang stopped")
    }
}
