import Synchronization
package import Foundation

/// Where invocations, decision mirrors and records go. `dang run` wires MQTT and the record
/// writer; tests wire the same to a real broker or capture them.
package struct CoordinatorOutputs: Sendable {
    /// Publishes a message (QoS 1); with `request` set, as a request with response topic and
    /// correlation data. Returns false when the client refused it.
    package var publish: @Sendable (_ topic: String, _ payload: [UInt8], _ request: (responseTopic: String, correlation: [UInt8])?) -> Bool
    package var record: @Sendable (Record) -> Void
    /// Runs a command-transport module: the invocation JSON on stdin, its stdout back, within the timeout.
    package var runCommand: @Sendable (_ argv: [String], _ environment: [String: String], _ input: [UInt8], _ timeout: Duration) async -> Result<[UInt8], CommandFailure>
    /// Latencies for the metrics.
    package var observe: @Sendable (Observation) -> Void

    package enum Observation: Sendable {
        case invocationCompleted(Duration)
        case llmCall(Duration, ok: Bool)
    }

    package init(
        publish: @escaping @Sendable (String, [UInt8], (responseTopic: String, correlation: [UInt8])?) -> Bool,
        record: @escaping @Sendable (Record) -> Void,
        runCommand: @escaping @Sendable ([String], [String: String], [UInt8], Duration) async -> Result<[UInt8], CommandFailure> = CommandTransport.run,
        observe: @escaping @Sendable (Observation) -> Void = { _ in }
    ) {
        self.publish = publish
        self.record = record
        self.runCommand = runCommand
        self.observe = observe
    }
}

/// What the dispatcher reports back (the coordinator): a command's stdout as a result, a send that
/// failed, the advisor's answer.
package protocol InvocationReplies: AnyObject, Sendable {
    func handleResult(module: String, payload: [UInt8])
    func sendFailed(_ invocation: Invocation, reason: String)
    func adviceArrived(_ answer: Advisor.Answer, about decision: Decision, invocation id: UUID)
}

/// Sends invocations to their modules and questions to the advisor.
///
/// An MQTT invocation is published at once, on the caller's thread (the ingest thread, for an
/// alert: the event-to-invocation latency is the product). A command module and the advisor take
/// seconds: their calls are jobs run by ``run()`` — a task group owned by the service group — so
/// they end with it (a command still running at shutdown is stopped; its invocation stays pending
/// in the record and is re-armed at the next start).
package final class InvocationDispatcher: Sendable {
    private enum Job: Sendable {
        case command(Invocation, ModuleSettings, message: [UInt8])
        case advise(Advisor.Question, invocation: UUID)
    }

    private let modules: Mutex<[ModuleName: ModuleSettings]>
    private let prefix: String
    private let outputs: CoordinatorOutputs
    private let advisor: Advisor?
    private let jobs: AsyncStream<Job>
    private let submit: AsyncStream<Job>.Continuation

    package init(config: OrchestratorConfig, outputs: CoordinatorOutputs, advisor: Advisor?) {
        self.modules = Mutex(config.modules)
        self.prefix = config.topics.prefix
        self.outputs = outputs
        self.advisor = advisor
        (self.jobs, self.submit) = AsyncStream.makeStream(of: Job.self)
    }

    /// A reloaded configuration's module settings (transport, command, timeout…), for the next send.
    func reconfigure(modules: [ModuleName: ModuleSettings]) {
        self.modules.withLock { $0 = modules }
    }

    /// Publishes a decision on `{prefix}/decision`.
    func mirror(_ decision: DecisionRecord) {
        _ = self.outputs.publish("\(self.prefix)/decision", Record.decision(decision).payload(), nil)
    }

    /// Sends one attempt of an invocation. A refusal by the MQTT client is reported at once; a
    /// command's answer or failure later, through `replies`.
    func send(_ invocation: Invocation, at now: Int64, replies: some InvocationReplies) {
        guard let settings = self.modules.withLock({ $0[invocation.module] }) else { return }
        let resultTopic = "\(self.prefix)/result/\(invocation.module.rawValue)"
        let message = invocation.message(at: now, timeout: settings.timeout, replyTo: resultTopic)
        switch settings.transport {
        case .mqtt:
            let published = self.outputs.publish(
                "\(self.prefix)/cmd/\(invocation.module.rawValue)", message,
                (resultTopic, Array(invocation.id.uuidString.lowercased().utf8)))
            if !published { replies.sendFailed(invocation, reason: "the MQTT client refused the publication (not connected?)") }
        case .command:
            self.submit.yield(.command(invocation, settings, message: message))
        }
    }

    /// Asks the advisor about an invocation held for its advice.
    func ask(_ question: Advisor.Question, invocation: UUID) {
        self.submit.yield(.advise(question, invocation: invocation))
    }

    /// Runs the jobs (commands, advisor calls) until cancelled, each in a child task.
    func run(replies: some InvocationReplies) async {
        // Jobs submitted after this are not run: their invocations stay pending in the record.
        defer { self.submit.finish() }
        await withDiscardingTaskGroup { group in
            for await job in self.jobs {
                group.addTask { await self.perform(job, replies: replies) }
            }
            group.cancelAll()
        }
    }

    private func perform(_ job: Job, replies: some InvocationReplies) async {
        // Stopped with the service group, whatever the job did is not an answer (a command killed at
        // shutdown has not failed): its invocation stays pending in the record, re-armed at the next start.
        switch job {
        case .command(let invocation, let settings, let message):
            let environment = CommandTransport.environment(allowing: settings.environment)
            let outcome = await self.outputs.runCommand(settings.command, environment, message, settings.timeout)
            guard !Task.isCancelled else { return }
            switch outcome {
            case .success(let stdout):
                replies.handleResult(module: invocation.module.rawValue, payload: ModuleResult.attachingID(stdout, invocation: invocation.id))
            case .failure(let failure):
                replies.sendFailed(invocation, reason: failure.description)
            }
        case .advise(let question, let id):
            guard let advisor = self.advisor else { return }
            let answer = await advisor.advise(question)
            guard !Task.isCancelled else { return }
            replies.adviceArrived(answer, about: question.decision, invocation: id)
        }
    }
}
