package import Foundation

/// `dang eval-advisor`: an advisor (any OpenAI-compatible server: DeepSeek, a fine-tuned R1 on vLLM…)
/// asked the questions of recorded decisions whose outcome is known, and judged on its answers
/// (docs/advisor.md, "Validating an advisor"):
/// - **validity**: answers that keep the contract (``Advisor/validate(_:question:)``), of all asked;
/// - **agreement**: valid answers that confirm the rules' invocation;
/// - **outcome match**: valid answers that were right in hindsight — invoke when the invocation
///   ended `ok` (with a positive benefit, if it reported one), skip when it did not;
/// - **latency** p50 and p99 of the calls.
package enum AdvisorEvaluation {
    package struct Report: Sendable, Equatable, Encodable {
        package var asked = 0
        package var valid = 0
        package var agreed = 0
        package var disagreed = 0
        package var invalid = 0
        package var unavailable = 0
        package var matchedOutcome = 0
        /// Milliseconds of every call, in the order they ended.
        package var latencies: [Int] = []

        package var validity: Double { self.asked == 0 ? 0 : Double(self.valid) / Double(self.asked) }
        package var agreement: Double { self.valid == 0 ? 0 : Double(self.agreed) / Double(self.valid) }
        package var outcomeMatch: Double { self.valid == 0 ? 0 : Double(self.matchedOutcome) / Double(self.valid) }

        /// The q-quantile of the latencies, in ms (0 before any call).
        package func latency(_ q: Double) -> Int { self.latencies.quantile(q) ?? 0 }

        package mutating func add(_ verdict: Advisor.Verdict, latencyMilliseconds: Int, worthIt: Bool) {
            self.asked += 1
            self.latencies.append(latencyMilliseconds)
            switch verdict {
            case .agreed:
                self.valid += 1
                self.agreed += 1
                if worthIt { self.matchedOutcome += 1 }
            case .disagreed:
                self.valid += 1
                self.disagreed += 1
                if !worthIt { self.matchedOutcome += 1 }
            case .invalid:
                self.invalid += 1
            case .unavailable:
                self.unavailable += 1
            }
        }

        enum CodingKeys: String, CodingKey {
            case asked, valid, agreed, disagreed, invalid, unavailable
            case matchedOutcome = "matched_outcome", validity, agreement, outcomeMatch = "outcome_match"
            case latencyP50 = "latency_p50_ms", latencyP99 = "latency_p99_ms"
        }

        package func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(self.asked, forKey: .asked)
            try c.encode(self.valid, forKey: .valid)
            try c.encode(self.agreed, forKey: .agreed)
            try c.encode(self.disagreed, forKey: .disagreed)
            try c.encode(self.invalid, forKey: .invalid)
            try c.encode(self.unavailable, forKey: .unavailable)
            try c.encode(self.matchedOutcome, forKey: .matchedOutcome)
            try c.encode(Self.rounded(self.validity), forKey: .validity)
            try c.encode(Self.rounded(self.agreement), forKey: .agreement)
            try c.encode(Self.rounded(self.outcomeMatch), forKey: .outcomeMatch)
            try c.encode(self.latency(0.5), forKey: .latencyP50)
            try c.encode(self.latency(0.99), forKey: .latencyP99)
        }

        private static func rounded(_ value: Double) -> Double { (value * 10_000).rounded() / 10_000 }
    }

    /// Asks the advisor every case, `concurrency` at a time; `progress` is called after each answer
    /// with the report so far.
    package static func run(
        _ cases: [AdvisorTestSet.Case], advisor: Advisor, concurrency: Int, progress: @Sendable (Report) -> Void = { _ in }
    ) async -> Report {
        var report = Report()
        await withTaskGroup(of: (Advisor.Answer, Bool).self) { group in
            var next = 0
            func start() {
                guard next < cases.count else { return }
                let item = cases[next]
                next += 1
                group.addTask { (await advisor.advise(item.question), item.worthIt) }
            }
            for _ in 0..<max(1, concurrency) { start() }
            while let (answer, worthIt) = await group.next() {
                report.add(answer.verdict, latencyMilliseconds: answer.exchange.latencyMilliseconds, worthIt: worthIt)
                progress(report)
                start()
            }
        }
        return report
    }
}
