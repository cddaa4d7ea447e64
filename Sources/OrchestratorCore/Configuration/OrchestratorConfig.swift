import Foundation
import Yams
package import Mosquitto

/// The whole configuration of one orchestrator: `config/orchestrator.yaml` plus the topic map it names.
///
/// ## Configuration keys
/// - `orchestrator.llm`: `provider` (string), `base_url` (string), `model` (string), `api_key`
///   (string, secret, usually `${DEEPSEEK_API_KEY:-}`), `timeout` (duration).
/// - `orchestrator.modules.{forecasting,analysis,optimization,etl}`: `enabled` (bool), `timeout` (duration).
/// - `orchestrator.decision_engine`: `confidence_threshold` (0…1), `max_retries` (int), `cache_ttl` (duration).
/// - `mqtt`: `url` (`mqtt://host:port` or `mqtts://`), `client_id`, `username`, `password` (secret),
///   `protocol` (`v5` | `v311`), `keepalive` (duration), `clean_start` (bool), `subscribe_qos` (0–2),
///   `tcp_nodelay` (bool), `tls.{ca_file,ca_path,cert_file,key_file,verify_hostname}`.
/// - `database`: `url` (libpq URL or conninfo; empty means the `PG*` variables), `batch_size` (rows),
///   `flush_interval` (duration), `queue_capacity` (records).
/// - `topics`: `prefix` (default `apos`), `map` (topic-map file, relative to this file), `alert_qos`,
///   `max_payload_bytes`.
/// - `ingest`: `max_future_skew` (duration; samples stamped further ahead of the clock are refused),
///   `max_tag_bytes` (longest tag identifier), `evict_idle_after` (duration; idle unmapped tags are forgotten).
/// - `detection`: `ewma_alpha`, `warmup_samples`, `z_clear`, `sigma_floor`, `max_tags`, `anomaly.*`,
///   `alerts.*`, `trend.*`, `data_quality.*`, `multivariate.*`, `market_moves` (see docs/configuration.md).
package struct OrchestratorConfig: Sendable {
    package var llm: LLMSettings
    package var modules: [ModuleName: ModuleSettings]
    package var decisionEngine: DecisionEngineSettings
    /// What makes the orchestrator consider a module (`orchestrator.triggers`).
    package var triggers: [TriggerRule]
    /// The plant's time zone, for scheduled triggers (`orchestrator.time_zone`, IANA name).
    package var timeZone: String
    package var mqtt: MQTTSettings
    package var database: DatabaseSettings
    package var topics: TopicSettings
    package var detection: DetectionSettings
    package var api = APISettings()
    package var ingest = IngestSettings()
    package var topicMap: TopicMap
    /// Warnings found while reading (errors throw instead).
    package var warnings: [ConfigIssue]
}

/// The downstream modules (docs/configuration.md, "`orchestrator`", `modules.*`).
package enum ModuleName: String, Sendable, CaseIterable, Hashable {
    case forecasting
    case analysis
    case optimization
    case etl
}

/// `orchestrator.llm`.
package struct LLMSettings: Sendable {
    /// `deepseek`, `vllm`, `ollama`, `llamacpp` or `openai` (any other OpenAI-compatible server).
    package var provider = "deepseek"
    package var baseURL = "https://api.deepseek.com"
    package var path = "/v1/chat/completions"
    package var model = "deepseek-v4-flash"
    package var apiKey: String?
    package var enabled = true
    /// The hard total deadline of one call, retries included.
    package var timeout: Duration = .seconds(120)
    package var maxAttempts = 3
    package var maxConcurrent = 2
    package var maxTokens = 8192
    package var breakerThreshold = 5
    package var breakerCooldown: Duration = .seconds(60)

    static let providers = ["deepseek", "vllm", "ollama", "llamacpp", "openai"]

    /// Whether the advisor runs: enabled, and a key for the hosted APIs (self-hosted servers need none).
    package var isActive: Bool {
        self.enabled && (self.apiKey != nil || !["deepseek", "openai"].contains(self.provider))
    }
}

/// `api`: the HTTP front door (`docs/api.md`).
package struct APISettings: Sendable {
    package var enabled = true
    package var host = "127.0.0.1"
    package var port = 8080
    /// Bearer token of the `operate` role (everything); `DANG_API_TOKEN`.
    package var token: String?
    /// Bearer token of the `read` role (GET only); `DANG_API_READ_TOKEN`.
    package var readToken: String?
    package var maxBodyBytes = 1 << 20

    package init() {}

    /// Parses `HOST:PORT` (`[::1]:8080` for IPv6).
    package static func parseListen(_ text: String) -> (host: String, port: Int)? {
        guard let colon = text.lastIndex(of: ":") else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else { return nil }
        return (host, port)
    }
}

/// `mqtt`.
package struct MQTTSettings: Sendable {
    /// `dang-<host name>`: the same across restarts of one gateway, different between gateways.
    package static let defaultClientID: String = {
        var name = [CChar](repeating: 0, count: 256)
        let host = gethostname(&name, name.count) == 0
            ? String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : ""
        // Client ids are safest in [0-9A-Za-z-_]. MQTT 3.1.1 brokers only promise ids of up to 23
        // bytes; mosquitto and the v5 brokers take longer ones — set `client_id` for a strict broker.
        let safe = host.unicodeScalars.map { scalar -> Character in
            let allowed = ("0"..."9").contains(scalar) || ("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar) || scalar == "-" || scalar == "_"
            return allowed ? Character(scalar) : "-"
        }
        let suffix = String(safe.prefix(64))
        return suffix.isEmpty ? "dang-orchestrator" : "dang-\(suffix)"
    }()

    package var endpoint = MQTTEndpoint(host: "127.0.0.1", port: 1883, tls: false)
    /// Stable per instance (a persistent session is found again by it): `dang-<host name>` unless set.
    package var clientID = MQTTSettings.defaultClientID
    package var username: String?
    package var password: String?
    package var protocolVersion: MQTTConnectionOptions.ProtocolVersion = .v5
    package var keepAlive: Duration = .seconds(30)
    /// `false` by default: a persistent session, so QoS 1 samples published while the orchestrator
    /// is away (a restart, an upgrade) are kept by the broker and delivered when it returns, with the
    /// shipped configuration and not only as an opt-in (docs/integration.md, "The connection").
    /// Sparkplug B, whose host rules ask for a clean session, then gets a connection of its own
    /// (`<client_id>-spb`).
    package var cleanStart = false
    package var subscribeQoS = 1
    package var tcpNoDelay = true
    package var tls = MQTTConnectionOptions.TLS()
    /// MQTT v5 session expiry with `clean_start: false` (a persistent session).
    package var sessionExpiry: Duration = .seconds(3600)
    package var reconnectDelayMin: Duration = .seconds(1)
    package var reconnectDelayMax: Duration = .seconds(30)
    package var maxInflight: Int?
    package var receiveMaximum: Int?
    /// Outgoing messages (alerts, invocations, decisions) queued while the broker is away; beyond it
    /// they are dropped and counted (alerts and decisions stay in the record).
    package var maxQueued = 10_000
}

extension DetectionSettings {
    mutating func read(_ detection: YAMLSection) {
        self.ewmaAlpha = detection.double("ewma_alpha", default: self.ewmaAlpha, in: 0.0001...1)
        self.warmupSamples = detection.int("warmup_samples", default: self.warmupSamples, in: 2...1_000_000)
        self.zClear = detection.double("z_clear", default: self.zClear, in: 0.01...1000)
        self.sigmaFloor = detection.double("sigma_floor", default: self.sigmaFloor, in: 0...1)
        if let anomaly = detection.section("anomaly") {
            self.robustWindow = anomaly.int("window", default: self.robustWindow, in: 8...RobustWindow.maximumCapacity)
            self.windowStride = anomaly.int("window_stride", default: self.windowStride, in: 1...10_000)
            self.spikeShape = anomaly.double("spike_shape", default: self.spikeShape, in: 0.01...1000)
            self.tailWidening = anomaly.double("tail_widening", default: self.tailWidening, in: 0...1000)
            self.anomalyBins = anomaly.int("bins", default: self.anomalyBins, in: 2...16)
            self.noveltyAdaptation = anomaly.double("novelty_adaptation", default: self.noveltyAdaptation, in: 0...1)
            self.driftScore = anomaly.double("drift_score", default: self.driftScore, in: 0...1)
            self.anomalyRest = anomaly.int("rest", default: self.anomalyRest, in: 0...1_000_000)
            self.anomalyRestGrowth = anomaly.double("rest_growth", default: self.anomalyRestGrowth, in: 0...10)
            self.anomalyRestMax = anomaly.int("rest_max", default: self.anomalyRestMax, in: 0...10_000_000)
            self.gatePeriodicEvents = anomaly.bool("gate_periodic_events", default: self.gatePeriodicEvents)
            self.anomalyRestLevel = anomaly.double("rest_level", default: self.anomalyRestLevel, in: 0...1)
            self.anomalyRaise = anomaly.double("raise", default: self.anomalyRaise, in: 0.01...1)
            self.anomalyClear = anomaly.double("clear", default: self.anomalyClear, in: 0...1)
            self.anomalyMinSigmas = anomaly.double("min_sigmas", default: self.anomalyMinSigmas, in: 0...1000)
            self.shiftAlerts = anomaly.bool("shift_alerts", default: self.shiftAlerts)
            if self.anomalyClear > self.anomalyRaise {
                anomaly.diagnostics.report(.error, anomaly.keyPath("clear"), at: anomaly.markOf("clear"), "must not exceed raise")
            }
            anomaly.finish()
        }
        self.cusumK = detection.double("cusum_k", default: self.cusumK, in: 0...100)
        self.cusumH = detection.double("cusum_h", default: self.cusumH, in: 0.1...1000)
        self.maxTags = detection.int("max_tags", default: self.maxTags, in: 1...10_000_000)
        self.historyConfigured = detection.node("history") != nil
        self.historyDepth = detection.int("history", default: self.historyDepth, in: 0...100_000)
        if self.anomalyMinSigmas > 0, self.zClear >= self.anomalyMinSigmas {
            detection.diagnostics.report(
                .error, detection.keyPath("z_clear"), at: detection.markOf("z_clear"),
                "must be below anomaly.min_sigmas (\(self.anomalyMinSigmas)) so that alerts clear with hysteresis")
        }
        if let alerts = detection.section("alerts") {
            self.policy.onDelay = alerts.int("on_delay", default: self.policy.onDelay, in: 1...1_000_000)
            self.policy.offDelay = alerts.int("off_delay", default: self.policy.offDelay, in: 1...1_000_000)
            self.policy.cooldownMilliseconds = alerts.duration("cooldown", default: .zero).milliseconds
            alerts.finish()
        }
        if let trend = detection.section("trend") {
            self.trendEnabled = trend.bool("enabled", default: self.trendEnabled)
            self.trendBlock = trend.int("block", default: self.trendBlock, in: 1...100_000)
            self.trendWindow = trend.int("window", default: self.trendWindow, in: 4...1000)
            self.trendAlpha = trend.double("alpha", default: self.trendAlpha, in: 1e-12...0.5)
            self.trendClearAlpha = trend.double("clear_alpha", default: self.trendClearAlpha, in: 1e-12...1)
            self.trendMinSigmas = trend.double("min_sigmas", default: self.trendMinSigmas, in: 0...1000)
            if self.trendClearAlpha < self.trendAlpha {
                trend.diagnostics.report(
                    .error, trend.keyPath("clear_alpha"), at: trend.markOf("clear_alpha"), "must be at least alpha")
            }
            trend.finish()
        }
        if let unit = detection.section("multivariate") {
            self.multivariateEnabled = unit.bool("enabled", default: self.multivariateEnabled)
            self.multivariateBaseline = unit.int("baseline", default: self.multivariateBaseline, in: 20...1_000_000)
            self.multivariate.eigenvalueFloor = unit.double("eigenvalue_floor", default: self.multivariate.eigenvalueFloor, in: 1e-9...10)
            self.multivariate.varianceExplained = unit.double("variance_explained", default: self.multivariate.varianceExplained, in: 0.1...1)
            self.multivariate.lambda = unit.double("ewma_lambda", default: self.multivariate.lambda, in: 0.001...1)
            self.multivariate.kappa = unit.double("limit_widening", default: self.multivariate.kappa, in: 1...100)
            // `auto` (the default): the unit's Bonferroni limit, `MultivariateModel.derivedTagLimit`.
            if let text = unit.text("tag_sigmas")?.trimmingCharacters(in: .whitespaces), text != "auto" {
                if let sigmas = Double(text), (0...1000).contains(sigmas) {
                    self.multivariate.tagSigmas = sigmas
                } else {
                    unit.diagnostics.report(
                        .error, unit.keyPath("tag_sigmas"), at: unit.markOf("tag_sigmas"),
                        "expected auto or a number of standard deviations in 0...1000 (0: off), got \"\(text)\"")
                }
            }
            self.suppressTagAnomalies = unit.bool("suppress_tag_anomalies", default: self.suppressTagAnomalies)
            unit.finish()
        }
        if let quality = detection.section("data_quality") {
            self.gapFactor = quality.double("gap_factor", default: self.gapFactor, in: 1...1_000_000)
            self.dataQualityClearAfter = quality.int("clear_after", default: self.dataQualityClearAfter, in: 1...1_000_000)
            quality.finish()
        }
        if let node = detection.node("market_moves") {
            guard case .sequence(let items) = node else {
                detection.diagnostics.report(
                    .error, detection.keyPath("market_moves"), at: node.mark, "expected a list of {window, threshold_percent}")
                detection.finish()
                return
            }
            var moves: [MarketMove] = []
            for (index, item) in items.enumerated() {
                guard let mapping = item.mapping else {
                    detection.diagnostics.report(
                        .error, detection.keyPath("market_moves[\(index)]"), at: item.mark, "expected {window, threshold_percent}")
                    continue
                }
                let entry = YAMLSection(
                    mapping: mapping, path: detection.keyPath("market_moves[\(index)]"), mark: item.mark,
                    diagnostics: detection.diagnostics)
                moves.append(
                    MarketMove(
                        window: entry.duration("window", default: .seconds(900)),
                        thresholdPercent: entry.double("threshold_percent", default: 2, in: 0.0001...1_000_000)))
                entry.finish()
            }
            self.marketMoves = moves
        }
        detection.finish()
    }
}

extension MQTTSettings {
    /// Points at a broker; credentials in the URL replace configured ones.
    mutating func use(_ endpoint: MQTTEndpoint) {
        self.endpoint = endpoint
        if let user = endpoint.username { self.username = user }
        if let password = endpoint.password { self.password = password }
    }
}

/// `database`.
package struct DatabaseSettings: Sendable {
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
    /// How long finished rows are kept, per table, and how often retention runs.
    package var retention: [Retention.Rule] = [
        .init(table: "alerts", keep: .seconds(90 * 86400)), .init(table: "decisions", keep: .seconds(365 * 86400)),
        .init(table: "invocations", keep: .seconds(365 * 86400)), .init(table: "llm_exchanges", keep: .seconds(90 * 86400)),
        .init(table: "tag_state", keep: .seconds(30 * 86400)),
    ]
    package var retentionInterval: Duration = .seconds(600)
}

/// `ingest`: the rules every input format (JSON, batches, Sparkplug) is held to.
package struct IngestSettings: Sendable {
    /// A sample stamped more than this ahead of the wall clock is refused (a mis-set source clock
    /// would otherwise pin its tag's clock in the future and blind it).
    package var maxFutureSkew: Duration {
        get { .milliseconds(self.maxFutureSkewMilliseconds) }
        set { self.maxFutureSkewMilliseconds = newValue.milliseconds }
    }
    /// The same in milliseconds, as the per-sample check reads it (no `Duration` arithmetic per sample).
    private var maxFutureSkewMilliseconds: Int64 = 300_000
    /// Longest tag identifier accepted, in UTF-8 bytes (a topic level can be 64 KiB; PostgreSQL's
    /// btree index refuses keys past about 2.7 KB).
    package var maxTagBytes = 512
    /// A tag not in the topic map that got no sample for this long is forgotten (its state kept in
    /// `tag_state`), so junk topics cannot fill `detection.max_tags` for good; zero: never.
    package var evictIdleAfter: Duration = .seconds(86_400)

    /// Whether a sample time is acceptable at `now` (epoch ms): not beyond the skew, and inside
    /// what PostgreSQL's `timestamptz` holds.
    package func accepts(sampleTime: Int64, now: Int64) -> Bool {
        let time = Double(sampleTime)
        return RFC3339.storableRange.contains(time) && time <= Double(now) + Double(self.maxFutureSkewMilliseconds)
    }
}

/// `topics`.
package struct TopicSettings: Sendable {
    package var prefix = "apos"
    package var mapFile = ""
    package var alertQoS = 1
    package var maxPayloadBytes = 65_536
    /// Subscribe to `spBv1.0/#` and ingest Sparkplug B.
    package var sparkplug = true
    /// Answer sequence gaps and data before birth with an NCMD `Node Control/Rebirth`.
    package var sparkplugRebirth = true
}

/// `detection`: the per-tag detectors and the alert policy shared by every condition.
package struct DetectionSettings: Sendable {
    package init() {}

    /// Good samples kept per tag for module invocations (`detection.history`); when the file does
    /// not set it, what the enabled modules need (see ``OrchestratorConfig/sizeHistory()``).
    package var historyDepth = 120
    /// Whether `detection.history` was set in the file.
    package var historyConfigured = false
    /// The least history kept when no module needs more: QoS 1 redeliveries are recognised in it.
    package static let minimumHistory = 16
    /// Weight of the newest sample in the EWMA mean and variance.
    package var ewmaAlpha = 0.05
    /// Samples before a tag's anomaly score may raise an alert.
    package var warmupSamples = 10
    /// Robust |z| below which a raised anomaly clears (hysteresis; below `anomalyMinSigmas`).
    package var zClear = 2.0
    /// Smallest standard deviation used, as a fraction of |mean| (keeps quiet tags from dividing by ~0).
    package var sigmaFloor = 0.001
    /// Values in the robust (quantile) window of the spike score, and the stride at which samples
    /// enter it (256 × 4 spans about 1,000 samples).
    package var robustWindow = 256
    package var windowStride = 4
    /// Spike score shaping: z / (z + spike_shape).
    package var spikeShape = 10.0
    /// The spike's scale is at least the 1–99 % spread divided by this (0: off).
    package var tailWidening = 10.0
    /// Quantisation levels of the pattern-novelty view.
    package var anomalyBins = 8
    /// EWMA rate at which the novelty weighting adapts, and where it starts.
    package var noveltyAdaptation = 0.002
    package var noveltyInitialRate = 0.5
    /// Score the CUSUM contributes when it signals a persistent shift.
    package var driftScore = 0.0
    /// After a raw score of `anomalyRestLevel`, the score is held at 0 for `anomalyRest` samples.
    package var anomalyRest = 84
    /// The rest period grows by this many samples per sample seen, up to `anomalyRestMax`.
    package var anomalyRestGrowth = 0.032
    package var anomalyRestMax = 500
    /// Also suppress detections (not only spikes) that recur at a fixed interval.
    package var gatePeriodicEvents = true
    package var anomalyRestLevel = 0.65
    /// Anomaly score that raises an anomaly alert, and below which it clears.
    package var anomalyRaise = 0.65
    package var anomalyClear = 0.5
    /// An anomaly alert also needs the sample's robust z to reach this (0 = the score alone decides).
    package var anomalyMinSigmas = 5.0
    /// Raise an anomaly alert when the CUSUM signals a small persistent shift.
    package var shiftAlerts = true
    /// CUSUM allowance k and decision interval h, in σ.
    package var cusumK = 0.5
    package var cusumH = 20.0
    /// Most distinct tags tracked; samples of further tags are rejected and counted.
    package var maxTags = 100_000
    /// On/off delays and cooldown for every condition.
    package var policy = AlertPolicy()
    /// Trend detection on block means: on/off, block size, window, significance to raise and to clear.
    package var trendEnabled = true
    package var trendBlock = 10
    package var trendWindow = 30
    package var trendAlpha = 1e-4
    package var trendClearAlpha = 0.05
    /// Without a tag's `min_trend`, a trend must move the value this many σ across the window.
    package var trendMinSigmas = 3.0
    /// A sample arriving more than this many mean intervals after the previous one is a gap.
    package var gapFactor = 10.0
    /// Clean samples before a data-quality alert clears.
    package var dataQualityClearAfter = 10
    /// Multivariate unit monitoring: on/off, baseline length (evaluations), model settings, and
    /// whether a trained unit's tags stop raising their own anomaly alerts.
    package var multivariateEnabled = true
    package var multivariateBaseline = 500
    package var multivariate = MultivariateModel.Settings()
    package var suppressTagAnomalies = true
    /// Market move windows: percentage thresholds over time windows, for `market/…` tags.
    package var marketMoves: [MarketMove] = [
        MarketMove(window: .seconds(900), thresholdPercent: 2), MarketMove(window: .seconds(14_400), thresholdPercent: 5),
    ]

    /// One market-move rule.
    package struct MarketMove: Sendable, Equatable {
        package var window: Duration
        package var thresholdPercent: Double
    }
}

extension OrchestratorConfig {
    /// The built-in defaults with the sample topic map, for tests and tools.
    package static func defaults(topicMap: TopicMap = TopicMap()) -> OrchestratorConfig {
        var modules: [ModuleName: ModuleSettings] = [:]
        for name in ModuleName.allCases { modules[name] = ModuleSettings(name) }
        return OrchestratorConfig(
            llm: LLMSettings(), modules: modules, decisionEngine: DecisionEngineSettings(), triggers: [], timeZone: "UTC",
            mqtt: MQTTSettings(),
            database: DatabaseSettings(), topics: TopicSettings(), detection: DetectionSettings(),
            topicMap: topicMap, warnings: [])
    }

    /// Reads a configuration file and the topic map it names, reporting every problem at once.
    package static func load(
        file path: String, environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(ConfigError) -> OrchestratorConfig {
        let diagnostics = ConfigDiagnostics(file: path, environment: environment)
        guard let text = Self.readFile(path, diagnostics: diagnostics), let root = diagnostics.parseRoot(text) else {
            throw ConfigError(issues: diagnostics.issues)
        }
        var config = OrchestratorConfig.defaults()
        config.read(root)
        root.finish()

        var issues = diagnostics.issues
        if !config.topics.mapFile.isEmpty {
            let base = URL(fileURLWithPath: path).deletingLastPathComponent()
            let mapPath =
                config.topics.mapFile.hasPrefix("/")
                ? config.topics.mapFile : base.appendingPathComponent(config.topics.mapFile).path
            do {
                config.topicMap = try TopicMap.load(file: mapPath, environment: environment)
                issues += config.topicMap.warnings
            } catch {
                issues += error.issues
            }
        }
        if issues.contains(where: { $0.severity == .error }) {
            throw ConfigError(issues: issues)
        }
        config.warnings = issues
        return config
    }

    static func readFile(_ path: String, diagnostics: ConfigDiagnostics) -> String? {
        guard let data = FileManager.default.contents(atPath: path) else {
            let exists = FileManager.default.fileExists(atPath: path)
            diagnostics.report(.error, "", at: nil, exists ? "cannot read the file" : "no such file")
            return nil
        }
        guard let text = String(data: data, encoding: .utf8) else {
            diagnostics.report(.error, "", at: nil, "the file is not valid UTF-8")
            return nil
        }
        return text
    }

    private mutating func read(_ root: YAMLSection) {
        if let orchestrator = root.section("orchestrator") {
            if let llm = orchestrator.section("llm") {
                self.llm.provider = llm.string("provider", default: self.llm.provider)
                if !LLMSettings.providers.contains(self.llm.provider) {
                    llm.diagnostics.report(
                        .error, llm.keyPath("provider"), at: llm.markOf("provider"),
                        "\"\(self.llm.provider)\" is not one of \(LLMSettings.providers.joined(separator: ", "))")
                }
                self.llm.baseURL = llm.string("base_url", default: self.llm.baseURL)
                if !(self.llm.baseURL.hasPrefix("http://") || self.llm.baseURL.hasPrefix("https://")) {
                    llm.diagnostics.report(.error, llm.keyPath("base_url"), at: llm.markOf("base_url"), "must start with http:// or https://")
                }
                self.llm.path = llm.string("path", default: self.llm.path)
                self.llm.model = llm.string("model", default: self.llm.model)
                self.llm.apiKey = llm.optionalString("api_key")
                self.llm.enabled = llm.bool("enabled", default: self.llm.enabled)
                self.llm.timeout = llm.duration("timeout", default: self.llm.timeout)
                self.llm.maxAttempts = llm.int("max_attempts", default: self.llm.maxAttempts, in: 1...10)
                self.llm.maxConcurrent = llm.int("max_concurrent", default: self.llm.maxConcurrent, in: 1...100)
                self.llm.maxTokens = llm.int("max_tokens", default: self.llm.maxTokens, in: 16...1_000_000)
                self.llm.breakerThreshold = llm.int("breaker_threshold", default: self.llm.breakerThreshold, in: 1...1000)
                self.llm.breakerCooldown = llm.duration("breaker_cooldown", default: self.llm.breakerCooldown)
                llm.finish()
                if self.llm.enabled && !self.llm.isActive {
                    llm.diagnostics.report(
                        .warning, llm.keyPath("api_key"), at: llm.markOf("api_key"),
                        "no API key: the LLM advisor will be off (set DEEPSEEK_API_KEY)")
                }
            }
            if let modules = orchestrator.section("modules") {
                self.readModules(modules)
            }
            if let engine = orchestrator.section("decision_engine") {
                self.decisionEngine.read(engine)
            }
            self.timeZone = orchestrator.string("time_zone", default: self.timeZone)
            if TimeZone.configured(self.timeZone) == nil {
                orchestrator.diagnostics.report(
                    .error, orchestrator.keyPath("time_zone"), at: orchestrator.markOf("time_zone"),
                    "unknown time zone \"\(self.timeZone)\" (use an IANA name such as Europe/Amsterdam or UTC)")
                self.timeZone = "UTC"
            }
            if let node = orchestrator.node("triggers") {
                self.triggers = TriggerRule.read(node, path: orchestrator.keyPath("triggers"), diagnostics: orchestrator.diagnostics)
            }
            orchestrator.finish()
        }
        if let mqtt = root.section("mqtt") {
            self.readMQTT(mqtt)
        }
        if let api = root.section("api") {
            self.api.enabled = api.bool("enabled", default: self.api.enabled)
            let listen = api.string("listen", default: "\(self.api.host):\(self.api.port)")
            if let parsed = APISettings.parseListen(listen) {
                (self.api.host, self.api.port) = parsed
            } else {
                api.diagnostics.report(.error, api.keyPath("listen"), at: api.markOf("listen"), "expected HOST:PORT, e.g. 127.0.0.1:8080")
            }
            self.api.token = api.optionalString("token")
            self.api.readToken = api.optionalString("read_token")
            self.api.maxBodyBytes = api.int("max_body_bytes", default: self.api.maxBodyBytes, in: 1024...(64 << 20))
            if self.api.enabled && self.api.token == nil && self.api.readToken == nil {
                api.diagnostics.report(
                    .warning, api.keyPath("token"), at: api.markOf("token"),
                    "no API token: only GET /status and GET /metrics will answer (set DANG_API_TOKEN)")
            }
            api.finish()
        }
        if let database = root.section("database") {
            self.database.url = database.string("url", default: self.database.url)
            self.database.batchSize = database.int("batch_size", default: self.database.batchSize, in: 1...100_000)
            self.database.batchBytes = database.int("batch_bytes", default: self.database.batchBytes, in: 65_536...1 << 30)
            self.database.flushInterval = database.duration("flush_interval", default: self.database.flushInterval)
            if self.database.flushInterval < .milliseconds(1) {
                database.diagnostics.report(
                    .error, database.keyPath("flush_interval"), at: database.markOf("flush_interval"), "must be at least 1ms")
                self.database.flushInterval = .milliseconds(50)
            }
            self.database.queueCapacity = database.int(
                "queue_capacity", default: self.database.queueCapacity, in: 1...100_000_000)
            self.database.spoolDirectory = database.string("spool_dir", default: self.database.spoolDirectory)
            self.database.spoolCapacity = database.int("spool_max_bytes", default: self.database.spoolCapacity, in: 1024...(1 << 50))
            self.database.spoolFsync = database.choice("spool_fsync", default: self.database.spoolFsync)
            self.database.snapshotInterval = database.duration("snapshot_interval", default: self.database.snapshotInterval)
            if let retention = database.section("retention") {
                self.database.retentionInterval = retention.duration("interval", default: self.database.retentionInterval)
                self.database.retention = Retention.tables.compactMap { table in
                    let current = self.database.retention.first { $0.table == table }?.keep ?? .seconds(90 * 86400)
                    let keep = retention.duration(table, default: current)
                    return keep > .zero ? Retention.Rule(table: table, keep: keep) : nil
                }
                retention.finish()
            }
            database.finish()
        }
        if let topics = root.section("topics") {
            let prefix = topics.string("prefix", default: self.topics.prefix)
            if prefix.isEmpty || prefix.contains(where: { "+#".contains($0) }) || prefix.hasPrefix("/") || prefix.hasSuffix("/") {
                topics.diagnostics.report(
                    .error, topics.keyPath("prefix"), at: topics.markOf("prefix"),
                    "must be a non-empty topic without wildcards or leading/trailing '/'")
            } else {
                self.topics.prefix = prefix
            }
            self.topics.mapFile = topics.string("map", default: self.topics.mapFile)
            self.topics.alertQoS = topics.int("alert_qos", default: self.topics.alertQoS, in: 0...2)
            self.topics.sparkplug = topics.bool("sparkplug", default: self.topics.sparkplug)
            self.topics.sparkplugRebirth = topics.bool("sparkplug_rebirth", default: self.topics.sparkplugRebirth)
            self.topics.maxPayloadBytes = topics.int(
                "max_payload_bytes", default: self.topics.maxPayloadBytes, in: 16...268_435_455)
            topics.finish()
        }
        if let detection = root.section("detection") {
            self.detection.read(detection)
        }
        if let ingest = root.section("ingest") {
            self.ingest.maxFutureSkew = ingest.duration("max_future_skew", default: self.ingest.maxFutureSkew)
            self.ingest.maxTagBytes = ingest.int("max_tag_bytes", default: self.ingest.maxTagBytes, in: 16...2048)
            self.ingest.evictIdleAfter = ingest.duration("evict_idle_after", default: self.ingest.evictIdleAfter)
            ingest.finish()
        }
        self.sizeHistory()
    }

    /// Unless `detection.history` is set, keeps as many samples per tag as the enabled modules
    /// read (their `window` and `min_history`), at least ``DetectionSettings/minimumHistory``:
    /// 16 bytes per sample of every tag, so 10,000 tags with windows of 10 need 1.6 MB, not 19.
    mutating func sizeHistory() {
        guard !self.detection.historyConfigured else { return }
        let needed = self.modules.values.filter(\.enabled).map { max($0.window, $0.minHistory) }.max() ?? 0
        self.detection.historyDepth = max(DetectionSettings.minimumHistory, needed)
    }

    private mutating func readMQTT(_ mqtt: YAMLSection) {
        if let url = mqtt.text("url") {
            switch MQTTEndpoint.parse(url) {
            case .success(let endpoint):
                self.mqtt.use(endpoint)
            case .failure(let problem):
                mqtt.diagnostics.report(.error, mqtt.keyPath("url"), at: mqtt.markOf("url"), problem.message)
            }
        }
        self.mqtt.clientID = mqtt.string("client_id", default: self.mqtt.clientID)
        if let user = mqtt.optionalString("username") { self.mqtt.username = user }
        if let password = mqtt.optionalString("password") { self.mqtt.password = password }
        self.mqtt.protocolVersion = mqtt.choice("protocol", default: self.mqtt.protocolVersion)
        self.mqtt.keepAlive = mqtt.duration("keepalive", default: self.mqtt.keepAlive)
        if self.mqtt.keepAlive < .seconds(5) || self.mqtt.keepAlive > .seconds(65535) {
            mqtt.diagnostics.report(
                .error, mqtt.keyPath("keepalive"), at: mqtt.markOf("keepalive"), "must be between 5 s and 65535 s (MQTT's limit)")
            self.mqtt.keepAlive = .seconds(30)
        }
        self.mqtt.cleanStart = mqtt.bool("clean_start", default: self.mqtt.cleanStart)
        self.mqtt.subscribeQoS = mqtt.int("subscribe_qos", default: self.mqtt.subscribeQoS, in: 0...2)
        self.mqtt.tcpNoDelay = mqtt.bool("tcp_nodelay", default: self.mqtt.tcpNoDelay)
        self.mqtt.sessionExpiry = mqtt.duration("session_expiry", default: self.mqtt.sessionExpiry)
        if self.mqtt.sessionExpiry > .seconds(Int64(UInt32.max)) {
            mqtt.diagnostics.report(.error, mqtt.keyPath("session_expiry"), at: mqtt.markOf("session_expiry"), "at most 4294967295 s")
            self.mqtt.sessionExpiry = .seconds(3600)
        }
        self.mqtt.reconnectDelayMin = mqtt.duration("reconnect_delay_min", default: self.mqtt.reconnectDelayMin)
        self.mqtt.reconnectDelayMax = mqtt.duration("reconnect_delay_max", default: self.mqtt.reconnectDelayMax)
        if self.mqtt.reconnectDelayMin < .seconds(1) || self.mqtt.reconnectDelayMax < self.mqtt.reconnectDelayMin {
            mqtt.diagnostics.report(
                .error, mqtt.keyPath("reconnect_delay_min"), at: mqtt.markOf("reconnect_delay_min"),
                "reconnect_delay_min must be at least 1s and not above reconnect_delay_max")
        }
        self.mqtt.maxQueued = mqtt.int("max_queued", default: self.mqtt.maxQueued, in: 0...10_000_000)
        if mqtt.text("max_inflight") != nil { self.mqtt.maxInflight = mqtt.int("max_inflight", default: 20, in: 1...65535) }
        if mqtt.text("receive_maximum") != nil { self.mqtt.receiveMaximum = mqtt.int("receive_maximum", default: 65535, in: 1...65535) }
        if let tls = mqtt.section("tls") {
            self.mqtt.tls.caFile = tls.optionalString("ca_file")
            self.mqtt.tls.caPath = tls.optionalString("ca_path")
            self.mqtt.tls.certFile = tls.optionalString("cert_file")
            self.mqtt.tls.keyFile = tls.optionalString("key_file")
            self.mqtt.tls.verifyHostname = tls.bool("verify_hostname", default: true)
            if let version = tls.optionalString("version") {
                if ["tlsv1.2", "tlsv1.3"].contains(version) {
                    self.mqtt.tls.version = version
                } else {
                    tls.diagnostics.report(.error, tls.keyPath("version"), at: tls.markOf("version"), "\"\(version)\" is not one of tlsv1.2, tlsv1.3")
                }
            }
            self.mqtt.tls.psk = tls.optionalString("psk")
            self.mqtt.tls.pskIdentity = tls.optionalString("psk_identity")
            if (self.mqtt.tls.psk == nil) != (self.mqtt.tls.pskIdentity == nil) {
                tls.diagnostics.report(.error, tls.keyPath("psk"), at: tls.mark, "psk and psk_identity must be given together")
            }
            if let psk = self.mqtt.tls.psk, psk.isEmpty || !psk.allSatisfy(\.isHexDigit) {
                tls.diagnostics.report(.error, tls.keyPath("psk"), at: tls.markOf("psk"), "the pre-shared key is hexadecimal")
            }
            if (self.mqtt.tls.certFile == nil) != (self.mqtt.tls.keyFile == nil) {
                tls.diagnostics.report(
                    .error, tls.keyPath("cert_file"), at: tls.mark, "cert_file and key_file must be given together")
            }
            tls.finish()
        }
        mqtt.finish()
    }

    /// Applies the server overrides of `dang run`: command-line flags first, then `DANG_MQTT_URL`
    /// and `DATABASE_URL` from the environment, then the file.
    package mutating func applyOverrides(
        mqttURL: String?, databaseURL: String?, environment: [String: String]
    ) throws(ConfigError) {
        if let url = mqttURL ?? environment["DANG_MQTT_URL"].flatMap({ $0.isEmpty ? nil : $0 }) {
            switch MQTTEndpoint.parse(url) {
            case .success(let endpoint):
                self.mqtt.use(endpoint)
            case .failure(let problem):
                let source = mqttURL != nil ? "--mqtt-url" : "DANG_MQTT_URL"
                throw ConfigError(issues: [
                    ConfigIssue(severity: .error, file: source, line: 0, column: 0, key: "", message: problem.message)
                ])
            }
        }
        if let url = databaseURL ?? environment["DATABASE_URL"].flatMap({ $0.isEmpty ? nil : $0 }) {
            self.database.url = url
        }
    }

    /// The libmosquitto options for this configuration, with the given last will.
    package func connectionOptions(will: MQTTConnectionOptions.Will?) -> MQTTConnectionOptions {
        var tls: MQTTConnectionOptions.TLS? = nil
        if self.mqtt.endpoint.tls {
            var settings = self.mqtt.tls
            if settings.caFile == nil && settings.caPath == nil { settings.caPath = "/etc/ssl/certs" }
            tls = settings
        }
        var options = MQTTConnectionOptions(
            host: self.mqtt.endpoint.host, port: self.mqtt.endpoint.port, clientID: self.mqtt.clientID,
            username: self.mqtt.username, password: self.mqtt.password, protocolVersion: self.mqtt.protocolVersion,
            keepAlive: max(5, Int(self.mqtt.keepAlive.components.seconds)), cleanStart: self.mqtt.cleanStart,
            tcpNoDelay: self.mqtt.tcpNoDelay, tls: tls, will: will,
            reconnectDelayMin: UInt32(max(1, self.mqtt.reconnectDelayMin.components.seconds)),
            reconnectDelayMax: UInt32(max(1, self.mqtt.reconnectDelayMax.components.seconds)))
        options.sessionExpiry = UInt32(clamping: self.mqtt.sessionExpiry.components.seconds)
        options.maxInflight = self.mqtt.maxInflight
        options.receiveMaximum = self.mqtt.receiveMaximum
        return options
    }
}

extension MQTTConnectionOptions.ProtocolVersion: CaseIterable {
    package static var allCases: [Self] { [.v5, .v311] }
}

/// Where the broker is: parsed from `mqtt://[user[:password]@]host[:port]` or `mqtts://…`.
package struct MQTTEndpoint: Sendable, Equatable {
    package var host: String
    package var port: Int
    package var tls: Bool
    package var username: String?
    package var password: String?

    package init(host: String, port: Int, tls: Bool, username: String? = nil, password: String? = nil) {
        self.host = host
        self.port = port
        self.tls = tls
        self.username = username
        self.password = password
    }

    /// Why a URL was refused.
    package struct Problem: Error, Sendable {
        package let message: String
    }

    /// Parses `mqtt[s]://[user[:password]@]host[:port][/]` (also `tcp://`, `ssl://`; an IPv6 host in
    /// brackets; user and password percent-encoded). Read by hand rather than with `URLComponents`,
    /// whose host getters run ICU's IDNA conversion and map megabytes of ICU into the process.
    package static func parse(_ text: String) -> Result<MQTTEndpoint, Problem> {
        guard let separator = text.range(of: "://"), !text[..<separator.lowerBound].isEmpty else {
            return .failure(Problem(message: "\"\(text)\" is not a URL; expected mqtt://host:port or mqtts://host:port"))
        }
        let scheme = text[..<separator.lowerBound].lowercased()
        let tls: Bool
        switch scheme {
        case "mqtt", "tcp": tls = false
        case "mqtts", "ssl": tls = true
        default:
            return .failure(Problem(message: "unsupported scheme \"\(scheme)\"; expected mqtt:// or mqtts://"))
        }
        var rest = text[separator.upperBound...]
        if let slash = rest.firstIndex(of: "/") {
            guard rest[slash...] == "/" else {
                return .failure(Problem(message: "\"\(text)\" has a path; expected mqtt://host:port"))
            }
            rest = rest[..<slash]
        }
        var username: String? = nil
        var password: String? = nil
        if let at = rest.lastIndex(of: "@") {
            let userInfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
            let colon = userInfo.firstIndex(of: ":")
            username = String(userInfo[..<(colon ?? userInfo.endIndex)]).removingPercentEncoding
            password = colon.flatMap { String(userInfo[userInfo.index(after: $0)...]).removingPercentEncoding }
            guard username != nil, colon == nil || password != nil else {
                return .failure(Problem(message: "\"\(text)\" has a malformed percent-encoded user or password"))
            }
        }
        var host = rest
        var portText: Substring? = nil
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else {
                return .failure(Problem(message: "\"\(text)\" has an unclosed IPv6 address; expected mqtt://[::1]:port"))
            }
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if !after.isEmpty {
                guard after.first == ":" else { return .failure(Problem(message: "\"\(text)\" has text after its IPv6 address")) }
                portText = after.dropFirst()
            }
        } else if let colon = rest.lastIndex(of: ":") {
            host = rest[..<colon]
            portText = rest[rest.index(after: colon)...]
        }
        guard !host.isEmpty else {
            return .failure(Problem(message: "\"\(text)\" has no host; expected mqtt://host:port"))
        }
        var port = tls ? 8883 : 1883
        if let portText {
            guard !portText.isEmpty, portText.count <= 5, portText.allSatisfy({ $0.isASCII && $0.isNumber }), let number = Int(portText)
            else {
                return .failure(Problem(message: "port \"\(portText)\" is not a number 1...65535"))
            }
            guard (1...65535).contains(number) else {
                return .failure(Problem(message: "port \(number) is out of range 1...65535"))
            }
            port = number
        }
        return .success(MQTTEndpoint(host: String(host), port: port, tls: tls, username: username, password: password))
    }
}

extension TimeZone {
    /// The time zone of `orchestrator.time_zone`: UTC and GMT without asking ICU (whose zone
    /// database maps megabytes into the process), any other IANA name through it.
    static func configured(_ name: String) -> TimeZone? {
        switch name {
        case "UTC", "GMT", "Etc/UTC", "Etc/GMT": .gmt
        default: TimeZone(identifier: name)
        }
    }
}
