import Foundation
package import OrchestratorCore

/// Fuzz targets for the parsers that read untrusted bytes: the sample payload parser, the Sparkplug
/// B decoder and session, module results and LLM responses, and message sequences through the whole
/// ingest pipeline (Sparkplug sessions; sample streams with extreme times and values). The first
/// byte picks the target.
///
/// - `scripts/fuzz.sh` builds this with libFuzzer (`-sanitize=fuzzer`, `-DFUZZING`) and runs it for
///   a bounded time on the corpus in `Tests/Fuzz/corpus`.
/// - A plain build is a replay tool: `dang-fuzz FILE…` feeds files (a corpus, a crash) through the
///   same code, which is how crashes become regression tests.
package enum FuzzTargets {
    nonisolated(unsafe) static var session = SparkplugSession(maxNodes: 64, maxAliasesPerNode: 256)

    package static func run(_ bytes: UnsafeRawBufferPointer) {
        guard let selector = bytes.first else { return }
        let rest = UnsafeRawBufferPointer(rebasing: bytes.dropFirst())
        switch selector % 6 {
        case 0:
            _ = SamplePayloadParser.parse(rest)
        case 1:
            // Topic bytes up to the first NUL, then the payload.
            let split = rest.firstIndex(of: 0) ?? rest.endIndex
            let topic = "spBv1.0/" + String(decoding: rest[rest.startIndex..<split], as: UTF8.self)
            let payload = UnsafeRawBufferPointer(rebasing: rest[min(split + 1, rest.endIndex)...])
            _ = Self.session.handle(topic: topic, payload: payload, now: 1_790_000_000_000)
        case 2:
            _ = ModuleResult.parse(Array(rest))
        case 4:
            Self.sparkplugSequence(rest)
        case 5:
            Self.sampleStream(rest)
        default:
            _ = ChatCompletion.parse(Array(rest))
            _ = ChatCompletion.jsonObject(in: String(decoding: rest, as: UTF8.self))
        }
    }
}

