import ArgumentParser
import Foundation
import Logging
import OrchestratorCore

/// `dang replay` (docs/detection.md, "Offline replay").
struct Replay: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a CSV through the live detectors, row by row, and write timestamp,anomaly_score,alarm.")

    @Option(name: .long, help: "Input CSV: a header, the timestamp first, one column per tag.")
    var input: String
    @Option(name: .long, help: "A CSV of the same shape holding normal operation, to learn a baseline from.")
    var train: String?
    @Option(name: .long, help: "Output CSV.")
    var output: String
    @Option(name: .long, help: "Configuration file (default: config/orchestrator.yaml if present, else built-in defaults).")
    var config: String?
    @Flag(name: .long, help: "Add one score:<tag> column per tag.")
    var tagScores = false

    func run() throws {
        let config: OrchestratorConfig
        do {
            if let path = self.config ?? (FileManager.default.fileExists(atPath: "config/orchestrator.yaml") ? "config/orchestrator.yaml" : nil) {
                config = try OrchestratorConfig.load(file: path)
            } else {
                config = .defaults()
            }
        } catch {
            printError(error.description)
            throw ExitCode(2)
        }
        do {
            let table = try ReplayTable.load(file: self.input)
            let baseline = try self.train.map { path throws(ReplayTable.Problem) in try ReplayTable.load(file: path) }
            var replayer = Replayer(config: config)
            replayer.tagScores = self.tagScores
            let (csv, summary) = try replayer.run(input: table, train: baseline)
            do {
                try csv.write(toFile: self.output, atomically: true, encoding: .utf8)
            } catch {
                printError("\(self.output): cannot write: \(error.localizedDescription)")
                throw ExitCode(1)
            }
            let kinds = summary.raisedByKind.sorted { $0.key.rawValue < $1.key.rawValue }.map { "\($0.key.rawValue) \($0.value)" }
            let detail = kinds.isEmpty ? "" : " (\(kinds.joined(separator: ", ")))"
            printError(
                "\(self.input): \(summary.rows) rows, \(summary.alertsRaised) alerts raised\(detail), "
                    + "\(summary.alarmedRows) rows in alarm → \(self.output)")
        } catch let problem as ReplayTable.Problem {
            printError(problem.description)
            throw ExitCode(2)
        }
    }
}
