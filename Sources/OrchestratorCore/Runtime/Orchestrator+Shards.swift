import Foundation
import Logging
import Mosquitto
import ServiceLifecycle
import Synchronization

/// The shards of `sharding.shards` (docs/availability.md, "Sharding"): one lease per shard, the
/// fair share of each instance, and the MQTT filters of the shards held.
///
/// - Shard 0's lease is the active role's (`active`): its holder is the gateway's active instance
///   (its status, the Sparkplug host role, market data, schedules). The others are `shard/{n}`.
/// - An instance takes a free or expired shard while it holds fewer than its fair share,
///   `⌈shards / instances alive⌉` (alive: its `instance/{id}` row in `leases`, renewed every
///   `lease / 6` — ``ActiveLease/presence()``), and any shard left expired for four of its rounds;
///   above its share, it hands one over per round (``rebalance()``).
final class ShardSet: Sendable {
    let map: ShardMap
    let instance: String
    /// By shard: its lease.
    let leases: [ActiveLease]
    let share: Share
    private let logger: Logger
    /// The client the filters are subscribed on (set once it exists).
    private let client = Mutex<MosquittoClient?>(nil)
    /// The filters subscribed for the held shards.
    private let subscribed = Mutex<Set<String>>([])
    /// When this instance first counted the instances alive (monotonic): the share is not trusted
    /// before the others have had a lease's time to say they are.
    private let countedSince = Atomic<UInt64>(0)
    let lease: Duration
    /// Shards taken over so far (each counted once its units are subscribed to).
    let takeovers = Atomic<Int>(0)

    /// Who holds what, read by the leases' acquisition rule (before the set exists).
    final class Share: Sendable {
        /// Shard → the epoch this instance holds it under.
        let held = Mutex<[Int: Int64]>([:])
        /// Instances alive, this one included (1 until counted).
        let alive = Atomic<Int>(1)
        let count: Int

        init(count: Int) {
            self.count = count
        }

        /// `⌈shards / instances alive⌉`.
        var fair: Int {
            let live = max(1, self.alive.load(ordering: .relaxed))
            return (self.count + live - 1) / live
        }

        /// A free or expired shard is taken below the fair share, and whatever the share once it
        /// has been expired for four rounds (no one else took it).
        func mayAcquire(expiredRounds: Int) -> Bool {
            expiredRounds >= 4 || self.held.withLock { $0.count } < self.fair
        }
    }

    init(config: OrchestratorConfig, logger: Logger) {
        let availability = config.availability
        self.map = ShardMap(count: availability.shards, topicMap: config.topicMap)
        self.instance = availability.instanceID
        self.logger = logger
        self.lease = availability.lease
        let share = Share(count: availability.shards)
        self.share = share
        let connection = ActiveLease.Connection()
        self.leases = (0..<availability.shards).map { shard in
            ActiveLease(
                url: config.database.url, holder: availability.instanceID, lease: availability.lease, logger: logger,
                name: ShardMap.leaseName(shard), connection: connection, mayAcquire: { share.mayAcquire(expiredRounds: $0) })
        }
    }

    var held: [Int: Int64] { self.share.held.withLock { $0 } }

    /// The leases the record writer's batches are fenced by.
    var writerLeases: [Record.Writer.Lease] {
        self.held.sorted { $0.key < $1.key }.map { .init(name: ShardMap.leaseName($0.key), holder: self.instance, epoch: $0.value) }
    }

    func attach(_ client: MosquittoClient) { self.client.withLock { $0 = client } }

    /// `{prefix}/shard/{n}`: another instance took shard n; an isolated holder stands by.
    func heardShard(_ shard: String, payload: [UInt8]) {
        guard let shard = Int(shard), shard > 0, shard < self.leases.count, let message = JSONValue(parsing: payload),
            let instance = message.string("instance", limit: 256)
        else { return }
        self.leases[shard].supersededOnWire(by: instance)
    }

    /// Subscribes to the filters of the shards held now and unsubscribes from the others
    /// (everything again after a reconnect: `all`).
    func updateSubscriptions(qos: Int32, all: Bool = false) {
        guard let client = self.client.withLock({ $0 }) else { return }
        let wanted = Set(self.map.filters(for: Set(self.held.keys)))
        let (added, removed) = self.subscribed.withLock { current -> ([String], [String]) in
            defer { current = wanted }
            return (all ? Array(wanted) : Array(wanted.subtracting(current)), Array(current.subtracting(wanted)))
        }
        // New filters first: a wildcard replacing unit filters leaves no gap.
        for filter in added.sorted() {
            do { try client.subscribe(filter, qos: qos) } catch {
                self.logger.error("shard subscription failed", metadata: ["mqtt.filter": "\(filter)", "error": "\(error)"])
            }
        }
        for filter in removed.sorted() { try? client.unsubscribe(filter) }
        if !added.isEmpty || !removed.isEmpty {
            self.logger.info("shard subscriptions", metadata: ["mqtt.subscribed": "\(added.count)", "mqtt.unsubscribed": "\(removed.count)"])
        }
    }

    /// Renews this instance's presence and counts the instances alive (every `lease / 6`).
    func countAlive() {
        guard let alive = self.leases[0].presence() else { return }
        self.share.alive.store(max(1, alive), ordering: .relaxed)
        _ = self.countedSince.compareExchange(expected: 0, desired: DispatchTime.now().uptimeNanoseconds, ordering: .relaxed)
    }

    /// Above the fair share (a lease after the first count, so that the others alive are known):
    /// hands the highest shard over (shard 0, the active role, last).
    func rebalance() {
        let since = self.countedSince.load(ordering: .relaxed)
        guard since > 0, !self.leases[0].isHalted, DispatchTime.now().uptimeNanoseconds &- since > UInt64(self.lease.timeInterval * 1e9) else { return }
        let held = self.held
        guard held.count > self.share.fair, let shard = held.keys.sorted(by: { ($0 == 0 ? 1 : 0, -$0) < ($1 == 0 ? 1 : 0, -$1) }).first else { return }
        self.leases[shard].giveUp()
    }
}

extension Orchestrator {
    /// Shard `shard` taken, or lost (``ActiveLease`` of that shard): the tags of its units become
    /// this instance's — subscribed, warmed up from `tag_state`, their episodes and invocations
    /// taken over — or another's.
    func applyShardRole(_ shard: Int, _ role: ActiveLease.Role, epoch: Int64, shards: ShardSet) {
        let config = self.config
        switch role {
        case .active:
            let previous = shards.share.held.withLock { held -> Int64? in
                defer { held[shard] = epoch }
                return held[shard]
            }
            // Back from isolation under the same epoch: it never stopped acting.
            guard previous != epoch else { return }
            self.recordWriter.setActing(true, leases: shards.writerLeases)
            self.publisher.setActing(true)
            self.coordinator.setActing(true)
            if shard == 0 { self.sparkplug?.setHosting(true) }
            let standing = self.ledger.take()
            Task {
                // Warm first, then the data: the units' detectors start from what their last holder
                // saved, and its open episodes wait for them (adopted, or closed by their first samples).
                let snapshots = await self.reader.tagState(limit: config.detection.maxTags) ?? []
                if shard > 0 {
                    var json = JSONWriter()
                    json.field("instance", string: config.availability.instanceID)
                    json.field("epoch", integer: epoch)
                    try? self.publishRetained("\(config.topics.prefix)/shard/\(shard)", json.finish())
                }
                await self.takeOver(standing.filter { shards.map.shard(ofTag: $0.tag) == shard }, epoch: epoch, shard: (shard, shards.map))
                // Only now are its tags this instance's (what shard 0's wildcards bring included)
                // — unless it was lost meanwhile: then its release saw nothing to release.
                guard shards.held[shard] == epoch else { return }
                self.pipeline.takeShard(shard, seeding: snapshots)
                if shards.held[shard] != epoch { self.pipeline.releaseShard(shard) }
                shards.updateSubscriptions(qos: Int32(config.mqtt.subscribeQoS))
                shards.takeovers.add(1, ordering: .relaxed)
            }
        case .isolated:
            break
        case .standby:
            let remaining = shards.share.held.withLock { held -> [Int: Int64]? in
                guard held.removeValue(forKey: shard) != nil else { return nil }
                return held
            }
            guard let remaining else { return }
            let map = shards.map
            let released = self.pipeline.releaseShard(shard)
            self.coordinator.handOver { map.shard(ofScope: $0) == shard }
            if remaining.isEmpty {
                // (The writer keeps the leases it acted under: what it still spooled is fenced by them.)
                self.coordinator.setActing(false)
                self.publisher.setActing(false)
                self.recordWriter.setActing(false, leases: [])
            } else {
                self.recordWriter.setActing(true, leases: shards.writerLeases)
            }
            if shard == 0 {
                self.sparkplug?.setHosting(false)
                self.coordinator.holdSchedules()
            }
            shards.updateSubscriptions(qos: Int32(config.mqtt.subscribeQoS))
            self.logger.notice(
                "shard let go", metadata: ["shard": "\(shard)", "tags": "\(released.tags)", "alerts.handed_over": "\(released.episodes)"])
        }
    }
}

/// Holds the shards' leases other than the active role's (``LeaseService`` holds that one) until
/// the shutdown, and hands over what is beyond this instance's share.
struct ShardService: Service {
    let shards: ShardSet

    func run() async throws {
        let shards = self.shards
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                for lease in shards.leases.dropFirst() { group.addTask { await lease.run() } }
                group.addTask {
                    var round = 0
                    while !Task.isCancelled {
                        let rebalancing = round % 2 == 1
                        await offTheCooperativePool {
                            shards.countAlive()
                            if rebalancing { shards.rebalance() }
                        }
                        round += 1
                        try? await Task.sleep(for: shards.lease / 6)
                    }
                }
            }
        }
        // Gone: the others' shares grow at once (a killed instance's row expires after a lease).
        if !shards.leases[0].isHalted { await offTheCooperativePool { shards.leases[0].absent() } }
        try? await gracefulShutdown()
    }
}
