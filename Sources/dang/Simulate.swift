import ArgumentParser
import Logging
import DangTools
import OrchestratorCore

/// `dang simulate`: publishes a small refinery with an injected upset.
struct Simulate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Publish simulated refinery tags (from the topic map) with an injected upset.")

    @OptionGroup var configOptions: ConfigOptions
    @Option(name: .long, help: "Broker URL, mqtt://host:port (or DANG_MQTT_URL).")
    var mqttURL: String?

    @Option(name: .long, help: "Samples per second per tag.")
    var rate: Double = 5
    @Option(name: .long, help: "Seconds until the upset starts.")
    var upsetAfter: Double = 20
    @Option(name: .long, help: "Seconds the upset lasts.")
    var upsetDuration: Double = 20
    @Option(name: .long, help: "Repeat the upset every this many seconds (0: once).")
    var upsetEvery: Double = 0
    @Option(name: .long, help: "Tag to upset.")
    var upsetTag: String = "r1/cdu/cdu1/TI-101"
    @Option(name: .long, help: "Tag that drifts slowly from its normal value to past HIHI (none by default).")
    var driftTag: String?
    @Option(name: .long, help: "Seconds until the drift starts.")
    var driftAfter: Double = 30
    @Option(name: .long, help: "Minutes the drift takes to reach past HIHI.")
    var driftMinutes: Double = 10
    @Option(name: .long, help: "Stop after this many seconds (default: run until Ctrl-C).")
    var duration: Double?
    @Option(name: .long, help: "QoS of the published samples.")
    var qos: Int = 0
    @Option(name: .long, help: "Random seed.")
    var seed: UInt64 = 1

    func validate() throws {
        guard self.rate > 0, self.rate <= 10_000 else { throw ValidationError("--rate must be in (0, 10000]") }
        guard (0...2).contains(self.qos) else { throw ValidationError("--qos must be 0, 1 or 2") }
        guard self.driftMinutes > 0, self.driftMinutes <= 10_000, self.driftAfter >= 0 else {
            throw ValidationError("--drift-minutes must be in (0, 10000] and --drift-after at least 0")
        }
        guard self.upsetEvery == 0 || self.upsetEvery > self.upsetDuration else {
            throw ValidationError("--upset-every must be 0 or longer than --upset-duration")
        }
    }

    func run() async throws {
        let logger = makeLogger(level: self.configOptions.logLevel, format: self.configOptions.logFormat)
        var config = try self.configOptions.load(logger: logger)
        try ServerOptions(mqttURL: self.mqttURL, databaseURL: nil).apply(to: &config)
        var scenario = PlantSimulator.Scenario()
        scenario.rate = self.rate
        scenario.upsetAfter = self.upsetAfter
        scenario.upsetDuration = self.upsetDuration
        scenario.upsetEvery = self.upsetEvery
        scenario.upsetTag = self.upsetTag
        scenario.seed = self.seed
        guard config.topicMap.tags[self.upsetTag] != nil else {
            printError("--upset-tag \(self.upsetTag) is not in the topic map")
            throw ExitCode(2)
        }
        if let tag = self.driftTag {
            guard config.topicMap.tags[tag] != nil, tag != self.upsetTag else {
                printError("--drift-tag \(tag) is not in the topic map, or is the upset tag")
                throw ExitCode(2)
            }
            scenario.drift = PlantSimulator.Drift(tag: tag, after: self.driftAfter, duration: self.driftMinutes * 60)
        }
        let runner = SimulatorRunner(config: config, scenario: scenario, duration: self.duration, qos: self.qos, logger: logger)
        let published = try await runner.run()
        logger.notice("simulator stopped", metadata: ["sim.published": "\(published)"])
    }
}

extension ServerOptions {
    init(mqttURL: String?, databaseURL: String?) {
        self.init()
        self.mqttURL = mqttURL
        self.databaseURL = databaseURL
        self.spoolDir = nil
    }
}
