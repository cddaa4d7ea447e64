import Foundation

/// The one place a JSON text becomes a PostgreSQL `jsonb` value.
///
/// `jsonb` refuses two things JSON itself allows: the escape `\u0000` (SQLSTATE 22P05, "unsupported
/// Unicode escape sequence") and a lone UTF-16 surrogate escape. A manual request, a module result
/// or an LLM answer can carry either, and one refused value would lose its whole row. So every
/// such escape is written as text instead (`\u0000` becomes the six characters `\\u0000`, still valid
/// JSON), and a text that is not JSON at all is kept as `{"raw": text}`.
package enum StorableJSON {
    /// `text` with what `jsonb` refuses escaped: itself in the common case (one pass over its bytes
    /// looking for a backslash; no parse on the record writer's path). A text that is not JSON at
    /// all is refused by PostgreSQL (22P02) and then written as `{"raw": text}` by the writer's
    /// row-by-row retry (``Record/withJSONAsText()``).
    package static func jsonb(_ text: String) -> String {
        self.escapingUnstorable(text)
    }

    package static func jsonb(_ text: String?) -> String? {
        text.map { self.jsonb($0) }
    }

    /// ``jsonb(_:)`` for texts that are often not JSON (an LLM provider's error page): parsed first,
    /// and wrapped as `{"raw": text}` at once when they are not, so their batch is not retried row
    /// by row. For the few, large-grained records (LLM exchanges), not the record writer's bulk.
    package static func checkedJSONB(_ text: String?) -> String? {
        guard let text else { return nil }
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !trimmed.isEmpty,
            (try? JSONSerialization.jsonObject(with: Data(trimmed.utf8), options: [.fragmentsAllowed])) != nil
        else { return self.wrapped(text) }
        return self.escapingUnstorable(trimmed)
    }

    /// `{"raw": text}`, with what `jsonb` refuses escaped: for a text that is not JSON, or a value
    /// the database refused anyway.
    package static func wrapped(_ text: String) -> String {
        var json = JSONWriter()
        json.field("raw", string: String(text.prefix(1_000_000)))
        return self.escapingUnstorable(String(decoding: json.finish(), as: UTF8.self))
    }

    /// Rewrites `\u0000` and unpaired surrogate escapes of a JSON text as escaped text. Outside
    /// strings a backslash cannot occur in valid JSON, so no string tracking is needed.
    static func escapingUnstorable(_ json: String) -> String {
        guard json.utf8.contains(UInt8(ascii: "\\")) else { return json }
        let bytes = Array(json.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count + 16)
        var i = 0
        var changed = false
        while i < bytes.count {
            let byte = bytes[i]
            guard byte == UInt8(ascii: "\\"), i + 1 < bytes.count else {
                out.append(byte)
                i += 1
                continue
            }
            guard bytes[i + 1] == UInt8(ascii: "u"), let unit = self.hex4(bytes, at: i + 2) else {
                out.append(byte)
                out.append(bytes[i + 1])
                i += 2
                continue
            }
            let storable: Bool
            var length = 6
            switch unit {
            case 0: storable = false
            case 0xD800...0xDBFF:
                // A high surrogate is fine only when a low one follows at once.
                if i + 7 < bytes.count, bytes[i + 6] == UInt8(ascii: "\\"), bytes[i + 7] == UInt8(ascii: "u"),
                    let low = self.hex4(bytes, at: i + 8), (0xDC00...0xDFFF).contains(low)
                {
                    storable = true
                    length = 12
                } else {
                    storable = false
                }
            case 0xDC00...0xDFFF: storable = false
            default: storable = true
            }
            if !storable {
                out.append(UInt8(ascii: "\\"))
                changed = true
            }
            out.append(contentsOf: bytes[i..<(i + length)])
            i += length
        }
        return changed ? String(decoding: out, as: UTF8.self) : json
    }

    private static func hex4(_ bytes: [UInt8], at index: Int) -> UInt32? {
        guard index + 4 <= bytes.count else { return nil }
        var value: UInt32 = 0
        for byte in bytes[index..<(index + 4)] {
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: return nil
            }
            value = value << 4 | UInt32(digit)
        }
        return value
    }
}

extension Record {
    /// The same record with every `jsonb` value kept as `{"raw": text}`: what is written when the
    /// database refused the record's JSON anyway. `nil` for kinds without `jsonb` columns.
    func withJSONAsText() -> Record? {
        switch self {
        case .decision(let d):
            return .decision(
                DecisionRecord(
                    decisionID: d.decisionID, ts: d.ts, module: d.module, action: d.action, source: d.source,
                    trigger: StorableJSON.wrapped(d.trigger), reasons: StorableJSON.wrapped(d.reasons), confidence: d.confidence,
                    latencyMicroseconds: d.latencyMicroseconds, parentDecisionID: d.parentDecisionID))
        case .invocation(let i):
            return .invocation(
                InvocationRecord(
                    invocationID: i.invocationID, decisionID: i.decisionID, module: i.module, params: StorableJSON.wrapped(i.params),
                    publishedAt: i.publishedAt, completedAt: i.completedAt, status: i.status, attempts: i.attempts,
                    result: i.result.map(StorableJSON.wrapped), triggerKind: i.triggerKind, scopeKey: i.scopeKey))
        case .llmExchange(let e):
            var copy = LLMExchangeRecord(
                exchangeID: e.exchangeID, decisionID: e.decisionID, ts: e.ts, provider: e.provider, model: e.model,
                request: StorableJSON.wrapped(e.request), response: e.response.map(StorableJSON.wrapped), reasoning: e.reasoning,
                status: e.status, latencyMilliseconds: e.latencyMilliseconds, error: e.error)
            copy.sessionID = e.sessionID
            copy.question = e.question
            copy.answer = e.answer
            return .llmExchange(copy)
        case .alert, .outcome, .approval:
            return nil
        }
    }
}
