import Curl
import Foundation
import LibPQ
import OrchestratorCore
import Testing

/// `deploy/grafana/dang-orchestrator.json` against the real thing: every Prometheus query names
/// a family a running orchestrator exports, with labels it carries; every SQL query runs against
/// the record's schema (PostgreSQL's EXPLAIN, Grafana's macros replaced).
@Suite struct DashboardTests {
    static let dashboard = TestServices.repositoryRoot.appendingPathComponent("deploy/grafana/dang-orchestrator.json")

    @Test func `every query of the Grafana dashboard names a metric the orchestrator exports, or runs on the record's schema`() async throws {
        let object = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: Self.dashboard)) as? [String: Any])
        let panels = try #require(object["panels"] as? [[String: Any]])
        #expect(panels.count >= 10 && object["uid"] as? String == "dang-orchestrator")
        var promQL: [String] = []
        var sql: [String] = []
        for panel in panels {
            let source = (panel["datasource"] as? [String: Any])?["type"] as? String
            for target in panel["targets"] as? [[String: Any]] ?? [] {
                if source == "prometheus", let expr = target["expr"] as? String { promQL.append(expr) }
                if source == "grafana-postgresql-datasource", let raw = target["rawSql"] as? String { sql.append(raw) }
            }
        }
        #expect(promQL.count >= 20 && sql.count >= 3)

        // A running orchestrator that has raised, acknowledged and decided: its exposition.
        let database = try await TestServices.freshDatabase()
        var config = APITests.config(prefix: "it-dash", database: database)
        config.api.token = APITests.operate
        let orchestrator = try Orchestrator(config: config, logger: testLogger)
        let publisher = try TestPublisher()
        try await publisher.waitUntilConnected()
        let exposition = try await withRunningOrchestrator(orchestrator) {
            try await eventually("API listening", timeout: .seconds(30)) { orchestrator.apiListeningPort > 0 }
            try await eventually("connected") { orchestrator.connectionStatus.connected }
            try await Task.sleep(for: .milliseconds(200))
            try DecisionLoopTests.breach(publisher, prefix: "it-dash")
            try await eventually("a decision made") { orchestrator.coordinator.counters.decisions > 0 }
            var request = HTTPRequest(url: "http://127.0.0.1:\(orchestrator.apiListeningPort)/metrics")
            request.method = "GET"
            guard case .success(let response) = await performOffThePool(request) else { throw TimedOut(what: "GET /metrics") }
            return String(decoding: response.body, as: UTF8.self)
        }
        // Families and the label names each one's series carry.
        var labels: [String: Set<String>] = [:]
        for line in exposition.split(separator: "\n") {
            if line.hasPrefix("# TYPE ") {
                labels[String(line.split(separator: " ")[2]), default: []] = labels[String(line.split(separator: " ")[2])] ?? []
            } else if !line.hasPrefix("#"), let brace = line.firstIndex(of: "{") {
                let name = String(line[..<brace]).replacing(/_(bucket|sum|count)$/, with: "")
                let names = line[brace...].matches(of: /([a-z_]+)="/).map { String($0.output.1) }
                labels[name, default: []].formUnion(names)
            }
        }
        for expr in promQL {
            let metrics = expr.matches(of: /dang_[a-z0-9_]+/).map { String($0.output).replacing(/_bucket$/, with: "") }
            #expect(!metrics.isEmpty, "\(expr)")
            for metric in metrics {
                #expect(labels[metric] != nil, "\(metric) (in \(expr)) is not exported")
            }
            // Labels grouped by or matched on belong to the metric of the expression.
            let grouped = expr.matches(of: /by \(([a-z_, ]+)\)/).flatMap { $0.output.1.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
            let matched = expr.matches(of: /([a-z_]+)=~?"/).map { String($0.output.1) }
            for label in grouped + matched where label != "le" {
                #expect(metrics.contains { labels[$0]?.contains(label) == true }, "label \(label) of \(expr)")
            }
        }
        let connection = try PostgresConnection(conninfo: database)
        for query in sql {
            let explained = query.replacing(/\$__timeFilter\(([a-z_.]+)\)/) { "\($0.output.1) > now() - interval '1 day'" }
            #expect(!explained.contains("$"), "\(query)")
            #expect(throws: Never.self, "\(query)") { _ = try connection.query("EXPLAIN " + explained) }
        }
    }
}
