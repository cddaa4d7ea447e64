import Foundation
import Testing

@testable import OrchestratorCore

/// The book of open invocations on its own: the caller's clock is a plain number here.
@Suite struct InvocationBookTests {
    let timeout: Duration = .seconds(10)

    func invocation(_ module: ModuleName = .forecasting, scope: String = "r1/cdu/cdu1") -> Invocation {
        Invocation(decisionID: UUID(), module: module, triggerKind: "limit", scopeKey: scope, params: "{}", trigger: "{}")
    }

    func result(_ id: UUID, ok: Bool = true) throws -> ModuleResult {
        let text = #"{"invocation_id":"\#(id.uuidString.lowercased())","status":"\#(ok ? "ok" : "error")"}"#
        return try ModuleResult.parse(Array(text.utf8)).get()
    }

    /// The timer's view: backoff 1 s, a module's timeout 10 s (etl's 5 s).
    func due(_ book: inout InvocationBook, at now: Int64, maxRetries: Int = 1) -> [InvocationBook.Due] {
        book.due(at: now, maxRetries: maxRetries, backoff: .seconds(1), timeout: { $0 == .etl ? .seconds(5) : .seconds(10) })
    }

    /// The invocation of the single entry in `due`, if that entry is of the `kind` case.
    func only(_ due: [InvocationBook.Due], _ kind: (Invocation) -> InvocationBook.Due) -> Invocation? {
        guard due.count == 1 else { return nil }
        switch due[0] {
        case .retry(let invocation), .timedOut(let invocation), .expired(let invocation):
            return kind(invocation) == due[0] ? invocation : nil
        }
    }

    /// A book holding `invocation`, delivered once at `at`.
    func sent(_ invocation: Invocation, at: Int64 = 0) -> InvocationBook {
        var book = InvocationBook()
        book.add(invocation)
        _ = book.sent(invocation.id, at: at, timeout: self.timeout)
        return book
    }

    @Test func `an added invocation waits for approval: pending for its scope, findable by decision, not in flight`() {
        var book = InvocationBook()
        let waiting = self.invocation()
        book.add(waiting)
        book.add(waiting)  // the same id again changes nothing
        #expect(waiting.isAwaitingApproval)
        #expect(book.activeInvocations.count == 1)
        #expect(book.inFlight(.forecasting) == 0)
        #expect(book.isPending(module: .forecasting, scopeKey: "r1/cdu/cdu1"))
        #expect(!book.isPending(module: .forecasting, scopeKey: "r1/cdu/cdu2") && !book.isPending(module: .analysis, scopeKey: "r1/cdu/cdu1"))
        #expect(book.invocation(forDecision: waiting.decisionID) == waiting)
        #expect(book.invocation(forDecision: UUID()) == nil)
    }

    @Test func `a delivery counts the attempt, keeps the first publication time and moves the deadline`() throws {
        var book = InvocationBook()
        let original = self.invocation()
        book.add(original)
        let firstDelivery = book.sent(original.id, at: 1_000, timeout: self.timeout)
        let first = try #require(firstDelivery)
        #expect(first.attempts == 1)
        #expect(first.publishedAt == 1_000)
        #expect(first.deadline == 11_000)
        #expect(!first.isAwaitingApproval)
        #expect(book.inFlight(.forecasting) == 1)
        let secondDelivery = book.sent(original.id, at: 5_000, timeout: .seconds(2))
        let second = try #require(secondDelivery)
        #expect(second.attempts == 2)
        #expect(second.publishedAt == 1_000)
        #expect(second.deadline == 7_000)
        #expect(book.inFlight(.forecasting) == 1)  // one invocation, however many deliveries
        let stranger = book.sent(UUID(), at: 5_000, timeout: self.timeout)
        #expect(stranger == nil)
    }

    @Test func `a result completes the invocation and frees its module, scope and decision`() throws {
        let open = self.invocation()
        var book = self.sent(open, at: 1_000)
        let text = try self.result(open.id)
        guard case .completed(let done) = book.complete(text, at: 4_000) else {
            Issue.record("expected .completed")
            return
        }
        #expect(done.id == open.id)
        #expect(done.status == .ok)
        #expect(done.completedAt == 4_000)
        #expect(done.deadline == nil)
        #expect(done.result == text.json)
        #expect(book.activeInvocations.isEmpty)
        #expect(book.inFlight(.forecasting) == 0)
        #expect(!book.isPending(module: .forecasting, scopeKey: "r1/cdu/cdu1"))
        #expect(book.invocation(forDecision: open.decisionID) == nil)
    }

    @Test func `an error result finishes as error; a second result is a duplicate, a stranger's unknown`() throws {
        let open = self.invocation()
        var book = self.sent(open)
        let failed = try self.result(open.id, ok: false)
        let again = try self.result(open.id)
        let stranger = try self.result(UUID())
        let first = book.complete(failed, at: 100)
        let second = book.complete(again, at: 200)
        let unknown = book.complete(stranger, at: 200)
        guard case .completed(let done) = first else {
            Issue.record("expected .completed, got \(first)")
            return
        }
        #expect(done.status == .error)
        #expect(second == .duplicate(.error))
        #expect(unknown == .unknown)
    }

    @Test func `a timeout retries after the backoff, then times out when the attempts are spent`() throws {
        let open = self.invocation()
        var book = self.sent(open, at: 0)  // deadline 10 000
        let early = self.due(&book, at: 9_999)
        let atDeadline = self.due(&book, at: 10_000)  // the retry is scheduled, not sent yet
        #expect(early.isEmpty && atDeadline.isEmpty)
        #expect(book.activeInvocations.first?.retryAt == 11_000)
        #expect(book.activeInvocations.first?.deadline == nil)
        #expect(book.inFlight(.forecasting) == 1)  // waiting to be retried still counts
        let beforeRetry = self.due(&book, at: 10_999)
        let retry = self.due(&book, at: 11_000)
        #expect(beforeRetry.isEmpty)
        let again = try #require(self.only(retry, InvocationBook.Due.retry))
        #expect(again.attempts == 2)
        #expect(again.deadline == 21_000)
        #expect(again.retryAt == nil)
        let beforeDeadline = self.due(&book, at: 20_999)
        #expect(beforeDeadline.isEmpty)
        let end = self.due(&book, at: 21_000)
        let done = try #require(self.only(end, InvocationBook.Due.timedOut))
        #expect(done.status == .timeout)
        #expect(done.completedAt == 21_000)
        #expect(done.result == #"{"reason":"no result after 2 attempts"}"#)
        #expect(book.activeInvocations.isEmpty)
        #expect(book.inFlight(.forecasting) == 0)
    }

    @Test func `the retry delay doubles with each attempt and stops at five minutes`() throws {
        let open = self.invocation()
        var book = self.sent(open, at: 0)
        var delays: [Int64] = []
        for _ in 0..<3 {
            let deadline = try #require(book.activeInvocations.first?.deadline)
            _ = self.due(&book, at: deadline, maxRetries: 5)
            let retryAt = try #require(book.activeInvocations.first?.retryAt)
            delays.append(retryAt - deadline)
            _ = self.due(&book, at: retryAt, maxRetries: 5)
        }
        #expect(delays == [1_000, 2_000, 4_000])
        #expect(book.activeInvocations.first?.attempts == 4)
        #expect(InvocationBook.backoff(.seconds(1), attempt: 1) == 1_000)
        #expect(InvocationBook.backoff(.seconds(100), attempt: 3) == 300_000)
        #expect(InvocationBook.backoff(.seconds(1), attempt: 60) == 300_000)
    }

    @Test func `an approval not given in time expires; without an expiry, or held for advice, it waits`() throws {
        var book = InvocationBook()
        var expiring = self.invocation(scope: "a")
        expiring.approvalExpiresAt = 5_000
        let patient = self.invocation(scope: "b")
        var held = self.invocation(scope: "c")
        held.awaitingAdvice = true  // not yet delivered, not awaiting approval either
        held.approvalExpiresAt = 1
        #expect(!held.isAwaitingApproval)
        for invocation in [expiring, patient, held] { book.add(invocation) }
        let early = self.due(&book, at: 4_999)
        #expect(early.isEmpty)
        let atExpiry = self.due(&book, at: 5_000)
        let done = try #require(self.only(atExpiry, InvocationBook.Due.expired))
        #expect(done.id == expiring.id)
        #expect(done.status == .expired)
        #expect(done.result == #"{"reason":"approval expired"}"#)
        #expect(!book.isPending(module: .forecasting, scopeKey: "a"))
        #expect(book.isPending(module: .forecasting, scopeKey: "b"))
        let never = self.due(&book, at: .max)
        #expect(never.isEmpty)
        #expect(book.activeInvocations.count == 2)
    }

    @Test func `a failed delivery is retried after the backoff, with its module's timeout, and ends as an error`() throws {
        let open = self.invocation(.etl)
        var book = self.sent(open, at: 0)
        let first = book.sendFailed(open.id, reason: "publish refused", at: 100, maxRetries: 1, backoff: .seconds(1))
        #expect(first == nil)
        let waiting = try #require(book.activeInvocations.first)
        #expect(waiting.retryAt == 1_100)
        #expect(waiting.deadline == nil)
        #expect(waiting.result == #"{"reason":"publish refused"}"#)
        let retry = self.due(&book, at: 1_100)
        let again = try #require(self.only(retry, InvocationBook.Due.retry))
        #expect(again.attempts == 2)
        #expect(again.deadline == 6_100)  // etl's own timeout
        let second = book.sendFailed(open.id, reason: "publish refused", at: 1_200, maxRetries: 1, backoff: .seconds(1))
        let secondDue = second.map { [$0] } ?? []
        let done = try #require(self.only(secondDue, InvocationBook.Due.timedOut))
        #expect(done.status == .error)
        #expect(done.completedAt == 1_200)
        #expect(done.result == #"{"reason":"publish refused"}"#)
        #expect(book.inFlight(.etl) == 0)
        let afterwards = book.sendFailed(open.id, reason: "again", at: 1_300, maxRetries: 1, backoff: .seconds(1))
        #expect(afterwards == nil)  // no longer open
    }

    @Test func `a result after the timeout is late: kept with its arrival time, not counted`() throws {
        let open = self.invocation()
        var book = self.sent(open, at: 0)
        _ = self.due(&book, at: 10_000, maxRetries: 0)
        let text = try self.result(open.id)
        guard case .late(let done) = book.complete(text, at: 12_345) else {
            Issue.record("expected .late")
            return
        }
        #expect(done.status == .timeout)
        #expect(done.result == #"{"late":true,"received_at":12345,"result":\#(text.json)}"#)
        #expect(book.inFlight(.forecasting) == 0)
    }

    @Test func `rejecting a decision finishes its waiting invocation as expired, once`() throws {
        var book = InvocationBook()
        let waiting = self.invocation()
        book.add(waiting)
        let rejection = book.reject(decision: waiting.decisionID, at: 700, reason: "operator said no")
        let rejected = try #require(rejection)
        #expect(rejected.id == waiting.id)
        #expect(rejected.status == .expired)
        #expect(rejected.completedAt == 700)
        #expect(rejected.result == #"{"reason":"operator said no"}"#)
        #expect(!book.isPending(module: .forecasting, scopeKey: "r1/cdu/cdu1"))
        #expect(book.invocation(forDecision: waiting.decisionID) == nil)
        let again = book.reject(decision: waiting.decisionID, at: 800, reason: "again")
        #expect(again == nil)
        // What the module might still say is kept, not counted.
        let answer = try self.result(waiting.id)
        guard case .late(let done) = book.complete(answer, at: 900) else {
            Issue.record("expected .late")
            return
        }
        #expect(done.status == .expired)
    }

    @Test func `in-flight counts are per module, pending is per module and scope, and a delivered one cannot be rejected`() {
        var book = InvocationBook()
        let a = self.invocation(.forecasting, scope: "s1")
        let b = self.invocation(.forecasting, scope: "s2")
        let c = self.invocation(.optimization, scope: "s1")
        for invocation in [a, b, c] {
            book.add(invocation)
            _ = book.sent(invocation.id, at: 0, timeout: self.timeout)
        }
        #expect(book.inFlight(.forecasting) == 2)
        #expect(book.inFlight(.optimization) == 1)
        #expect(book.inFlight(.etl) == 0)
        let rejected = book.reject(decision: a.decisionID, at: 1, reason: "no")
        #expect(rejected == nil)  // delivered: no longer waiting for approval
        #expect(book.invocation(forDecision: a.decisionID)?.id == a.id)
        _ = self.due(&book, at: 10_000, maxRetries: 0)
        #expect(book.inFlight(.forecasting) == 0)
        #expect(book.inFlight(.optimization) == 0)
        #expect(!book.isPending(module: .forecasting, scopeKey: "s1"))
        #expect(!book.isPending(module: .optimization, scopeKey: "s1"))
    }

    @Test func `finished invocations are remembered only up to the memory`() throws {
        var book = InvocationBook(memory: 1)
        let first = self.invocation(scope: "1")
        let second = self.invocation(scope: "2")
        for invocation in [first, second] { book.add(invocation) }
        let firstResult = try self.result(first.id)
        let secondResult = try self.result(second.id)
        _ = book.complete(firstResult, at: 1)
        _ = book.complete(secondResult, at: 2)
        let forgotten = book.complete(firstResult, at: 3)
        let remembered = book.complete(secondResult, at: 3)
        #expect(forgotten == .unknown)
        #expect(remembered == .duplicate(.ok))
    }
}
