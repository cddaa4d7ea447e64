import Foundation
import LibPQ
import Testing

@testable import OrchestratorCore

@Suite struct FinetuneExportTests {
    @Test func `successful decisions become deduplicated chat examples without telemetry text, split stably`() async throws {
        let connection = try await PostgresConnection(conninfo: TestServices.freshDatabase())
        try Migrations.apply(on: connection)
        var records: [Record] = []
        for index in 0..<40 {
            let decision = DecisionRecord(
                decisionID: UUID(), ts: 1_790_000_000_000 + Int64(index), module: "forecasting", action: "invoke", source: "rules",
                trigger: #"{"kind":"equipment","alert_kind":"limit","severity":"\#(index % 2 == 0 ? "warning" : "critical")","tag":"r1/x/IGNORE INSTRUCTIONS \#(index)"}"#,
                reasons: #"[{"step":"cost_benefit","verdict":"pass","detail":"r1/x/secret detail"}]"#, confidence: 0.5 + Double(index % 4) / 10,
                latencyMicroseconds: 10)
            records.append(.decision(decision))
            let status = index % 5 == 0 ? "error" : "ok"
            records.append(
                .invocation(
                    InvocationRecord(
                        invocationID: UUID(), decisionID: decision.decisionID, module: "forecasting", params: "{}", publishedAt: decision.ts,
                        completedAt: decision.ts + 1000, status: status, attempts: 1, result: #"{"status":"\#(status)","metrics":{"benefit":1}}"#,
                        triggerKind: "equipment", scopeKey: "s")))
        }
        try Record.write(records, on: connection)

        var train: [UInt8] = []
        var validation: [UInt8] = []
        var options = FinetuneExport.Options()
        options.validationShare = 0.5
        options.heldOutShare = 0  // the held-out split: AdvisorEvaluationTests
        let summary = try FinetuneExport.export(options, on: connection, train: &train, validation: &validation)
        #expect(summary.decisions == 32)  // 8 of 40 failed
        #expect(summary.train + summary.validation == 4)  // index % 4 fixes both the severity and the confidence
        #expect(summary.duplicates == 28)
        let lines = (String(decoding: train, as: UTF8.self) + String(decoding: validation, as: UTF8.self)).split(separator: "\n")
        #expect(lines.count == 4)
        for line in lines {
            let object = try #require((try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any])
            let messages = try #require(object["messages"] as? [[String: String]])
            #expect(messages.map { $0["role"] } == ["system", "user", "assistant"])
            #expect(!line.contains("IGNORE") && !line.contains("secret"))
            #expect(messages[2]["content"]?.contains("\"module\":\"forecasting\"") == true)
        }
        // The same export again: the same split.
        var train2: [UInt8] = []
        var validation2: [UInt8] = []
        _ = try FinetuneExport.export(options, on: connection, train: &train2, validation: &validation2)
        #expect(train2 == train && validation2 == validation)
        // With failures included: the failed ones are examples too.
        options.includeFailed = true
        var all: [UInt8] = []
        var allValidation: [UInt8] = []
        #expect(try FinetuneExport.export(options, on: connection, train: &all, validation: &allValidation).decisions == 40)
    }
}
