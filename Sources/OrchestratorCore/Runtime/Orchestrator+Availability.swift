import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// Active and standby (`ha.enabled`; docs/availability.md): what changes when this instance takes
/// the lease, or loses it.
extension Orchestrator {
    /// Acts (records, publishes, decides) or stands by. Taking over, the record comes first, then
    /// the publications, then the decisions — and the episodes and invocations the previous active
    /// left are taken over (``takeOver(_:epoch:)``).
    func applyRole(_ role: ActiveLease.Role, epoch: Int64) {
        switch role {
        case .active:
            // Back from isolation under the same epoch: it never stopped acting, nothing to take over.
            guard self.actingEpoch.exchange(epoch, ordering: .relaxed) != epoch else { return }
            self.recordWriter.setActing(true, lease: .init(holder: self.config.availability.instanceID, epoch: epoch))
            self.publisher.setActing(true)
            self.sparkplug?.setHosting(true)
            let standing = self.ledger.take()
            self.coordinator.setActing(true)
            Task { await self.takeOver(standing, epoch: epoch) }
        case .isolated:
            // Goes on acting: the record spools under its epoch (ActiveLease explains when it stops).
            break
        case .standby:
            self.actingEpoch.store(0, ordering: .relaxed)
            self.coordinator.setActing(false)
            self.publisher.setActing(false)
            self.sparkplug?.setHosting(false)
            self.recordWriter.setActing(false, lease: nil)
        }
    }

    /// The previous active's open episodes and pending invocations become this instance's.
    /// - Its episodes still open in the record take over this instance's episodes of the same tag,
    ///   kind and severity: same alert ids, nothing announced twice.
    /// - This instance's episodes the record does not have (the active never announced them, or
    ///   its last records died with it) are announced now.
    /// - The record's episodes this instance does not hold are adopted as after a restart: taken
    ///   over if raised again soon, else closed.
    /// - Pending invocations are re-armed once from the record; shelves and tags out of service
    ///   are read again.
    ///
    /// With `sharding.shards`, `shard` says which: only its units' episodes, invocations and
    /// decisions are taken over (``ShardMap``), and schedules only with shard 0.
    func takeOver(_ standing: [AlertEvent], epoch: Int64, shard: (index: Int, map: ShardMap)? = nil) async {
        let config = self.config
        // First: an isolated former active stands by as soon as it hears this.
        if (shard?.index ?? 0) == 0 { try? self.publishGatewayStatus(config: config) }
        func ours(tag: String) -> Bool { shard.map { $0.map.shard(ofTag: tag) == $0.index } ?? true }
        func ours(scope: String) -> Bool { shard.map { $0.map.shard(ofScope: scope) == $0.index } ?? true }
        let recorded = (await self.reader.openEpisodes(raisedBefore: EpochMilliseconds.now()) ?? []).filter { ours(tag: $0.tag) }
        // What the active announced on MQTT and its records may not hold (they died with it, or
        // were cut off with it): the raises go to the record now, and the clears close what the
        // record still has open — nothing it announced is lost or announced again.
        let heard = shard.map { self.ledger.takeHeard(ofShard: $0.index, in: $0.map) } ?? self.ledger.takeHeard()
        let recordedIDs = Set(recorded.map(\.alertID))
        var unmatched: [AlertEpisode] = []
        var healed = 0
        for episode in recorded {
            if let clear = heard.clears[episode.alertID] {
                self.recordWriter.deliver(clear)
                healed += 1
            } else {
                unmatched.append(episode)
            }
        }
        for event in heard.open where !recordedIDs.contains(event.alertID) {
            self.recordWriter.deliver(event)
            unmatched.append(AlertEpisode(alertID: event.alertID, tag: event.tag, topic: event.topic, kind: event.kind, severity: event.severity, raisedAt: event.raisedAt))
            healed += 1
        }
        var continued: [AlertEvent] = []
        var announced: [AlertEvent] = []
        for event in standing {
            if let index = unmatched.firstIndex(where: { $0.tag == event.tag && $0.kind == event.kind && $0.severity == event.severity }) {
                let episode = unmatched.remove(at: index)
                if self.pipeline.rekey(event.alertID, to: episode.alertID, raisedAt: episode.raisedAt) {
                    continued.append(event.continuing(episode.alertID, raisedAt: episode.raisedAt))
                }
            } else {
                self.recordWriter.deliver(event)
                self.publisher.deliver(event)
                self.events.deliver(event)
                announced.append(event)
            }
        }
        if !unmatched.isEmpty { self.pipeline.adopt(unmatched, within: config.detection.adoptWithin) }
        await self.alertDesk.restoreShelves()
        await self.alertDesk.restoreOutOfService()
        // Invocations the active published that its record lacks become pending rows now, so that
        // they are re-armed below like the others (and their results recorded).
        let writer = Record.Writer(
            instance: config.availability.instanceID,
            lease: .init(name: ShardMap.leaseName(shard?.index ?? 0), holder: config.availability.instanceID, epoch: epoch))
        let adopted = await self.reader.recordMissing(heard.invocations, decisions: heard.decisions, as: writer) ?? 0
        var memory = await self.reader.decisionMemory() ?? DecisionMemory()
        // (The other shards' pending invocations are their holders'.)
        memory.pending.removeAll { !ours(scope: $0.invocation.scopeKey) }
        self.coordinator.restore(memory, schedules: (shard?.index ?? 0) == 0)
        // Results a module sent the previous active that it did not live to record.
        let pending = Set(memory.pending.map(\.invocation.id))
        let answered = heard.results.filter { pending.contains($0.invocation) }
        for result in answered { self.coordinator.handle(topic: result.topic, payload: result.payload) }
        // Open alarms no module was invoked for are decided on now, with the record's cooldowns and
        // pending invocations known: one raised while no one acted, and one whose decision the
        // previous active deferred for a free slot (that queue died with it).
        let heardInvoked = Set(heard.decisions.values.filter { $0.action == "invoke" }.compactMap { decision in
            JSONValue(parsing: Array(decision.trigger.utf8))?.string("alert_id").flatMap(UUID.init(uuidString:))
        })
        let invoked = (await self.reader.invokedAlerts(continued.map(\.alertID)) ?? Set(continued.map(\.alertID))).union(heardInvoked)
        for event in continued where !invoked.contains(event.alertID) { self.coordinator.deliver(event) }
        for event in announced { self.coordinator.deliver(event) }
        self.logger.notice(
            "taken over as the active instance",
            metadata: [
                "shard": "\(shard?.index ?? 0)", "lease.epoch": "\(epoch)", "alerts.continued": "\(continued.count)", "alerts.announced": "\(announced.count)",
                "alerts.healed": "\(healed)", "invocations.heard": "\(adopted)", "results.heard": "\(answered.count)",
                "alerts.adopted": "\(unmatched.count)", "invocations.rearmed": "\(memory.pending.count)",
            ])
    }
}

extension Orchestrator {
    /// Stops this instance the way SIGKILL would, as the other instances see it: no more lease
    /// renewals (and no release), nothing published or recorded, the broker connection closed. For
    /// the fault tests, which run instances in one process.
    package func haltAsIfKilled() {
        self.lease?.halt()
        for lease in self.shards?.leases ?? [] { lease.halt() }
        self.coordinator.setActing(false)
        self.publisher.setActing(false)
        self.recordWriter.setActing(false, lease: nil)
        self.dropBrokerConnection()
        self.sparkplug?.stop(graceful: false)
    }
}

/// Holds the lease (``ActiveLease``) until the shutdown. First among the services, so stopped last:
/// the active gives the lease up only once its record writer has drained, and its last batches are
/// still its own to write.
struct LeaseService: Service {
    let lease: ActiveLease

    func run() async throws {
        // Cancelled at the shutdown: the loop ends and gives the lease up.
        await cancelWhenGracefulShutdown { await self.lease.run() }
        // Halted (a simulated kill): a service that ends stops the group, so wait for the shutdown.
        try? await gracefulShutdown()
    }
}
