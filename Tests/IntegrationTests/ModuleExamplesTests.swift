import Foundation
import OrchestratorCore
import Testing

/// The worked examples of docs/modules.md are modules that work: each answers the invocation of a
/// real limit breach through the command transport, its result is recorded `ok` with the forecast
/// chained triggers read, and the Python and Swift versions agree to the digit. The fixture the
/// guide tests modules with is an invocation the orchestrator really sent.
@Suite(.serialized) struct ModuleExamplesTests {
    static let examples = TestServices.repositoryRoot.appendingPathComponent("examples/modules")
    static let fixture = Self.examples.appendingPathComponent("fixtures/forecasting-invocation.json")

    /// The forecast of TI-101 a module's command answers a breach with.
    func forecast(_ command: [String], prefix: String) async throws -> (mean: [Double], benefit: Double) {
        let database = try await TestServices.freshDatabase()
        var config = DecisionLoopTests.config(prefix: prefix, database: database)
        config.modules[.forecasting]?.transport = .command
        config.modules[.forecasting]?.command = command
        // A Swift script is compiled when it starts: seconds on a loaded machine.
        config.modules[.forecasting]?.timeout = .seconds(60)
        let orchestrator = try Orchestrator(config: config, logger: testLogger)
        let publisher = try TestPublisher()
        try await publisher.waitUntilConnected()
        try await withRunningOrchestrator(orchestrator) {
            try await eventually("connected") { orchestrator.connectionStatus.connected }
            try await Task.sleep(for: .milliseconds(300))
            try DecisionLoopTests.breach(publisher, prefix: prefix)
            try await eventually("the module's answer recorded", timeout: .seconds(90)) {
                (try? DecisionLoopTests.rows(database, "SELECT status FROM invocations").first?.first) == "ok"
            }
        }
        let row = try DecisionLoopTests.rows(
            database,
            "SELECT result->'output'->'forecasts'->'\(DecisionLoopTests.furnace)'->>'mean', result->'metrics'->>'benefit', params->>'horizon' FROM invocations")
        let mean = try #require(try JSONSerialization.jsonObject(with: Data((row.first?[0] ?? "").utf8)) as? [Double])
        #expect(mean.count == Int(row.first?[2] ?? "") ?? -1)
        return (mean, Double(row.first?[1] ?? "") ?? .nan)
    }

    @Test func `the Python and Swift examples answer a real invocation, recorded ok, and agree`() async throws {
        let python = try await self.forecast(["python3", Self.examples.appendingPathComponent("naive_forecast.py").path], prefix: "it-example-py")
        let swift = try await self.forecast(["swift", Self.examples.appendingPathComponent("NaiveForecast.swift").path], prefix: "it-example-swift")
        #expect(!python.mean.isEmpty && python.mean == swift.mean)
        #expect(python.benefit == swift.benefit && (0...1).contains(python.benefit))
        // 30 samples at 358–359 °C, then 375: the fitted line rises past where the samples sat.
        #expect(python.mean.first! > 359 && python.mean.last! > python.mean.first!)
    }

    @Test func `the guide's fixture is an invocation the reference worker and both examples answer`() async throws {
        let input = try Data(contentsOf: Self.fixture)
        let invocation = try #require(try JSONSerialization.jsonObject(with: input) as? [String: Any])
        let id = try #require(invocation["invocation_id"] as? String)
        let commands = [
            [TestServices.repositoryRoot.appendingPathComponent(".build/debug/dang").path, "worker", "forecasting", "--stdio"],
            ["python3", Self.examples.appendingPathComponent("naive_forecast.py").path],
            ["swift", Self.examples.appendingPathComponent("NaiveForecast.swift").path],
        ]
        for command in commands {
            let output = await offThePool { Self.run(command, input: input) }
            let result = try #require(try JSONSerialization.jsonObject(with: output) as? [String: Any], "\(command)")
            #expect(result["status"] as? String == "ok", "\(command): \(result)")
            #expect(result["invocation_id"] as? String == id || command[1] == "worker", "\(command)")
        }
    }

    static func run(_ command: [String], input: Data) -> Data {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = command
        let stdin = Pipe(), stdout = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        do { try process.run() } catch { return Data() }
        stdin.fileHandleForWriting.write(input)
        try? stdin.fileHandleForWriting.close()
        let output = stdout.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return output
    }
}
