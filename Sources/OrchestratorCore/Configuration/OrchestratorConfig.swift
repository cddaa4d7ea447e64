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
    /// `instance` and `ha`.
    package var availability = AvailabilitySettings()
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
        if config.availability.isSharded {
            // Hashing few units can leave shards with none: say where the units land.
            let shards = ShardMap(count: config.availability.shards, topicMap: config.topicMap)
            let used = shards.units.indices.filter { !shards.units[$0].isEmpty }
            if used.count < min(shards.count, shards.units.joined().count) {
                let checker = ConfigDiagnostics(file: path, environment: environment)
                checker.report(
                    .warning, "sharding.shards", at: nil,
                    "the topic map's \(shards.units.joined().count) units land on shard(s) \(used.map(String.init).joined(separator: ", ")) "
                        + "of \(shards.count): the other shards carry no unit (a unit's shard is the hash of its name; another count "
                        + "spreads them differently: docs/availability.md, \"Sharding\")")
                issues += checker.issues
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
        var apiKeyMark: Mark? = nil
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
                apiKeyMark = llm.markOf("api_key")
                llm.finish()
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
        // DeepSeek's key comes from the environment when the file does not name one, with or without
        // an `llm:` section, as the API tokens do; a hosted advisor without a key is worth a warning.
        if self.llm.apiKey == nil && self.llm.provider == "deepseek", let key = root.diagnostics.environment["DEEPSEEK_API_KEY"], !key.isEmpty {
            self.llm.apiKey = key
        }
        if self.llm.enabled && !self.llm.isActive {
            root.diagnostics.report(
                .warning, "orchestrator.llm.api_key", at: apiKeyMark,
                "no API key: the LLM advisor will be off (set DEEPSEEK_API_KEY)")
        }
        if let instance = root.section("instance") {
            let id = instance.string("id", default: self.availability.instanceID)
            if AvailabilitySettings.isValid(id) {
                self.availability.instanceID = id
            } else {
                instance.diagnostics.report(.error, instance.keyPath("id"), at: instance.markOf("id"), "must be 1–64 characters of A–Z, a–z, 0–9, -, _ or .")
            }
            // The default client id follows the instance id (set `mqtt.client_id` to fix another).
            self.mqtt.clientID = "dang-\(self.availability.instanceID)"
        }
        if let ha = root.section("ha") {
            self.availability.enabled = ha.bool("enabled", default: self.availability.enabled)
            self.availability.lease = ha.duration("lease", default: self.availability.lease)
            if self.availability.lease < .seconds(1) || self.availability.lease > .seconds(60) {
                ha.diagnostics.report(.error, ha.keyPath("lease"), at: ha.markOf("lease"), "must be 1s…60s")
            }
        }
        if let sharding = root.section("sharding") {
            let shards = sharding.int("shards", default: self.availability.shards, in: 1...AvailabilitySettings.maxShards)
            if shards > 1 && !self.availability.enabled {
                sharding.diagnostics.report(
                    .error, sharding.keyPath("shards"), at: sharding.markOf("shards"),
                    "shards are leased like the active role: set ha.enabled: true (or shards: 1)")
            } else {
                self.availability.shards = shards
            }
        }
        if let mqtt = root.section("mqtt") {
            self.readMQTT(mqtt)
        }
        var tokenMark: Mark? = nil
        if let api = root.section("api") {
            tokenMark = api.markOf("token")
            self.api.enabled = api.bool("enabled", default: self.api.enabled)
            let listen = api.string("listen", default: "\(self.api.host):\(self.api.port)")
            if let parsed = APISettings.parseListen(listen) {
                (self.api.host, self.api.port) = parsed
            } else {
                api.diagnostics.report(.error, api.keyPath("listen"), at: api.markOf("listen"), "expected HOST:PORT, e.g. 127.0.0.1:8080")
            }
            self.api.token = api.optionalString("token")
            self.api.readToken = api.optionalString("read_token")
            // A token may come from a file instead (a secret mounted by systemd's LoadCredential=
            // or a container runtime): its content, without the line break at its end.
            for (key, fileKey) in [("token", "token_file"), ("read_token", "read_token_file")] {
                guard let path = api.filePath(fileKey) else { continue }
                if (key == "token" ? self.api.token : self.api.readToken) != nil {
                    api.diagnostics.report(.error, api.keyPath(fileKey), at: api.markOf(fileKey), "give \(key) or \(fileKey), not both")
                    continue
                }
                guard let data = FileManager.default.contents(atPath: path) else {
                    api.diagnostics.report(.error, api.keyPath(fileKey), at: api.markOf(fileKey), "cannot read \(path)")
                    continue
                }
                let token = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                guard !token.isEmpty, token.utf8.count <= 4096, !token.contains(where: { $0.isWhitespace || $0.isNewline }) else {
                    api.diagnostics.report(
                        .error, api.keyPath(fileKey), at: api.markOf(fileKey), "\(path) must hold one token (1–4,096 bytes, no spaces)")
                    continue
                }
                if key == "token" { self.api.token = token } else { self.api.readToken = token }
            }
            self.api.maxBodyBytes = api.int("max_body_bytes", default: self.api.maxBodyBytes, in: 1024...(64 << 20))
            self.api.allowPlaintext = api.bool("allow_plaintext", default: self.api.allowPlaintext)
            self.api.failedAuthPerMinute = api.int("failed_auth_per_minute", default: self.api.failedAuthPerMinute, in: 1...100_000)
            if let tls = api.section("tls") { self.api.tls = APISettings.TLSSettings.read(tls) }
            if let refusal = self.api.plaintextRefusal {
                api.diagnostics.report(.error, api.keyPath("listen"), at: api.markOf("listen"), refusal)
            }
            api.finish()
        }
        // Both tokens come from the environment when the file does not name them, with or without
        // an `api:` section; no token at all is worth a warning either way.
        let environment = root.diagnostics.environment
        if self.api.token == nil, let token = environment["DANG_API_TOKEN"], !token.isEmpty { self.api.token = token }
        if self.api.readToken == nil, let token = environment["DANG_API_READ_TOKEN"], !token.isEmpty { self.api.readToken = token }
        if self.api.enabled && self.api.token == nil && self.api.readToken == nil {
            root.diagnostics.report(
                .warning, "api.token", at: tokenMark,
                "no API token: only GET /status, /metrics, /livez and /readyz will answer (set DANG_API_TOKEN, and DANG_API_READ_TOKEN for the read role)")
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
            let hostID = topics.string("sparkplug_host_id", default: self.topics.sparkplugHostID ?? "")
            if hostID.isEmpty {
                self.topics.sparkplugHostID = nil
            } else if !SparkplugSession.isValidName(hostID) || hostID.contains("/") {
                topics.diagnostics.report(
                    .error, topics.keyPath("sparkplug_host_id"), at: topics.markOf("sparkplug_host_id"),
                    "must be one topic level: no '/', '+', '#' or control characters, at most 256 bytes")
            } else {
                self.topics.sparkplugHostID = hostID
            }
            self.topics.sparkplugReorderTimeout = topics.duration("sparkplug_reorder_timeout", default: self.topics.sparkplugReorderTimeout)
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
