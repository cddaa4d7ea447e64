import Foundation
import Subprocess
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Why a command-transport invocation produced no result.
package struct CommandFailure: Error, Sendable, CustomStringConvertible {
    package let description: String

    package init(_ description: String) {
        self.description = description
    }
}

/// The second module transport (docs/decisions.md): a module as a local command. The invocation JSON goes to its
/// stdin; its stdout (one JSON object, at most 16 MiB) is the result.
///
/// The command gets an explicit environment — only the variables its module's `environment` list
/// names (by default `PATH`, `HOME`, `LANG`, `LC_ALL`, `TZ`), never the orchestrator's secrets
/// (`DATABASE_URL`, `DANG_API_TOKEN`, the LLM key) — and runs in a session and process group of its
/// own: past the timeout the whole group (the command and whatever it started) gets SIGTERM, then
/// SIGKILL two seconds later.
package enum CommandTransport {
    static let outputLimit = 16 << 20

    /// What a command is given when its module does not say: enough to find programs and speak the
    /// locale, nothing secret.
    package static let defaultEnvironment = ["PATH", "HOME", "LANG", "LC_ALL", "TZ"]

    /// The named variables of this process's environment (unset ones left out).
    package static func environment(
        allowing names: [String], from environment: [String: String] = ProcessInfo.processInfo.environment
    ) -> [String: String] {
        var chosen: [String: String] = [:]
        for name in names { if let value = environment[name] { chosen[name] = value } }
        return chosen
    }

    @Sendable
    package static func run(_ argv: [String], environment: [String: String], input: [UInt8], timeout: Duration) async -> Result<[UInt8], CommandFailure> {
        guard let program = argv.first, !program.isEmpty else { return .failure(CommandFailure("no command configured")) }
        let options = {
            var options = PlatformOptions()
            options.createSession = true
            options.teardownSequence = [
                .gracefulShutDown(toProcessGroup: true, allowedDurationToNextStep: .seconds(2)),
                .send(signal: .kill, toProcessGroup: true, allowedDurationToNextStep: .milliseconds(200)),
            ]
            return options
        }()
        let variables = Dictionary(uniqueKeysWithValues: environment.map { (Environment.Key(stringLiteral: $0.key), $0.value) })
        let executable: Executable = program.contains("/") ? .path(FilePath(program)) : .name(program)
        do {
            return try await withThrowingTaskGroup(of: Result<[UInt8], CommandFailure>?.self) { group in
                group.addTask {
                    let result = try await Subprocess.run(
                        executable, arguments: Arguments(Array(argv.dropFirst())), environment: .custom(variables), platformOptions: options,
                        input: .array(input),
                        output: .bytes(limit: Self.outputLimit), error: .string(limit: 64 << 10))
                    guard case .exited(let code) = result.terminationStatus, code == 0 else {
                        let stderr = result.standardError.suffix(500)
                        return .failure(CommandFailure("\(program) ended with \(result.terminationStatus): \(stderr)"))
                    }
                    return .success(result.standardOutput)
                }
                group.addTask {
                    try await Task.sleep(for: timeout)
                    return nil
                }
                let first = try await group.next() ?? nil
                group.cancelAll()
                return first ?? .failure(CommandFailure("\(program) gave no result within \(timeout) and was stopped"))
            }
        } catch {
            return .failure(CommandFailure("\(program) could not be run: \(error)"))
        }
    }
}
