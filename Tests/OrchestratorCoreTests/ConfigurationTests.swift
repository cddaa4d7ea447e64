import Foundation
import Testing
import Yams

@testable import DangTools
@testable import OrchestratorCore

/// Writes files into a fresh temporary directory for one test.
struct ScratchDirectory {
    let url: URL

    init() throws {
        self.url = FileManager.default.temporaryDirectory.appendingPathComponent("dang-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: self.url, withIntermediateDirectories: true)
    }

    func write(_ name: String, _ text: String) throws -> String {
        let file = self.url.appendingPathComponent(name)
        try text.write(to: file, atomically: true, encoding: .utf8)
        return file.path
    }
}

@Suite struct ConfigurationTests {
    static let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// Loads `yaml` as a configuration file. With `token` and `key`, an operate token and a DeepSeek
    /// key are in the environment (as in a deployment), so the "no API token" and "no API key"
    /// warnings do not crowd the issues under test.
    func load(_ yaml: String, environment: [String: String] = [:], token: Bool = true, key: Bool = true) throws(ConfigError) -> OrchestratorConfig {
        let scratch = try! ScratchDirectory()
        let path = try! scratch.write("orchestrator.yaml", yaml)
        var environment = environment
        if token && environment["DANG_API_TOKEN"] == nil { environment["DANG_API_TOKEN"] = "test-token" }
        if key && environment["DEEPSEEK_API_KEY"] == nil { environment["DEEPSEEK_API_KEY"] = "sk-test" }
        return try OrchestratorConfig.load(file: path, environment: environment)
    }

    func issues(_ yaml: String, environment: [String: String] = [:]) -> [ConfigIssue] {
        do {
            _ = try self.load(yaml, environment: environment)
            return []
        } catch {
            return error.issues
        }
    }

    @Test func `the shipped configuration and topic map load cleanly`() throws {
        let path = Self.repositoryRoot.appendingPathComponent("config/orchestrator.yaml").path
        let config = try OrchestratorConfig.load(file: path, environment: ["DEEPSEEK_API_KEY": "sk-test", "DANG_API_TOKEN": "t"])
        #expect(config.warnings.isEmpty)
        #expect(config.llm.apiKey == "sk-test")
        #expect(config.topics.prefix == "apos")
        #expect(config.topicMap.tags["r1/cdu/cdu1/TI-101"]?.limits.hi == 372)
        #expect(config.topicMap.tags.keys.contains { $0.hasPrefix("r1/fcc/") })
        #expect(config.modules.count == 4)
        #expect(config.decisionEngine.maxRetries == 3)
    }

    /// `TagInfo` shares one record between the topic map and the detectors: a change made through
    /// one copy must never show through another (value semantics), and equality is by content.
    @Test func `a tag's info is a value: changing a copy leaves the original and the map alone`() throws {
        let path = Self.repositoryRoot.appendingPathComponent("config/orchestrator.yaml").path
        let config = try OrchestratorConfig.load(file: path, environment: ["DEEPSEEK_API_KEY": "sk-test", "DANG_API_TOKEN": "t"])
        let original = try #require(config.topicMap.tags["r1/cdu/cdu1/TI-101"])
        var copy = original
        #expect(copy == original)
        copy.limits.hi = 400
        copy.flatline = TagInfo.Flatline(tolerance: 0.5, samples: 10)
        copy.description = "changed"
        #expect(original.limits.hi == 372)
        #expect(original.flatline == nil || original.flatline?.tolerance != 0.5)
        #expect(config.topicMap.tags["r1/cdu/cdu1/TI-101"]?.limits.hi == 372)
        #expect(copy.limits.hi == 400 && copy.description == "changed" && copy.flatline?.samples == 10)
        #expect(copy != original)
        // Equal content, separate records: equal.
        var rebuilt = TagInfo(description: original.description, unit: original.unit, criticality: original.criticality, limits: original.limits)
        rebuilt.fields = original.fields
        #expect(rebuilt == original)
    }

    @Test func `instance and ha: the id names the client id; a bad id or lease names its key; the default is a single instance`() throws {
        let single = try self.load("mqtt:\n  url: mqtt://127.0.0.1:1883\n")
        #expect(!single.availability.enabled && single.availability.instanceID == AvailabilitySettings.hostName)
        #expect(single.mqtt.clientID == "dang-\(AvailabilitySettings.hostName)")
        let pair = try self.load("instance:\n  id: gw-north.1\nha:\n  enabled: true\n  lease: 5s\nmqtt:\n  url: mqtt://127.0.0.1:1883\n")
        #expect(pair.availability == AvailabilitySettings(instanceID: "gw-north.1", enabled: true, lease: .seconds(5)))
        #expect(pair.mqtt.clientID == "dang-gw-north.1")
        // An explicit client id wins over the derived one.
        #expect(try self.load("instance:\n  id: a\nmqtt:\n  url: mqtt://127.0.0.1:1883\n  client_id: plant-gw\n").mqtt.clientID == "plant-gw")
        let bad = self.issues("instance:\n  id: \"gw north/1\"\nha:\n  lease: 100ms\n").filter { $0.severity == .error }.map(\.key)
        #expect(bad.contains("instance.id") && bad.contains("ha.lease"), "\(bad)")
    }

    @Test func `both API tokens come from the environment with or without an api section, and none at all is a warning`() throws {
        // No api: section.
        let read = try self.load("mqtt:\n  url: mqtt://127.0.0.1:1883\n", environment: ["DANG_API_READ_TOKEN": "r"], token: false)
        #expect(read.warnings.isEmpty)
        let both = try self.load("api:\n  enabled: true\n", environment: ["DANG_API_TOKEN": "o", "DANG_API_READ_TOKEN": "r"])
        #expect(both.api.token == "o" && both.api.readToken == "r")
        // The file wins over the environment.
        let file = try self.load("api:\n  read_token: f\n", environment: ["DANG_API_READ_TOKEN": "r"], token: false)
        #expect(file.api.readToken == "f")
        for yaml in ["mqtt:\n  url: mqtt://127.0.0.1:1883\n", "api:\n  enabled: true\n"] {
            let none = try self.load(yaml, token: false)
            #expect(none.warnings.contains { $0.key == "api.token" && $0.message.contains("DANG_API_READ_TOKEN") })
        }
    }

    @Test func `a token can come from a file, trimmed, relative to the configuration; conflicts and bad files name the key`() throws {
        let scratch = try ScratchDirectory()
        _ = try scratch.write("operate.token", "s3cret-operate\n")
        let absolute = try scratch.write("read.token", "  s3cret-read \r\n")
        _ = try scratch.write("two.token", "one two\n")
        let path = try scratch.write("orchestrator.yaml", "api:\n  token_file: operate.token\n  read_token_file: \(absolute)\n")
        let config = try OrchestratorConfig.load(file: path, environment: ["DEEPSEEK_API_KEY": "k"])
        #expect(config.api.token == "s3cret-operate" && config.api.readToken == "s3cret-read")
        #expect(config.warnings.isEmpty)
        func problems(_ yaml: String) -> [String] {
            let file = try! scratch.write("bad.yaml", yaml)
            do {
                _ = try OrchestratorConfig.load(file: file, environment: ["DEEPSEEK_API_KEY": "k"])
                return []
            } catch {
                return error.issues.filter { $0.severity == .error }.map { "\($0.line) \($0.key): \($0.message)" }
            }
        }
        #expect(problems("api:\n  token: t\n  token_file: operate.token\n") == ["3 api.token_file: give token or token_file, not both"])
        #expect(problems("api:\n  read_token_file: missing.token\n").first?.hasPrefix("2 api.read_token_file: cannot read ") == true)
        #expect(problems("api:\n  token_file: two.token\n").first?.hasSuffix("must hold one token (1–4,096 bytes, no spaces)") == true)
    }

    @Test func `api.tls is read with its files checked; a public listener without TLS is an error unless allow_plaintext`() throws {
        let scratch = try ScratchDirectory()
        let script = """
            set -e; cd \(scratch.url.path)
            openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=ca" -keyout ca.key -out ca.pem 2>/dev/null
            openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=other" -keyout other.key -out other.pem 2>/dev/null
            """
        let (status, _) = try ChildProcess.run(["/bin/bash", "-c", script])
        try #require(status == 0)
        func problems(_ yaml: String) -> [String] {
            let file = try! scratch.write("tls.yaml", yaml)
            do {
                _ = try OrchestratorConfig.load(file: file, environment: ["DEEPSEEK_API_KEY": "k", "DANG_API_TOKEN": "t"])
                return []
            } catch {
                return error.issues.filter { $0.severity == .error }.map { "\($0.line) \($0.key): \($0.message)" }
            }
        }
        let good = """
            api:
              listen: 0.0.0.0:8443
              tls:
                cert_file: ca.pem
                key_file: ca.key
                ca_file: other.pem
                client_auth: require
                min_version: "1.3"
                client_roles:
                  - {san: historian.plant.local, role: operate}
                  - {subject: "CN=control room,O=Refinery", role: read}

            """
        #expect(problems(good) == [])
        let config = try OrchestratorConfig.load(file: try scratch.write("good.yaml", good), environment: ["DEEPSEEK_API_KEY": "k", "DANG_API_TOKEN": "t"])
        let tls = try #require(config.api.tls)
        #expect(tls.certFile == scratch.url.appendingPathComponent("ca.pem").path && tls.clientAuth == .require && tls.minVersion == "1.3")
        #expect(tls.clientRoles == [.init(match: .san("historian.plant.local"), role: .operate), .init(match: .subject("CN=control room,O=Refinery"), role: .read)])
        // Plain HTTP on every address: refused, saying why and how.
        let open = problems("api:\n  listen: 0.0.0.0:8080\n")
        #expect(open.count == 1 && open[0].hasPrefix("2 api.listen: the API would listen on 0.0.0.0 in plain HTTP") && open[0].contains("api.allow_plaintext: true"))
        #expect(problems("api:\n  listen: 0.0.0.0:8080\n  allow_plaintext: true\n") == [])
        #expect(problems("api:\n  listen: 127.0.0.1:8080\n") == [])
        // Each mistake names its key.
        #expect(problems("api:\n  tls:\n    cert_file: ca.pem\n") == ["3 api.tls.cert_file: api.tls needs cert_file and key_file"])
        #expect(problems("api:\n  tls:\n    cert_file: ca.pem\n    key_file: other.key\n").first?.contains("does not belong to the certificate") == true)
        #expect(problems("api:\n  tls:\n    cert_file: missing.pem\n    key_file: ca.key\n").first?.hasPrefix("3 api.tls.cert_file: cannot read ") == true)
        #expect(problems("api:\n  tls:\n    cert_file: ca.key\n    key_file: ca.key\n").first?.contains("holds no PEM certificate") == true)
        #expect(
            problems("api:\n  tls:\n    cert_file: ca.pem\n    key_file: ca.key\n    client_auth: require\n")
                == ["5 api.tls.ca_file: client_auth: require needs ca_file, the CA that signs the client certificates"])
        #expect(problems("api:\n  tls:\n    cert_file: ca.pem\n    key_file: ca.key\n    min_version: \"1.1\"\n") == ["5 api.tls.min_version: \"1.1\" is not 1.2 or 1.3"])
        #expect(
            problems("api:\n  tls:\n    cert_file: ca.pem\n    key_file: ca.key\n    client_roles: [{san: x, role: operate}]\n")
                == ["5 api.tls.client_roles: client_roles needs client_auth: optional or require"])
        let roles = "api:\n  tls:\n    cert_file: ca.pem\n    key_file: ca.key\n    ca_file: ca.pem\n    client_auth: optional\n    client_roles:\n"
        #expect(problems(roles + "      - {san: x, role: admin}\n") == ["8 api.tls.client_roles[0].role: role must be read or operate"])
        #expect(problems(roles + "      - {san: x, subject: y, role: read}\n") == ["8 api.tls.client_roles[0]: give subject or san (one of them)"])
        #expect(problems(roles + "      - {san: x, role: read, sans: y}\n") == ["8 api.tls.client_roles[0].sans: unknown key"])
    }

    @Test func `DeepSeek's key comes from the environment with or without an llm section, and none at all is a warning`() throws {
        for yaml in ["{}\n", "orchestrator:\n  llm:\n    model: deepseek-v4-flash\n"] {
            let keyed = try self.load(yaml, environment: ["DEEPSEEK_API_KEY": "sk-env"])
            #expect(keyed.llm.apiKey == "sk-env" && keyed.llm.isActive && keyed.warnings.isEmpty)
            let none = try self.load(yaml, key: false)
            #expect(none.llm.apiKey == nil && !none.llm.isActive)
            #expect(none.warnings.map(\.key) == ["orchestrator.llm.api_key"])
        }
        // The file wins; a self-hosted server needs no key and takes none from DeepSeek's variable.
        #expect(try self.load("orchestrator:\n  llm:\n    api_key: sk-file\n", environment: ["DEEPSEEK_API_KEY": "sk-env"]).llm.apiKey == "sk-file")
        let local = try self.load("orchestrator:\n  llm:\n    provider: vllm\n    base_url: http://127.0.0.1:8000\n", environment: ["DEEPSEEK_API_KEY": "sk-env"])
        #expect(local.llm.apiKey == nil && local.llm.isActive && local.warnings.isEmpty)
        // Switched off: no key needed, no warning.
        #expect(try self.load("orchestrator:\n  llm:\n    enabled: false\n", key: false).warnings.isEmpty)
    }

    /// Every key `docs/configuration.md` documents for `orchestrator.yaml` appears in the shipped file,
    /// set or as a commented example (README: "every key documented").
    @Test func `every documented key is in the shipped configuration`() throws {
        let doc = try String(contentsOf: Self.repositoryRoot.appendingPathComponent("docs/configuration.md"), encoding: .utf8)
        let text = try String(contentsOf: Self.repositoryRoot.appendingPathComponent("config/orchestrator.yaml"), encoding: .utf8)
        let root = try #require(try Yams.compose(yaml: text))
        let commented = text.split(separator: "\n").filter { $0.trimmingCharacters(in: .whitespaces).hasPrefix("#") }

        func present(_ path: [String], in node: Node) -> Bool {
            guard let first = path.first else { return true }
            guard let mapping = node.mapping else { return false }
            let rest = Array(path.dropFirst())
            if first == "*" { return mapping.values.contains { present(rest, in: $0) } }
            let alternatives = first.hasPrefix("{") ? first.dropFirst().dropLast().split(separator: ",").map(String.init) : [first]
            return alternatives.allSatisfy { name in mapping[name].map { present(rest, in: $0) } ?? false }
        }
        func inComment(_ name: String) -> Bool {
            commented.contains { line in line.range(of: "#\\s*\(name):", options: .regularExpression) != nil }
        }

        var section: String? = nil
        var checked = 0
        var missing: [String] = []
        for line in doc.split(separator: "\n") {
            if line.hasPrefix("## `") {
                section = line.split(separator: "`").dropFirst().first.map(String.init)
                continue
            }
            if line.hasPrefix("## ") { section = nil }
            guard let section, line.hasPrefix("| `") else { continue }
            let cell = String(line.split(separator: "|", omittingEmptySubsequences: false)[1])
            let names = cell.split(separator: "`", omittingEmptySubsequences: false).enumerated().filter { $0.offset % 2 == 1 }.map { String($0.element) }
            var prefix: [String] = []
            for (index, name) in names.enumerated() {
                var parts = name.replacingOccurrences(of: "{…}", with: "*").split(separator: ".").map(String.init)
                if parts.first == section { parts.removeFirst() }
                if index == 0 { prefix = Array(parts.dropLast()) } else if parts.count == 1 { parts = prefix + parts }
                checked += 1
                // A key of another section, named in full (`database.snapshot_interval` under detection).
                let sections = ["orchestrator", "api", "ingest", "mqtt", "database", "topics", "detection"]
                let path = sections.contains(parts.first ?? "") && parts.count > 1 && parts.first != section ? parts : [section] + parts
                if !present(path, in: root) && !inComment(parts.last ?? "") { missing.append(path.joined(separator: ".")) }
            }
        }
        #expect(checked > 100)
        #expect(missing.isEmpty, "documented but not in config/orchestrator.yaml: \(missing)")
    }

    /// The values the shipped file shows are the code's defaults, except where the file says otherwise
    /// ("not the default" / "not a default"): the shipped file and an empty one load to the same
    /// configuration field by field, apart from the listed, annotated exceptions.
    @Test func `the values shown in the shipped configuration are the code's defaults`() throws {
        let path = Self.repositoryRoot.appendingPathComponent("config/orchestrator.yaml").path
        let environment = ["DANG_API_TOKEN": "t", "DEEPSEEK_API_KEY": "sk-test"]
        let shipped = try OrchestratorConfig.load(file: path, environment: environment)
        let empty = try self.load("{}\n", environment: environment)

        /// Every leaf of a value as "path = description", walked by reflection.
        func leaves(_ value: Any, _ path: String, into out: inout [String: String]) {
            let mirror = Mirror(reflecting: value)
            switch mirror.displayStyle {
            case .struct?, .class?:
                if mirror.children.isEmpty { out[path] = String(describing: value); return }
                for child in mirror.children { leaves(child.value, path + "." + (child.label ?? "?"), into: &out) }
            case .dictionary?:
                for child in mirror.children {
                    let pair = Array(Mirror(reflecting: child.value).children)
                    leaves(pair[1].value, path + "[\(pair[0].value)]", into: &out)
                }
            case .collection?, .optional?, .tuple?:
                for (index, child) in mirror.children.enumerated() { leaves(child.value, path + "[\(child.label ?? String(index))]", into: &out) }
                if mirror.children.isEmpty { out[path] = "none" }
            default:
                out[path] = String(describing: value)
            }
        }
        var shown: [String: String] = [:]
        var defaults: [String: String] = [:]
        leaves(shipped, "", into: &shown)
        leaves(empty, "", into: &defaults)
        // The annotated exceptions: the topic map, the forecasting module's max_in_flight, the shipped
        // triggers (the product's choices, documented in docs/decisions.md), the forecast step (by
        // default the tags' sampling interval). Each must be marked in the file.
        let exceptions = [".topicMap", ".topics.mapFile", ".triggers", ".modules[forecasting].maxInFlight", ".modules[forecasting].step"]
        let different = Set(shown.keys).union(defaults.keys).filter { shown[$0] != defaults[$0] }
            .filter { key in !exceptions.contains { key.hasPrefix($0) } }.sorted()
        #expect(different.isEmpty, "shown but not the default: \(different.map { "\($0): \(shown[$0] ?? "-") vs \(defaults[$0] ?? "-")" })")
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(text.contains("max_in_flight: 2      # (not the default, 1)"))
        #expect(text.contains("(not a default: without a map, no tag is named)"))
        #expect(text.contains("triggers:               # what makes the orchestrator consider a module (docs/decisions.md; not the default: none)"))
        #expect(text.contains("step: 150s            # ... of this length (default: the tags' sampling interval)"))
        #expect(shipped.modules[.forecasting]?.maxInFlight == 2 && empty.modules[.forecasting]?.maxInFlight == 1)
        #expect(shipped.modules[.forecasting]?.step == .seconds(150) && empty.modules[.forecasting]?.step == nil)
    }

    @Test func `the duration error shown in docs/configuration.md is the one the binary gives`() throws {
        let doc = try String(contentsOf: Self.repositoryRoot.appendingPathComponent("docs/configuration.md"), encoding: .utf8)
        let shown = try #require(doc.split(separator: "\n").first { $0.contains("error: mqtt.keepalive:") })
        let found = self.issues("mqtt:\n  keepalive: 10x\n")
        #expect(found.count == 1)
        #expect(shown.hasSuffix("error: " + (found.first.map { "\($0.key): \($0.message)" } ?? "")))
        // Every unit the doc lists.
        let parsed = ["300", "0.5", "250ms", "30s", "5m", "2h", "90d"].map { YAMLSection.parseDuration($0) }
        #expect(parsed == [.seconds(300), .milliseconds(500), .milliseconds(250), .seconds(30), .seconds(300), .seconds(7200), .seconds(7_776_000)])
        #expect(YAMLSection.parseDuration("5w") == nil)
    }

    @Test func `every problem is reported with its line and key`() {
        let found = issues(
            """
            orchestrator:
              decision_engine:
                confidence_threshold: 1.5
                max_retries: lots
            mqtt:
              url: http://broker:1883
              keepalive: 10x
              protcol: v5
            detection:
              z_clear: 6
            """)
        let summary = found.map { "\($0.line) \($0.key)" }
        #expect(summary == [
            "3 orchestrator.decision_engine.confidence_threshold",
            "4 orchestrator.decision_engine.max_retries",
            "6 mqtt.url",
            "7 mqtt.keepalive",
            "8 mqtt.protcol",
            "10 detection.z_clear",
        ])
        #expect(found.allSatisfy { $0.severity == .error && $0.file.hasSuffix("orchestrator.yaml") })
        #expect(found[4].description.contains("orchestrator.yaml:8:3: error: mqtt.protcol: unknown key"))
    }

    @Test func `limits get a deadband by default, and hysteresis settings that could never clear are refused`() throws {
        let scratch = try ScratchDirectory()
        let map = try scratch.write("map.yaml", "tags:\n  t:\n    limits: {lo: 0, hi: 100}\n")
        let loaded = try TopicMap.load(file: map, environment: [:])
        #expect(loaded.tags["t"]?.limits.deadband == 0.5)
        #expect(issues("detection:\n  z_clear: 0\n").map(\.key) == ["detection.z_clear"])
        #expect(issues("mqtt:\n  keepalive: 1e300\n").map(\.key) == ["mqtt.keepalive"])
        #expect(issues("mqtt:\n  keepalive: 70000\n").map(\.key) == ["mqtt.keepalive"])
        #expect(issues("database:\n  flush_interval: 0\n").map(\.key) == ["database.flush_interval"])
    }

    @Test func `the per-tag limit of a unit is auto by default, a number, or off`() throws {
        #expect(try load("detection:\n  multivariate: {enabled: true}\n").detection.multivariate.tagSigmas == nil)
        #expect(try load("detection:\n  multivariate: {tag_sigmas: auto}\n").detection.multivariate.tagSigmas == nil)
        #expect(try load("detection:\n  multivariate: {tag_sigmas: 4.5}\n").detection.multivariate.tagSigmas == 4.5)
        #expect(try load("detection:\n  multivariate: {tag_sigmas: 0}\n").detection.multivariate.tagSigmas == 0)
        for bad in ["lots", "-1", "nan", "1e9"] {
            let found = issues("detection:\n  multivariate:\n    tag_sigmas: \(bad)\n")
            #expect(found.map { "\($0.line) \($0.key)" } == ["3 detection.multivariate.tag_sigmas"], "\(bad)")
            #expect(found.first?.message.contains("auto") == true)
        }
    }

    @Test func `a YAML syntax error names its line`() {
        let found = issues("mqtt:\n  url: [unclosed\n")
        #expect(found.count == 1)
        #expect(found.first?.line ?? 0 >= 2)
        #expect(found.first?.message.hasPrefix("YAML syntax") == true)
    }

    @Test func `an unclosed bracket or quote is reported where it was opened, with where the parser gave up`() {
        var found = issues("orchestrator:\n  llm:\n    model: [deepseek\n")
        #expect(found.map { "\($0.line):\($0.column)" } == ["3:12"])
        #expect(found.first?.message == "YAML syntax: unclosed '[' (reached the end of the file at 4:1)")
        found = issues("a: {x: 1\nb: 2\n")
        #expect(found.map { "\($0.line):\($0.column)" } == ["1:4"])
        #expect(found.first?.message.hasPrefix("YAML syntax: unclosed '{'") == true)
        found = issues("a: 1\nb: \"open\n")
        #expect(found.map { "\($0.line):\($0.column)" } == ["2:4"])
        #expect(found.first?.message.hasPrefix("YAML syntax: unclosed quote") == true)
    }

    @Test func `environment variables are substituted, with defaults, and a missing one is an error`() throws {
        let config = try load(
            "mqtt:\n  url: mqtt://${HOST}:${PORT:-1884}\n  client_id: ${ID:-fallback}\n",
            environment: ["HOST": "broker.plant"])
        #expect(config.mqtt.endpoint == MQTTEndpoint(host: "broker.plant", port: 1884, tls: false))
        #expect(config.mqtt.clientID == "fallback")
        let found = issues("mqtt:\n  password: ${SECRET}\n")
        #expect(found.map(\.line) == [2])
        #expect(found.first?.message.contains("SECRET is not set") == true)
    }

    @Test func `a missing topic map is reported against the configuration`() {
        let found = issues("topics:\n  map: nowhere.yaml\n")
        #expect(found.count == 1)
        #expect(found.first?.file.hasSuffix("nowhere.yaml") == true)
        #expect(found.first?.message == "no such file")
    }

    @Test func `topic map errors name their own file and line`() throws {
        let scratch = try ScratchDirectory()
        _ = try scratch.write(
            "map.yaml",
            """
            tags:
              r1/cdu/cdu1/TI-101:
                limits: {lo: 380, hi: 372}
              r1/cdu/cdu1/TI-102:
                criticality: extreme
            """)
        let path = try scratch.write("orchestrator.yaml", "topics:\n  map: map.yaml\n")
        #expect(throws: ConfigError.self) { try OrchestratorConfig.load(file: path, environment: ["DANG_API_TOKEN": "t", "DEEPSEEK_API_KEY": "k"]) }
        do {
            _ = try OrchestratorConfig.load(file: path, environment: ["DANG_API_TOKEN": "t", "DEEPSEEK_API_KEY": "k"])
        } catch {
            #expect(error.issues.map(\.line) == [3, 5])
            #expect(error.issues.allSatisfy { $0.file.hasSuffix("map.yaml") })
        }
    }

    @Test func `suppress_when names another tag of the map and one test; mistakes name their line`() throws {
        let scratch = try ScratchDirectory()
        func issues(_ tags: String) -> [String] {
            _ = try! scratch.write("map.yaml", "tags:\n  r1/a/b/FI-101: {}\n" + tags)
            let path = try! scratch.write("orchestrator.yaml", "topics:\n  map: map.yaml\n")
            do {
                _ = try OrchestratorConfig.load(file: path, environment: ["DANG_API_TOKEN": "t", "DEEPSEEK_API_KEY": "k"])
                return []
            } catch {
                return error.issues.map { "\($0.line) \($0.key): \($0.message)" }
            }
        }
        #expect(issues("  r1/a/b/FI-110:\n    suppress_when: {tag: r1/a/b/FI-101, below: 100}\n") == [])
        #expect(issues("  r1/a/b/FI-110:\n    suppress_when: {tag: r1/a/b/FI-999, below: 100}\n")
            == ["4 tags.r1/a/b/FI-110.suppress_when.tag: r1/a/b/FI-999 is not a tag of this topic map"])
        #expect(issues("  r1/a/b/FI-110:\n    suppress_when: {tag: r1/a/b/FI-110, above: 1}\n")
            == ["4 tags.r1/a/b/FI-110.suppress_when.tag: a tag cannot suppress itself"])
        #expect(issues("  r1/a/b/FI-110:\n    suppress_when: {tag: r1/a/b/FI-101, below: 1, above: 2}\n").first?.hasPrefix("4 tags.r1/a/b/FI-110.suppress_when: expected {tag") == true)
        #expect(issues("  r1/a/b/FI-110:\n    suppress_when: {tag: r1/a/b/FI-101, under: 1}\n").contains("4 tags.r1/a/b/FI-110.suppress_when.under: unknown key"))
        // The shipped map's example: the furnace's fuel gas while the crude charge is down.
        let shipped = try TopicMap.load(file: Self.repositoryRoot.appendingPathComponent("topics/refinery.yaml").path, environment: [:])
        #expect(shipped.suppressions == ["r1/cdu/cdu1/FI-110": SuppressWhen(tag: "r1/cdu/cdu1/FI-101", test: .below(100))])
    }

    @Test func `command-line URLs beat the environment, which beats the file`() throws {
        var config = try load("mqtt:\n  url: mqtt://file:1\ndatabase:\n  url: postgres://file/db\n")
        try config.applyOverrides(mqttURL: nil, databaseURL: nil, environment: ["DANG_MQTT_URL": "mqtt://env:2", "DATABASE_URL": "postgres://env/db"])
        #expect(config.mqtt.endpoint.host == "env" && config.mqtt.endpoint.port == 2)
        #expect(config.database.url == "postgres://env/db")
        try config.applyOverrides(mqttURL: "mqtts://flag", databaseURL: "host=flag", environment: ["DANG_MQTT_URL": "mqtt://env:2"])
        #expect(config.mqtt.endpoint == MQTTEndpoint(host: "flag", port: 8883, tls: true))
        #expect(config.database.url == "host=flag")
        #expect(throws: ConfigError.self) { try config.applyOverrides(mqttURL: "ftp://x", databaseURL: nil, environment: [:]) }
    }

    @Test(arguments: [
        ("mqtt://localhost", MQTTEndpoint(host: "localhost", port: 1883, tls: false)),
        ("mqtts://broker.example:8884", MQTTEndpoint(host: "broker.example", port: 8884, tls: true)),
        ("mqtt://user:p%40ss@10.0.0.1:1883", MQTTEndpoint(host: "10.0.0.1", port: 1883, tls: false, username: "user", password: "p@ss")),
        ("MQTT://operator@plant-broker/", MQTTEndpoint(host: "plant-broker", port: 1883, tls: false, username: "operator")),
        ("ssl://[fd00::7]:8885", MQTTEndpoint(host: "fd00::7", port: 8885, tls: true)),
        ("tcp://[::1]", MQTTEndpoint(host: "::1", port: 1883, tls: false)),
    ])
    func `broker URLs parse`(text: String, expected: MQTTEndpoint) throws {
        #expect(try MQTTEndpoint.parse(text).get() == expected)
    }

    @Test(arguments: [
        "localhost:1883", "http://x", "mqtt://", "mqtt://host:99999", "mqtt://host/path", "mqtt://host:", "mqtt://host:12a",
        "mqtt://[::1", "mqtt://[::1]x", "mqtt://:1883", "mqtt://u:%zz@host", "mqtt://host:+1883",
    ])
    func `bad broker URLs are refused`(text: String) {
        #expect(throws: MQTTEndpoint.Problem.self) { try MQTTEndpoint.parse(text).get() }
    }

    @Test(arguments: [("30", 30_000), ("250ms", 250), ("1.5s", 1500), ("5m", 300_000), ("2h", 7_200_000), ("90d", 7_776_000_000)])
    func `durations accept seconds or a unit`(text: String, milliseconds: Int64) {
        #expect(YAMLSection.parseDuration(text) == .milliseconds(milliseconds))
    }
}

@Suite struct TopicRouterTests {
    let router = TopicRouter(
        map: TopicMap(tags: ["CDU1.FOT": TagInfo()], namedTopics: ["site/legacy/fot": "CDU1.FOT"]))

    @Test func `sensor, market, batch and named topics route to tag identifiers`() {
        #expect(router.route("plant/r1/cdu/cdu1/TI-101") == .tag("r1/cdu/cdu1/TI-101"))
        #expect(router.route("market/crack/321") == .tag("market/crack/321"))
        #expect(router.route("plant/r1/cdu/cdu1") == .batch(base: "r1/cdu/cdu1"))
        #expect(router.route("site/legacy/fot") == .tag("CDU1.FOT"))
    }

    @Test(arguments: ["plant/r1/cdu", "plant/r1/cdu/cdu1/TI-101/extra", "plant/r1//cdu1/TI-101", "other/x", "market", "market/"])
    func `other topics are unknown`(topic: String) {
        #expect(router.route(topic) == .unknown)
    }

    @Test func `subscriptions cover the patterns, and named topics only where no pattern does`() {
        #expect(router.subscriptions == ["plant/+/+/+/+", "market/#", "plant/+/+/+", "site/legacy/fot"])
        let covered = TopicRouter(map: TopicMap(tags: ["X": TagInfo()], namedTopics: ["plant/r1/cdu/cdu1/TI-101": "X"]))
        #expect(covered.subscriptions == ["plant/+/+/+/+", "market/#", "plant/+/+/+"])
        #expect(covered.route("plant/r1/cdu/cdu1/TI-101") == .tag("X"))
    }
}
