package import Foundation

/// The invocations not finished yet, and a memory of recently finished ones (to tell a late or
/// duplicate result from an unknown one). Pure state: the caller supplies the time.
package struct InvocationBook: Sendable {
    /// What a result did.
    package enum Completion: Sendable, Equatable {
        /// Completed an active invocation (now finished).
        case completed(Invocation)
        /// Its invocation had already finished with this status (a retry's second answer, or a
        /// result after the timeout): recorded, not counted again.
        case late(Invocation)
        case duplicate(InvocationStatus)
        case unknown
    }

    /// What the timer found due.
    package enum Due: Sendable, Equatable {
        /// Deliver again (attempt already incremented).
        case retry(Invocation)
        /// No attempts left.
        case timedOut(Invocation)
        /// Nobody approved in time.
        case expired(Invocation)
    }

    private(set) var active: [UUID: Invocation] = [:]
    /// Indexes over `active`, so that a decision costs the same with 10 or 10,000 invocations open.
    private var sentCount: [ModuleName: Int] = [:]
    private var scopes: [String: Int] = [:]
    private var byDecision: [UUID: UUID] = [:]
    private var finished: [UUID: Invocation] = [:]
    private var finishedOrder: [UUID] = []
    private let memory: Int

    package init(memory: Int = 10_000) {
        self.memory = memory
    }

    package var activeInvocations: [Invocation] { Array(self.active.values) }

    /// Delivered and not finished (including those waiting to be retried).
    package func inFlight(_ module: ModuleName) -> Int {
        self.sentCount[module] ?? 0
    }

    package func isPending(module: ModuleName, scopeKey: String) -> Bool {
        (self.scopes["\(module.rawValue)|\(scopeKey)"] ?? 0) > 0
    }

    package func invocation(forDecision id: UUID) -> Invocation? {
        self.byDecision[id].flatMap { self.active[$0] }
    }

    package mutating func add(_ invocation: Invocation) {
        guard self.active.updateValue(invocation, forKey: invocation.id) == nil else { return }
        if invocation.publishedAt != nil { self.sentCount[invocation.module, default: 0] += 1 }
        self.scopes["\(invocation.module.rawValue)|\(invocation.scopeKey)", default: 0] += 1
        self.byDecision[invocation.decisionID] = invocation.id
    }

    /// Lets go of open invocations without finishing them (their shard moved to another instance,
    /// which re-arms them from the record). Returns how many.
    package mutating func handOver(where moved: (Invocation) -> Bool) -> Int {
        let leaving = self.active.values.filter(moved)
        for invocation in leaving {
            self.active[invocation.id] = nil
            if invocation.publishedAt != nil { self.sentCount[invocation.module, default: 1] -= 1 }
            let scope = "\(invocation.module.rawValue)|\(invocation.scopeKey)"
            self.scopes[scope, default: 1] -= 1
            if self.scopes[scope] == 0 { self.scopes[scope] = nil }
            self.byDecision[invocation.decisionID] = nil
        }
        return leaving.count
    }

    /// Replaces an open invocation's state (its params after advice); its keys do not change.
    package mutating func replace(_ invocation: Invocation) {
        guard self.active[invocation.id] != nil else { return }
        self.active[invocation.id] = invocation
    }

    /// Marks a send: attempt counted, deadline set.
    package mutating func sent(_ id: UUID, at now: Int64, timeout: Duration) -> Invocation? {
        guard var invocation = self.active[id] else { return nil }
        invocation.attempts += 1
        if invocation.publishedAt == nil {
            invocation.publishedAt = now
            self.sentCount[invocation.module, default: 0] += 1
        }
        invocation.deadline = now + timeout.milliseconds
        invocation.retryAt = nil
        self.active[id] = invocation
        return invocation
    }

    /// A send that failed at once (publish refused, command would not start): retry after
    /// the backoff, or give up.
    package mutating func sendFailed(
        _ id: UUID, reason: String, at now: Int64, maxRetries: Int, backoff: Duration
    ) -> Due? {
        guard var invocation = self.active[id] else { return nil }
        if invocation.attempts <= maxRetries {
            invocation.deadline = nil
            invocation.retryAt = now + Self.backoff(backoff, attempt: invocation.attempts)
            invocation.result = Self.reason(reason)
            self.active[id] = invocation
            return nil
        }
        invocation.result = Self.reason(reason)
        return .timedOut(self.finish(invocation, status: .error, at: now))
    }

    package mutating func complete(_ result: ModuleResult, at now: Int64) -> Completion {
        if var invocation = self.active[result.invocationID] {
            invocation.result = result.json
            return .completed(self.finish(invocation, status: result.ok ? .ok : .error, at: now))
        }
        guard var done = self.finished[result.invocationID] else { return .unknown }
        if done.status == .timeout || done.status == .expired {
            // Too late to count, but what the module said is kept.
            done.result = #"{"late":true,"received_at":\#(now),"result":\#(result.json)}"#
            self.finished[result.invocationID] = done
            return .late(done)
        }
        return .duplicate(done.status)
    }

    /// Timeouts, retries due and approvals expired at `now`.
    package mutating func due(at now: Int64, maxRetries: Int, backoff: Duration, timeout: (ModuleName) -> Duration) -> [Due] {
        var due: [Due] = []
        for (id, var invocation) in self.active {
            if invocation.awaitingAdvice && invocation.retryAt == nil { continue }
            if invocation.isAwaitingApproval {
                if let expiry = invocation.approvalExpiresAt, now >= expiry {
                    invocation.result = #"{"reason":"approval expired"}"#
                    due.append(.expired(self.finish(invocation, status: .expired, at: now)))
                }
                continue
            }
            if let retryAt = invocation.retryAt {
                guard now >= retryAt else { continue }
                invocation.awaitingAdvice = false
                self.active[id] = invocation
                if let sent = self.sent(id, at: now, timeout: timeout(invocation.module)) {
                    due.append(.retry(sent))
                }
                continue
            }
            guard let deadline = invocation.deadline, now >= deadline else { continue }
            if invocation.attempts <= maxRetries {
                invocation.deadline = nil
                invocation.retryAt = now + Self.backoff(backoff, attempt: invocation.attempts)
                self.active[id] = invocation
            } else {
                invocation.result = #"{"reason":"no result after \#(invocation.attempts) attempts"}"#
                due.append(.timedOut(self.finish(invocation, status: .timeout, at: now)))
            }
        }
        return due
    }

    /// Takes an invocation awaiting approval out of the waiting state (approved → delivered by the
    /// caller; rejected → finished).
    package mutating func reject(decision id: UUID, at now: Int64, reason: String) -> Invocation? {
        guard let invocation = self.invocation(forDecision: id), invocation.isAwaitingApproval else { return nil }
        var rejected = invocation
        rejected.result = Self.reason(reason)
        return self.finish(rejected, status: .expired, at: now)
    }

    private mutating func finish(_ invocation: Invocation, status: InvocationStatus, at now: Int64) -> Invocation {
        var done = invocation
        done.status = status
        done.completedAt = now
        done.deadline = nil
        done.retryAt = nil
        if self.active.removeValue(forKey: done.id) != nil {
            if invocation.publishedAt != nil { self.sentCount[done.module, default: 1] -= 1 }
            self.scopes["\(done.module.rawValue)|\(done.scopeKey)", default: 1] -= 1
            if self.scopes["\(done.module.rawValue)|\(done.scopeKey)"] == 0 { self.scopes["\(done.module.rawValue)|\(done.scopeKey)"] = nil }
            self.byDecision[done.decisionID] = nil
        }
        self.finished[done.id] = done
        self.finishedOrder.append(done.id)
        if self.finishedOrder.count > self.memory {
            let drop = self.finishedOrder.count - self.memory
            for old in self.finishedOrder.prefix(drop) { self.finished[old] = nil }
            self.finishedOrder.removeFirst(drop)
        }
        return done
    }

    /// `base` × 2^(attempt − 1), at most 5 minutes, in milliseconds (no jitter: a retry's time is
    /// recorded and tested).
    static func backoff(_ base: Duration, attempt: Int) -> Int64 {
        Backoff(base: base, cap: .seconds(300), jitter: false).delay(attempt: attempt).milliseconds
    }

    private static func reason(_ text: String) -> String {
        var json = JSONWriter()
        json.field("reason", string: text)
        return String(decoding: json.finish(), as: UTF8.self)
    }
}
