
/// `orchestrator.llm`.
package struct LLMSettings: Sendable, Equatable {
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

    // Not configuration keys: the client's own tuning, set by the code (and by tests).

    /// The TCP/TLS connect deadline of one attempt (within ``timeout``).
    package var connectTimeout: Duration = .seconds(10)
    /// How long an identical question's answer is reused (`decision_engine.cache_ttl`), and how
    /// many answers are kept.
    package var cacheTTL: Duration = .seconds(3600)
    package var cacheEntries = 1000
    /// First backoff step when the server gives no `Retry-After`.
    package var backoff: Duration = .milliseconds(500)

    package init() {}

    /// A server to talk to, everything else at its default.
    package init(baseURL: String, model: String, provider: String, apiKey: String?) {
        self.baseURL = baseURL
        self.model = model
        self.provider = provider
        self.apiKey = apiKey
    }

    /// What the advisor's client uses: `orchestrator.llm`, the answer cache of the decision engine,
    /// and a deadline no longer than `decision_engine.advice_wait`.
    package static func forAdvisor(_ config: OrchestratorConfig) -> LLMSettings {
        var settings = config.llm
        settings.timeout = min(settings.timeout, config.decisionEngine.adviceWait)
        settings.cacheTTL = config.decisionEngine.cacheTTL
        return settings
    }

    static let providers = ["deepseek", "vllm", "ollama", "llamacpp", "openai"]

    /// Whether the advisor runs: enabled, and a key for the hosted APIs (self-hosted servers need none).
    package var isActive: Bool {
        self.enabled && (self.apiKey != nil || !["deepseek", "openai"].contains(self.provider))
    }
}
