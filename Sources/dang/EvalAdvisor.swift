import ArgumentParser
import Foundation
import LibPQ
import OrchestratorCore

#if canImport(Glibc)
import Glibc
#endif

/// `dang eval-advisor`: validates an advisor against recorded decisions with known outcomes.
struct EvalAdvisor: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval-advisor",
        abstract: "Ask an OpenAI-compatible model the questions of recorded decisions and score its answers against the rules and the outcomes.",
        discussion: """
            The test set is the decisions the rules sent to a module whose invocation ended (ok, error, timeout), \
            rebuilt as the question the live advisor is asked. By default only the held-out share that \
            `dang export-finetune` never writes to its training or validation files. Reports the answers' validity, \
            agreement with the rules, how often the advice matched the outcome, and latency p50/p99 (docs/advisor.md).
            """)

    @Option(name: .long, help: "The server's base URL, e.g. https://api.deepseek.com or http://127.0.0.1:8000.")
    var baseURL: String
    @Option(name: .long, help: "The model name the server knows.")
    var model: String
    @Option(name: .long, help: "Provider dialect: deepseek, vllm, ollama, llamacpp, openai.")
    var provider: String = "openai"
    @Option(name: .long, help: "Path of the chat completions endpoint.")
    var path: String = "/v1/chat/completions"
    @Option(name: .long, help: "Environment variable holding the API key (none sent when unset or empty).")
    var apiKeyEnv: String = "DANG_EVAL_API_KEY"
    @Option(name: .long, help: "PostgreSQL URL or conninfo (or DATABASE_URL, or the PG* variables).")
    var databaseURL: String?
    @Option(name: .long, help: "held-out (the decisions export-finetune leaves out) or all.")
    var split: AdvisorTestSet.Split = .heldOut
    @Option(name: .long, help: "The held-out share export-finetune was run with, 0...0.5.")
    var heldOutShare: Double = 0.1
    @Option(name: .long, help: "At most this many decisions, oldest first.")
    var limit: Int = 1000
    @Option(name: .long, help: "Only decisions at or after this epoch ms.")
    var from: Int64?
    @Option(name: .long, help: "Only decisions before this epoch ms.")
    var to: Int64?
    @Option(name: .long, help: "Questions in flight at once.")
    var concurrency: Int = 2
    @Option(name: .long, help: "Per-call timeout in seconds.")
    var timeout: Int = 120
    @Flag(name: .long, help: "Print the report as one JSON object on stdout.")
    var json = false

    func validate() throws {
        guard (0...0.5).contains(self.heldOutShare) else { throw ValidationError("--held-out-share must be in 0...0.5") }
        guard (1...64).contains(self.concurrency) else { throw ValidationError("--concurrency must be in 1...64") }
        guard self.limit >= 1 else { throw ValidationError("--limit must be at least 1") }
        guard self.timeout >= 1 else { throw ValidationError("--timeout must be at least 1") }
        guard self.baseURL.hasPrefix("http://") || self.baseURL.hasPrefix("https://") else {
            throw ValidationError("--base-url must start with http:// or https://")
        }
    }

    func run() async throws {
        let environment = ProcessInfo.processInfo.environment
        let url = self.databaseURL ?? environment["DATABASE_URL"] ?? ""
        let cases: [AdvisorTestSet.Case]
        do {
            cases = try AdvisorTestSet.load(
                split: self.split, heldOutShare: self.heldOutShare, limit: self.limit, from: self.from, to: self.to,
                on: PostgresConnection(conninfo: url))
        } catch {
            printError("eval-advisor: \(error)")
            throw ExitCode(1)
        }
        guard !cases.isEmpty else {
            printError("eval-advisor: no recorded decision with a finished invocation in the \(self.split.rawValue) split; nothing to evaluate")
            throw ExitCode(1)
        }
        var settings = LLMSettings(
            baseURL: self.baseURL, model: self.model, provider: self.provider, apiKey: environment[self.apiKeyEnv].flatMap { $0.isEmpty ? nil : $0 })
        settings.path = self.path
        settings.timeout = .seconds(self.timeout)
        settings.maxConcurrent = self.concurrency
        // Every question asked: no cache, and no breaker cutting a slow server short.
        settings.cacheEntries = 0
        settings.cacheTTL = .zero
        settings.breakerThreshold = Int.max
        let advisor = Advisor(client: LLMClient(settings: settings))
        let total = cases.count
        let interactive = isatty(2) == 1
        printError("eval-advisor: \(total) decisions (\(self.split.rawValue)) against \(self.model) at \(self.baseURL)")
        let report = await AdvisorEvaluation.run(cases, advisor: advisor, concurrency: self.concurrency) { report in
            let line = "[\(report.asked)/\(total)] valid \(report.valid), agreed \(report.agreed), matched \(report.matchedOutcome), p50 \(report.latency(0.5)) ms"
            if interactive {
                FileHandle.standardError.write(Data(("\r\u{1B}[K" + line + (report.asked == total ? "\n" : "")).utf8))
            } else if report.asked == total || report.asked % max(1, total / 10) == 0 {
                printError(line)
            }
        }
        if self.json {
            try printJSON(report)
        } else {
            func percent(_ value: Double) -> String { String(format: "%.1f %%", value * 100) }
            print("decisions asked     \(report.asked)")
            print("valid answers       \(report.valid) (\(percent(report.validity))); invalid \(report.invalid), unavailable \(report.unavailable)")
            print("agreed with rules   \(report.agreed) (\(percent(report.agreement)) of valid); would skip \(report.disagreed)")
            print("matched the outcome \(report.matchedOutcome) (\(percent(report.outcomeMatch)) of valid)")
            print("latency             p50 \(report.latency(0.5)) ms, p99 \(report.latency(0.99)) ms")
        }
    }
}

extension AdvisorTestSet.Split: ExpressibleByArgument {}
