import Foundation
import Testing

@testable import DangTools
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

    /// A short run of the sequence targets on every `make test`: seeded random programs (the same
    /// ones each run), through the debug build, whose overflow checks trap like the release build's.
    /// Long runs: `scripts/fuzz.sh` (libFuzzer, coverage-guided, all targets).
    @Test(arguments: [UInt8(4), UInt8(5)])
    func `message sequences with extreme seq, timestamps and values never trap`(target: UInt8) {
        var generator = SplitMix64(seed: 0x6461_6E67 &+ UInt64(target))
        for _ in 0..<400 {
            let length = Int(generator.next() % 900) + 16
            var bytes: [UInt8] = [target]
            for _ in 0..<length { bytes.append(UInt8(truncatingIfNeeded: generator.next())) }
            bytes.withUnsafeBytes { FuzzTargets.run($0) }
        }
    }
}
