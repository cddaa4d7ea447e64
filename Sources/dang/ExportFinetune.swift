import ArgumentParser
import Foundation
import LibPQ
import OrchestratorCore

/// `dang export-finetune`: decisions with their outcomes as chat-format JSONL.
struct ExportFinetune: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export-finetune",
        abstract: "Write decisions with successful outcomes as chat-format JSONL (train and validation files) for fine-tuning the advisor.")

    @Option(name: .long, help: "PostgreSQL URL or conninfo (or DATABASE_URL, or the PG* variables).")
    var databaseURL: String?
    @Option(name: .long, help: "Training examples, JSONL.")
    var train: String = "finetune-train.jsonl"
    @Option(name: .long, help: "Validation examples, JSONL.")
    var validation: String = "finetune-validation.jsonl"
    @Option(name: .long, help: "Share of examples for validation, 0...0.5.")
    var validationShare: Double = 0.1
    @Option(name: .long, help: "Share of decisions held out of both files for `dang eval-advisor`, 0...0.5.")
    var heldOutShare: Double = 0.1
    @Flag(name: .long, help: "Also decisions whose invocation failed, timed out or never ran (with their outcome in the example).")
    var includeFailed = false
    @Option(name: .long, help: "Only decisions at or after this epoch ms.")
    var from: Int64?
    @Option(name: .long, help: "Only decisions before this epoch ms.")
    var to: Int64?

    func validate() throws {
        guard (0...0.5).contains(self.validationShare) else { throw ValidationError("--validation-share must be in 0...0.5") }
        guard (0...0.5).contains(self.heldOutShare) else { throw ValidationError("--held-out-share must be in 0...0.5") }
    }

    func run() throws {
        let url = self.databaseURL ?? ProcessInfo.processInfo.environment["DATABASE_URL"] ?? ""
        var options = FinetuneExport.Options()
        options.includeFailed = self.includeFailed
        options.validationShare = self.validationShare
        options.heldOutShare = self.heldOutShare
        options.from = self.from
        options.to = self.to
        var train: [UInt8] = []
        var validation: [UInt8] = []
        let summary: FinetuneExport.Summary
        do {
            summary = try FinetuneExport.export(options, on: PostgresConnection(conninfo: url), train: &train, validation: &validation)
        } catch {
            printError("export-finetune: \(error)")
            throw ExitCode(1)
        }
        do {
            try Data(train).write(to: URL(fileURLWithPath: self.train))
            try Data(validation).write(to: URL(fileURLWithPath: self.validation))
        } catch {
            printError("export-finetune: cannot write: \(error)")
            throw ExitCode(1)
        }
        print(
            "\(summary.decisions) decisions, \(summary.duplicates) duplicates left out: \(summary.train) → \(self.train), "
                + "\(summary.validation) → \(self.validation); \(summary.heldOut) held out for dang eval-advisor "
                + "(\(self.includeFailed ? "all outcomes" : "decisions whose invocation did not end ok are not examples; --include-failed adds them"))")
    }
}
