import Foundation
import Yams
package import Mosquitto

/// `orchestrator.llm`.
package struct LLMSettings: Sendable {
    /// `deepseek`, `vllm`, `ollama`, `llamacpp` or `openai` (any other OpenAI-compatible server).
    package var provider = "deepseek"
    package var baseURL = "https://api.deepseek.com"
    package var path = "/v1/chat/completions"
    package var model = "deepseek-v4-flash"
    package var apiKey: String?
    package var enabled = true
    /// The hard total deadline of one call, retries included.
    package var timeout: Duration = .seconds(120)
    package var maxAttempts = 3
    package var maxConcurrent = 2
    package var maxTokens = 8192
    package var breakerThreshold = 5
    package var breakerCooldown: Duration = .seconds(60)

    static let providers = ["deepseek", "vllm", "ollama", "llamacpp", "openai"]

    /// Whether the advisor runs: enabled, and a key for the hosted APIs (self-hosted servers need none).
    package var isActive: Bool {
        self.enabled && (self.apiKey != nil || !["deepseek", "openai"].contains(self.provider))
    }
}
