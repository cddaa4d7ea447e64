import ArgumentParser
import Foundation
import Logging
import DangTools
import OrchestratorCore
import ServiceLifecycle
import UnixSignals

/// `dang worker <module>`: a reference module answering invocations.
struct Worker: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a reference module (forecasting, analysis, optimization) over MQTT, or once over stdin/stdout.")

    @Argument(help: "Which module: forecasting, analysis or optimization.")
    var module: String

    @OptionGroup var configOptions: ConfigOptions
    @Option(name: .long, help: "Broker URL, mqtt://host:port (or DANG_MQTT_URL).")
    var mqttURL: String?
    @Flag(name: .long, help: "Answer one invocation read from stdin on stdout (the command transport), then exit.")
    var stdio = false
    @Option(name: .long, help: "Seconds to wait before answering (to exercise timeouts).")
    var delay: Double = 0

    func validate() throws {
        guard ReferenceWorker(rawValue: self.module) != nil else {
            throw ValidationError("unknown module \"\(self.module)\": use forecasting, analysis or optimization")
        }
        guard self.delay >= 0 else { throw ValidationError("--delay must not be negative") }
    }

    func run() async throws {
        let worker = ReferenceWorker(rawValue: self.module)!
        if self.stdio {
            let input = FileHandle.standardInput.readDataToEndOfFile()
            if self.delay > 0 { try await Task.sleep(for: .seconds(self.delay)) }
            FileHandle.standardOutput.write(Data(worker.answer(Array(input))))
            FileHandle.standardOutput.write(Data("\n".utf8))
            return
        }
        let logger = makeLogger(level: self.configOptions.logLevel, format: self.configOptions.logFormat)
        var config = try self.configOptions.load(logger: logger)
        try ServerOptions(mqttURL: self.mqttURL, databaseURL: nil).apply(to: &config)
        let runner = WorkerRunner(config: config, worker: worker, delay: self.delay, logger: logger)
        let task = Task { try await runner.run() }
        for await _ in await UnixSignalsSequence(trapping: .sigterm, .sigint) { break }
        task.cancel()
        let answered = try await task.value
        logger.notice("worker stopped", metadata: ["worker": "\(worker.rawValue)", "answered": "\(answered)"])
    }
}
