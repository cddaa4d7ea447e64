import Curl
package import Foundation
import NIOPosix
import Synchronization

/// The client of the OpenAI-compatible chat-completions endpoint, over libcurl.
///
/// Outside in: answer cache (keyed by the request's bytes, `cache_ttl`) → circuit breaker →
/// concurrency limit → attempts within one hard total deadline (`llm.timeout`: keep-alive bytes
/// cannot extend it) → response parsing. Retried: 429, 500, 502, 503, 504, DeepSeek's
/// `insufficient_system_resource`, an error object or a blank answer under 200, and broken
/// connections — after `Retry-After` when the server sends it, else after a jittered exponential
/// backoff. Never retried: 400, 401, 402, 404, 422, a truncated (`length`) or malformed answer.
/// Nothing here throws: every call ends in an ``LLMResult`` the caller records.
package final class LLMClient: Sendable {
    /// How a call ended.
    package enum Failure: Error, Sendable, Equatable, CustomStringConvertible {
        /// The breaker is open after repeated failures.
        case circuitOpen
        /// Too many calls in flight.
        case busy
        /// An HTTP error status, with the provider's message.
        case http(status: Int, message: String)
        case transport(String)
        /// The total deadline passed.
        case deadline
        /// A 200 without a usable answer.
        case answer(ChatCompletion.Problem)

        package var description: String {
            switch self {
            case .circuitOpen: "the LLM circuit breaker is open after repeated failures"
            case .busy: "too many LLM calls in flight"
            case .http(let status, let message): "HTTP \(status): \(message)"
            case .transport(let why): why
            case .deadline: "no answer within the total deadline"
            case .answer(let problem): "unusable answer: \(problem)"
            }
        }

        /// Short status word for the record (`llm_exchanges.status`).
        package var status: String {
            switch self {
            case .circuitOpen: "circuit_open"
            case .busy: "busy"
            case .http: "http_error"
            case .transport: "transport_error"
            case .deadline: "timeout"
            case .answer(.truncated): "truncated"
            case .answer(.blank): "blank"
            case .answer: "invalid"
            }
        }
    }

    package struct Result: Sendable {
        package let outcome: Swift.Result<ChatCompletion.Completion, Failure>
        package let attempts: Int
        package let latency: Duration
        package let cached: Bool
        /// The request body sent (for `llm_exchanges.request`).
        package let request: [UInt8]
        /// The last response body received, if any.
        package let response: [UInt8]?
        /// DeepSeek's `x-ds-trace-id`, for their support.
        package let traceID: String?
    }

    /// Counts for status and metrics.
    package struct Counters: Sendable, Equatable {
        package var calls = 0
        package var attempts = 0
        package var failures = 0
        package var cacheHits = 0
        package var rejectedOpen = 0
        package var rejectedBusy = 0
    }

    private struct State {
        var cache: [String: (completion: ChatCompletion.Completion, expires: ContinuousClock.Instant)] = [:]
        var cacheOrder: [String] = []
        var inFlight = 0
        var consecutiveFailures = 0
        var openUntil: ContinuousClock.Instant?
        var halfOpenTrial = false
        var counters = Counters()
    }

    package let settings: LLMSettings
    private let state = Mutex(State())

    package init(settings: LLMSettings) {
        self.settings = settings
        // libcurl blocks: the transfers run on threads of the client's own, as many as calls may
        // be in flight (never the cooperative pool; a queued call would spend its deadline waiting).
        self.transfers = NIOThreadPool(numberOfThreads: max(1, settings.maxConcurrent))
        self.transfers.start()
    }

    deinit {
        self.transfers.shutdownGracefully { _ in }
    }

    /// Where transfers run.
    private let transfers: NIOThreadPool

    package var counters: Counters { self.state.withLock { $0.counters } }

    /// Asks once (with retries inside the deadline).
    package func complete(_ messages: [ChatCompletion.Message], json: Bool = true) async -> Result {
        let started = ContinuousClock.now
        let body = ChatCompletion.requestBody(
            messages: messages, model: self.settings.model, provider: self.settings.provider, maxTokens: self.settings.maxTokens, json: json)
        let key = String(decoding: body, as: UTF8.self)
        func finish(_ outcome: Swift.Result<ChatCompletion.Completion, Failure>, attempts: Int, cached: Bool = false, response: [UInt8]? = nil, trace: String? = nil) -> Result {
            Result(outcome: outcome, attempts: attempts, latency: .now - started, cached: cached, request: body, response: response, traceID: trace)
        }

        enum Admission { case cached(ChatCompletion.Completion), open, busy, go }
        let admission = self.state.withLock { state -> Admission in
            state.counters.calls += 1
            let now = ContinuousClock.now
            if let entry = state.cache[key], entry.expires > now {
                state.counters.cacheHits += 1
                return .cached(entry.completion)
            }
            if let until = state.openUntil {
                if now < until || state.halfOpenTrial {
                    state.counters.rejectedOpen += 1
                    return .open
                }
                state.halfOpenTrial = true  // one trial call while half-open
            }
            guard state.inFlight < self.settings.maxConcurrent else {
                state.counters.rejectedBusy += 1
                return .busy
            }
            state.inFlight += 1
            return .go
        }
        switch admission {
        case .cached(let completion): return finish(.success(completion), attempts: 0, cached: true)
        case .open: return finish(.failure(.circuitOpen), attempts: 0)
        case .busy: return finish(.failure(.busy), attempts: 0)
        case .go: break
        }

        let deadline = started + self.settings.timeout
        var attempts = 0
        var lastResponse: [UInt8]? = nil
        var trace: String? = nil
        var outcome: Swift.Result<ChatCompletion.Completion, Failure> = .failure(.deadline)
        attemptLoop: while attempts < self.settings.maxAttempts {
            let remaining = deadline - .now
            guard remaining > .milliseconds(1) else {
                outcome = .failure(.deadline)
                break
            }
            attempts += 1
            self.state.withLock { $0.counters.attempts += 1 }
            var request = HTTPRequest(url: self.settings.baseURL.trimmingSuffix("/") + self.settings.path)
            request.headers = ["Content-Type: application/json", "Accept: application/json"]
            if let key = self.settings.apiKey { request.headers.append("Authorization: Bearer \(key)") }
            request.body = body
            request.totalTimeout = remaining
            request.connectTimeout = min(self.settings.connectTimeout, remaining)
            let transfer = await self.perform(request)
            var retryAfter: Duration? = nil
            switch transfer {
            case .failure(.timedOut):
                outcome = .failure(.deadline)
                break attemptLoop
            case .failure(let failure):
                outcome = .failure(.transport(failure.description))
            case .success(let response):
                lastResponse = response.body
                trace = response.headers["x-ds-trace-id"] ?? trace
                retryAfter = ChatCompletion.retryAfter(response.headers["retry-after"])
                if response.status == 200 {
                    switch ChatCompletion.parse(response.body) {
                    case .success(let completion):
                        outcome = .success(completion)
                        break attemptLoop
                    case .failure(let problem):
                        outcome = .failure(.answer(problem))
                        if !problem.isRetryable { break attemptLoop }
                    }
                } else {
                    outcome = .failure(.http(status: response.status, message: Self.errorMessage(response.body)))
                    guard [429, 500, 502, 503, 504].contains(response.status) else { break attemptLoop }
                }
            }
            guard attempts < self.settings.maxAttempts else { break }
            // Wait as told, or back off with jitter — never past the deadline.
            let wait = retryAfter ?? Self.backoff(self.settings.backoff, attempt: attempts)
            let left = deadline - .now
            if wait >= left {
                if retryAfter != nil { break }  // the server asks for more time than we have
                try? await Task.sleep(for: max(.zero, left - .milliseconds(1)))
                outcome = .failure(.deadline)
                break
            }
            // Cancelled while waiting (the service group is stopping): the last failure stands.
            do { try await Task.sleep(for: wait) } catch { break }
        }

        let result = finish(outcome, attempts: attempts, response: lastResponse, trace: trace)
        self.state.withLock { state in
            state.inFlight -= 1
            state.halfOpenTrial = false
            switch outcome {
            case .success(let completion):
                state.consecutiveFailures = 0
                state.openUntil = nil
                if self.settings.cacheTTL > .zero {
                    if state.cache.updateValue((completion, .now + self.settings.cacheTTL), forKey: key) == nil { state.cacheOrder.append(key) }
                    if state.cacheOrder.count > self.settings.cacheEntries {
                        state.cache[state.cacheOrder.removeFirst()] = nil
                    }
                }
            case .failure(let failure):
                state.counters.failures += 1
                // A refused request (400, 422) says nothing about the provider's health.
                if case .http(let status, _) = failure, [400, 404, 422].contains(status) { break }
                state.consecutiveFailures += 1
                if state.consecutiveFailures >= self.settings.breakerThreshold || state.openUntil != nil {
                    state.openUntil = .now + self.settings.breakerCooldown
                }
            }
        }
        return result
    }

    /// The transfer on the client's thread pool, cancelled with the calling task: the transfer's
    /// progress callback aborts once the flag is set.
    private func perform(_ request: HTTPRequest) async -> Swift.Result<HTTPResponse, HTTPFailure> {
        let cancelled = CancelFlag()
        return await withTaskCancellationHandler {
            do {
                return try await self.transfers.runIfActive { CurlTransfer.perform(request, cancelled: { cancelled.isSet }) }
            } catch {
                return .failure(.cancelled)  // the pool is shutting down: the process is stopping
            }
        } onCancel: {
            cancelled.set()
        }
    }

    private final class CancelFlag: Sendable {
        private let flag = Atomic<Bool>(false)
        var isSet: Bool { self.flag.load(ordering: .relaxed) }
        func set() { self.flag.store(true, ordering: .relaxed) }
    }

    /// `base` × 2^(attempt − 1), at most 1,024 × `base`, drawn from its upper half.
    static func backoff(_ base: Duration, attempt: Int) -> Duration {
        Backoff(base: base, cap: base * 1024, jitter: true).delay(attempt: attempt)
    }

    /// The provider's error message (OpenAI envelope), else the start of the body.
    static func errorMessage(_ body: [UInt8]) -> String {
        struct Envelope: Decodable {
            struct Inner: Decodable { let message: String? }
            let error: Inner?
        }
        if let message = (try? JSONDecoder().decode(Envelope.self, from: Data(body)))?.error?.message { return String(message.prefix(300)) }
        return String(String(decoding: body.prefix(300), as: UTF8.self).filter { !$0.isNewline })
    }
}

extension String {
    fileprivate func trimmingSuffix(_ suffix: String) -> String {
        self.hasSuffix(suffix) ? String(self.dropLast(suffix.count)) : self
    }
}
