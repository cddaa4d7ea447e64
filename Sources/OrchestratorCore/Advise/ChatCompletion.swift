package import Foundation

/// The OpenAI-compatible `/v1/chat/completions` exchange as DeepSeek's API and self-hosted R1
/// servers (vLLM, Ollama, llama.cpp) speak it: the request we send and what we read back
/// (`docs/advisor.md`, `../shared/notes/llm-providers.md`).
package enum ChatCompletion {
    package struct Message: Sendable, Equatable {
        package let role: String
        package let content: String

        package init(role: String, content: String) {
            self.role = role
            self.content = content
        }
    }

    /// The request body. DeepSeek ignores `temperature` in thinking mode and refuses `logprobs`:
    /// neither is sent to it; self-hosted distills get temperature 0.6 (their model cards' advice).
    package static func requestBody(messages: [Message], model: String, provider: String, maxTokens: Int, json: Bool) -> [UInt8] {
        var object: [String: Any] = [
            "model": model,
            "messages": messages.map { ["role": $0.role, "content": $0.content] },
            "max_tokens": maxTokens,
            "stream": false,
        ]
        if json { object["response_format"] = ["type": "json_object"] }
        if provider == "deepseek" {
            object["thinking"] = ["type": "enabled"]
        } else {
            object["temperature"] = 0.6
        }
        return Array((try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data())
    }

    /// A usable answer: the content, and the reasoning kept apart from it.
    package struct Completion: Sendable, Equatable {
        package let content: String
        package let reasoning: String?
        package let finishReason: String?
        package let model: String?
    }

    /// Why a 200 response carries no usable answer.
    package enum Problem: Error, Sendable, Equatable {
        /// `{"error": {...}}` in the body (DeepSeek can send it under 200 after keep-alive lines).
        case errorObject(type: String, message: String)
        /// Only whitespace where the answer should be (DeepSeek's JSON mode blanks invalid output).
        case blank
        /// `finish_reason: "length"`: the answer was cut off (or thinking used the whole budget).
        case truncated
        /// `finish_reason: "insufficient_system_resource"`: DeepSeek stopped for lack of capacity.
        case insufficientResource
        /// Not a chat completion at all.
        case malformed(String)

        /// Worth another attempt (the same request may well succeed).
        package var isRetryable: Bool {
            switch self {
            case .errorObject, .blank, .insufficientResource: true
            case .truncated, .malformed: false
            }
        }
    }

    private struct Wire: Decodable {
        struct Choice: Decodable {
            struct Message: Decodable {
                let content: String?
                let reasoning_content: String?
                let reasoning: String?
                let thinking: String?
            }
            let message: Message?
            let finish_reason: String?
        }
        struct ErrorObject: Decodable {
            let message: String?
            let type: String?
        }
        let choices: [Choice]?
        let model: String?
        let error: ErrorObject?
    }

    /// Reads a response body: leading blank lines (keep-alive) are skipped; the reasoning is taken
    /// from `reasoning_content`, `reasoning` or `thinking`, or from `<think>…</think>` (or a bare
    /// `</think>`, when the template opened the tag) at the start of the content, and never left
    /// in the answer.
    package static func parse(_ body: [UInt8]) -> Result<Completion, Problem> {
        let trimmed = body.drop { $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }
        guard !trimmed.isEmpty else { return .failure(.blank) }
        let wire: Wire
        do {
            wire = try JSONDecoder().decode(Wire.self, from: Data(trimmed))
        } catch {
            return .failure(.malformed("the body is not a chat completion"))
        }
        if let error = wire.error {
            return .failure(.errorObject(type: error.type ?? "unknown", message: String((error.message ?? "").prefix(500))))
        }
        guard let choice = wire.choices?.first, let message = choice.message else { return .failure(.malformed("no choices")) }
        var content = message.content ?? ""
        var reasoning = [message.reasoning_content, message.reasoning, message.thinking].compactMap { $0 }.first { !$0.isEmpty }
        if let close = content.range(of: "</think>") {
            var inline = String(content[..<close.lowerBound])
            if let open = inline.range(of: "<think>") { inline = String(inline[open.upperBound...]) }
            let inlineReasoning = inline.trimmingCharacters(in: .whitespacesAndNewlines)
            if !inlineReasoning.isEmpty { reasoning = [reasoning, inlineReasoning].compactMap { $0 }.joined(separator: "\n") }
            content = String(content[close.upperBound...])
        } else if let open = content.range(of: "<think>") {
            // Thinking that never closed: there is no answer, only reasoning.
            reasoning = String(content[open.upperBound...])
            content = ""
        }
        switch choice.finish_reason {
        case "length": return .failure(.truncated)
        case "insufficient_system_resource": return .failure(.insufficientResource)
        default: break
        }
        content = content.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !content.isEmpty else { return .failure(.blank) }
        return .success(Completion(content: content, reasoning: reasoning, finishReason: choice.finish_reason, model: wire.model))
    }

    /// The JSON object in an answer: the whole content, or the one inside a Markdown code fence,
    /// or the text from the first `{` to its matching `}`.
    package static func jsonObject(in content: String) -> [String: Any]? {
        if let object = Self.decode(content) { return object }
        var text = Substring(content)
        if let fence = text.range(of: "```") {
            text = text[fence.upperBound...]
            if text.hasPrefix("json") { text = text.dropFirst(4) }
            if let end = text.range(of: "```") { text = text[..<end.lowerBound] }
            if let object = Self.decode(String(text)) { return object }
        }
        guard let start = content.firstIndex(of: "{") else { return nil }
        var depth = 0
        var inString = false
        var escaped = false
        for index in content[start...].indices {
            let character = content[index]
            if inString {
                if escaped { escaped = false } else if character == "\\" { escaped = true } else if character == "\"" { inString = false }
                continue
            }
            switch character {
            case "\"": inString = true
            case "{": depth += 1
            case "}":
                depth -= 1
                if depth == 0 { return Self.decode(String(content[start...index])) }
            default: break
            }
        }
        return nil
    }

    private static func decode(_ text: String) -> [String: Any]? {
        (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any]
    }

    /// `Retry-After` as delay-seconds or an HTTP-date, relative to `now`.
    package static func retryAfter(_ value: String?, now: Date = Date()) -> Duration? {
        guard let value = value?.trimmingCharacters(in: .whitespaces), !value.isEmpty else { return nil }
        // A server's number is capped at a day (a huge one would overflow the conversion and trap).
        if let seconds = Double(value), seconds.isFinite, seconds >= 0 { return .milliseconds(Int64(min(seconds, 86_400) * 1000)) }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        guard let date = formatter.date(from: value) else { return nil }
        return .milliseconds(Int64((min(max(0, date.timeIntervalSince(now)), 86_400) * 1000).rounded()))
    }
}
