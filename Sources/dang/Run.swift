import ArgumentParser
import Foundation
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
    @Option(name: .long, help: "Where the HTTP API listens, HOST:PORT (overrides api.listen; default 127.0.0.1:8080).")
    var http: String?
    @Option(name: .long, help: "Base URL of the LLM (overrides orchestrator.llm.base_url).")
    var llmBaseURL: String?

    func validate() throws {
        if let http = self.http, APISettings.parseListen(http) == nil { throw ValidationError("--http must be HOST:PORT, e.g. 127.0.0.1:8080") }
        if let url = self.llmBaseURL, !(url.hasPrefix("http://") || url.hasPrefix("https://")) {
            throw ValidationError("--llm-base-url must start with http:// or https://")
        }
    }

    /// `--http` and `--llm-base-url`.
    private func override(_ config: inout OrchestratorConfig) {
        if let http = self.http, let listen = APISettings.parseListen(http) {
            (config.api.host, config.api.port) = listen
            config.api.enabled = true
        }
        if let url = self.llmBaseURL { config.llm.baseURL = url }
    }

    func run() async throws {
        let logger = makeLogger(level: self.configOptions.logLevel, format: self.configOptions.logFormat)
        var config = try self.configOptions.load(logger: logger)
        try self.servers.apply(to: &config)
        self.override(&config)
        // A reload (SIGHUP, POST /reload) reads the same file with the same overrides.
        let source: ConfigurationSource = { [self] in
            var config = try OrchestratorConfig.load(file: self.configOptions.config)
            try self.servers.override(&config)
            self.override(&config)
            return config
        }
        let orchestrator = try Orchestrator(
            config: config, logger: logger, extraSinks: [AlertLogSink(logger: logger)], configurationSource: source)
        if let certificates = orchestrator.apiCertificates {
            logger.notice("the API serves HTTPS", metadata: ["tls.not_after": "\(certificates.notAfter.formatted(.iso8601))"])
        }
        let notifier = ServiceNotifier()
        let group = ServiceGroup(
            configuration: .init(
                services: (orchestrator.services + [
                    HangupService(orchestrator: orchestrator, notifier: notifier),
                    NotifyService(orchestrator: orchestrator, notifier: notifier),
                ]).map { .init(service: $0) },
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        logger.notice("dang \(DangVersion.current) starting", metadata: ["config": "\(self.configOptions.config)"])
        try await group.run()
        logger.notice("dang stopped")
    }
}

/// SIGHUP reloads the configuration and topic map, and the API's certificate and key
/// (``Orchestrator/reload()``), instead of ending the process as it would by default.
private struct HangupService: Service {
    let orchestrator: Orchestrator
    let notifier: ServiceNotifier

    func run() async throws {
        for await _ in await UnixSignalsSequence(trapping: .sighup).cancelOnGracefulShutdown() {
            self.notifier.reloading()
            let report = self.orchestrator.reload()
            self.notifier.notify(
                "READY=1\nSTATUS=" + (report.accepted ? "reloaded: \(report.applied.count) changes" : "reload refused: \(report.errors.count) errors"))
        }
    }
}

/// systemd's notifications (`Type=notify`, `WatchdogSec=`): READY=1 once the detection timer turns,
/// WATCHDOG=1 with a STATUS line while it keeps turning, STOPPING=1 at shutdown. Not under systemd
/// (no NOTIFY_SOCKET), it only waits for the shutdown.
private struct NotifyService: Service {
    let orchestrator: Orchestrator
    let notifier: ServiceNotifier

    func run() async throws {
        guard self.notifier.isActive else {
            try? await gracefulShutdown()
            return
        }
        let interval = self.notifier.watchdogInterval ?? .seconds(5)
        // Stale: the timer turns once a second; a loop that missed a few is stuck, and systemd
        // restarts the service when the pings stop for WatchdogSec.
        let stale = max(UInt64(3_000_000_000), UInt64(interval.timeInterval * 2e9))
        try? await cancelWhenGracefulShutdown {
            var ready = false
            while true {
                let tick = self.orchestrator.lastTick
                let now = DispatchTime.now().uptimeNanoseconds
                if tick > 0, now &- tick < stale {
                    let status = self.orchestrator.statusSnapshot()
                    let line = "STATUS=broker \(status.mqttConnected ? "connected" : "away"), database "
                        + "\(status.record.connected ? "connected" : "away"), \(status.ingest.tags) tags, \(status.ingest.samples) samples"
                    self.notifier.notify((ready ? "WATCHDOG=1\n" : "READY=1\n") + line)
                    ready = true
                }
                try await Task.sleep(for: ready ? interval : .milliseconds(200))
            }
        }
        self.notifier.notify("STOPPING=1")
    }
}
