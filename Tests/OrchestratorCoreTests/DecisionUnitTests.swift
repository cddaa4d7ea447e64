import Foundation
import Testing

@testable import OrchestratorCore

@Suite struct DecisionUnitTests {
    @Test func `cron fields: lists, ranges, steps, and either day field when both are set`() throws {
        let utc = TimeZone(identifier: "UTC")!
        let schedule = try CronSchedule("*/15 8-17 * * 1-5")
        // 2023-11-14 is a Tuesday.
        let tuesday0815 = Date(timeIntervalSince1970: 1_699_949_700)
        #expect(schedule.matches(tuesday0815, in: utc))
        #expect(!schedule.matches(tuesday0815.addingTimeInterval(60), in: utc))
        #expect(!schedule.matches(tuesday0815.addingTimeInterval(4 * 86400), in: utc))  // Saturday
        let either = try CronSchedule("0 0 1 * 0")  // the 1st, or any Sunday
        #expect(either.matches(Date(timeIntervalSince1970: 1_700_352_000), in: utc))  // Sunday 2023-11-19
        #expect(either.matches(Date(timeIntervalSince1970: 1_701_388_800), in: utc))  // Friday 2023-12-01
        for bad in ["* * * *", "60 * * * *", "*/0 * * * *", "a * * * *", "5-1 * * * *"] {
            #expect(throws: CronSchedule.ParseError.self) { try CronSchedule(bad) }
        }
    }

    @Test func `tag patterns glob across levels`() {
        #expect(TagPattern("*/EFF-*").matches("r1/cdu/cdu1/EFF-101"))
        #expect(TagPattern("r1/cdu/*").matches("r1/cdu/cdu1/TI-101"))
        #expect(!TagPattern("r1/fcc/*").matches("r1/cdu/cdu1/TI-101"))
        #expect(TagPattern("market/?rent").matches("market/brent"))
        #expect(TagPattern("*").matches(""))
    }

    @Test func `outcome statistics start from the prior and learn`() {
        var statistics = OutcomeStatistics()
        #expect(abs(statistics.expectedBenefit(prior: 1) - 2.0 / 3) < 1e-12)
        for _ in 0..<5 { statistics.record(success: false, benefit: nil) }
        #expect(abs(statistics.successRate - 2.0 / 8) < 1e-12)
        statistics.record(success: true, benefit: .nan)
        #expect(statistics.benefitSum == 0)
    }

    @Test func `triggers in the configuration are checked with file, line and key`() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("dang-trigger-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("c.yaml").path
        try """
            orchestrator:
              triggers:
                - name: a
                  module: forecasting
                  alerts: [limit, nonsense]
                - name: a
                  kind: schedule
                  module: nowhere
                - name: b
                  kind: schedule
                  module: etl
                  schedule: "61 * * * *"
              modules:
                forecasting:
                  transport: command
            topics:
              map: ""
            """.write(toFile: file, atomically: true, encoding: .utf8)
        #expect(throws: ConfigError.self) { try OrchestratorConfig.load(file: file, environment: [:]) }
        do {
            _ = try OrchestratorConfig.load(file: file, environment: [:])
        } catch {
            let text = error.description
            #expect(text.contains("c.yaml:5:") && text.contains("\"nonsense\" is not one of"))
            #expect(text.contains("duplicate trigger name \"a\""))
            #expect(text.contains("orchestrator.triggers[1].module") && text.contains("\"nowhere\""))
            #expect(text.contains("orchestrator.triggers[2].schedule") && text.contains("minute field"))
            #expect(text.contains("transport: command needs a command"))
        }
    }

    @Test func `the shipped configuration's triggers load`() throws {
        let config = try OrchestratorConfig.load(file: "config/orchestrator.yaml", environment: [:])
        #expect(
            config.triggers.map(\.name) == [
                "equipment-issue", "market-move", "performance-degradation", "predicted-limit", "forecast-predicts-limit", "crude-margin-move",
                "backfill-gaps",
            ])
        #expect(config.modules[.optimization]?.data == .unit)
        #expect(config.modules[.analysis]?.data == .market)
    }
}

@Suite struct BackoffTests {
    @Test func `doubles from the base up to the cap, and jitter stays in the upper half`() {
        let plain = Backoff(base: .milliseconds(200), cap: .seconds(5), jitter: false)
        #expect((1...7).map { plain.delay(attempt: $0) } == [200, 400, 800, 1600, 3200, 5000, 5000].map { Duration.milliseconds($0) })
        #expect(plain.delay(attempt: 0) == .milliseconds(200))
        #expect(plain.delay(attempt: 1_000) == .seconds(5))  // no overflow far out

        var jittered = Backoff.reconnect
        for attempt in 1...12 {
            let ceiling = min(Duration.milliseconds(250) * (1 << (attempt - 1)), .seconds(30))
            let delay = jittered.next()
            #expect(delay >= ceiling / 2 && delay <= ceiling, "attempt \(attempt): \(delay)")
        }
        #expect(jittered.attempt == 12)
        jittered.reset()
        #expect(jittered.next() <= .milliseconds(250))
    }
}
