import Foundation
import Testing

@testable import OrchestratorCore

/// Every fuzz corpus input and every crash the fuzzer ever found (`Tests/Fuzz/regressions`) goes
/// through the fuzz targets on every `make test`: none may trap.
@Suite struct FuzzRegressionTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fuzz")

    @Test func `the corpus and every past crash are handled without trapping`() throws {
        var count = 0
        for folder in ["corpus", "regressions"] {
            let directory = Self.root.appendingPathComponent(folder)
            for name in try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted() where !name.hasPrefix(".") {
                let data = try Data(contentsOf: directory.appendingPathComponent(name))
                data.withUnsafeBytes { FuzzTargets.run($0) }
                count += 1
            }
        }
        #expect(count >= 7)
    }
}
