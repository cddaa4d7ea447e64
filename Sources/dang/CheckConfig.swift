import ArgumentParser
import Foundation
import OrchestratorCore

/// `dang check-config`: reports every problem with file, line and key.
struct CheckConfig: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Check a configuration file and its topic map; list every problem with file, line and key.")

    @Option(name: .long, help: "Configuration file.")
    var config: String = "config/orchestrator.yaml"

    func run() throws {
        do {
            let loaded = try OrchestratorConfig.load(file: self.config)
            for warning in loaded.warnings { print(warning) }
            print(
                "\(self.config): ok (\(loaded.topicMap.tags.count) tags in the topic map, "
                    + "\(loaded.warnings.count) warning\(loaded.warnings.count == 1 ? "" : "s"))")
        } catch {
            for issue in error.issues { print(issue) }
            let errors = error.issues.filter { $0.severity == .error }.count
            printError("\(self.config): \(errors) error\(errors == 1 ? "" : "s")")
            throw ExitCode(1)
        }
    }
}
