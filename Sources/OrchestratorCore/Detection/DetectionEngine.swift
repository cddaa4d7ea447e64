/// Every tag's detectors and the unit monitors: the part of the live path that is the same in
/// `dang run` and `dang replay`. A value type with no I/O and no clock: time arrives with each
/// sample. What it finds are ``ConditionEvent``s (a condition of a tag or unit raised or cleared);
/// the alert stage (``AlertBook``) turns them into alert episodes.
package struct DetectionEngine: Sendable {
    package let settings: DetectionSettings
    private var topicMap: TopicMap
    private var slots: [String: Int32] = [:]
    package private(set) var tagNames: [String] = []
    private var detectors: [TagDetector] = []
    private var changes: [ConditionChange] = []
    private var scratch: [Double] = []
    /// Latest good value of every tag (NaN until one arrives), for the unit monitors.
    private var lastValues: [Double] = []
    /// The unit each tag belongs to, if any.
    private var unitOfSlot: [Int32] = []
    private var units: [UnitMonitor] = []
    /// Whether a tag of each unit got a usable sample since the unit's last evaluation: a unit whose
    /// tags have all gone quiet is not evaluated again on their last values (the EWMA of D² would
    /// otherwise converge on one repeated vector and alarm on a gateway outage; staleness is
    /// reported per tag).
    private var unitFresh: [Bool] = []
    private var vector: [Double] = []
    private var training = false
    /// Quality of each tag's last sample.
    private var lastQuality: [SampleQuality] = []
    /// The orchestrator's clock at each tag's last sample (for staleness).
    private var lastReceipt: [Int64] = []
    /// Samples refused as redeliveries of one already processed (same tag, time and value).
    package private(set) var redeliveries = 0
    /// The sample time each tag was last snapshotted at.
    private var snapshotted: [Int64] = []
    /// The caller's clock when each tag was created (for eviction, with ``lastReceipt``).
    private var createdAt: [Int64] = []
    /// Slots of evicted tags, reused before new ones are made.
    private var freeSlots: [Int32] = []
    /// Recent usable samples of every tag, for module invocations.
    private var history: SampleHistory

    package init(settings: DetectionSettings, topicMap: TopicMap) {
        self.settings = settings
        self.topicMap = topicMap
        self.history = SampleHistory(depth: settings.historyDepth)
    }

    package var tagCount: Int { self.slots.count }

    /// Makes room for `tags` tags and `units` unit monitors in one allocation per array, so that
    /// creating a large topic map's tags at start neither doubles an array's capacity past what it
    /// needs nor holds the old and the new buffer at once while it grows (with 10,000 tags the
    /// detectors' array alone would reach 16,384 slots, 18 MB, through a 9 MB copy).
    package mutating func reserveCapacity(tags: Int, units: Int = 0) {
        // Never room for more tags than `max_tags` allows to exist.
        let tags = min(max(0, tags), self.settings.maxTags), units = max(0, units)
        self.slots.reserveCapacity(tags)
        self.tagNames.reserveCapacity(tags)
        self.detectors.reserveCapacity(tags)
        self.lastValues.reserveCapacity(tags)
        self.unitOfSlot.reserveCapacity(tags)
        self.lastQuality.reserveCapacity(tags)
        self.lastReceipt.reserveCapacity(tags)
        self.snapshotted.reserveCapacity(tags)
        self.createdAt.reserveCapacity(tags)
        self.history.reserveCapacity(slots: tags)
        self.units.reserveCapacity(units)
        self.unitFresh.reserveCapacity(units)
    }

    /// The slot of a tag, created on first sight (reusing an evicted tag's slot first); `nil` once
    /// `max_tags` tags exist. `now` is the caller's clock, for eviction.
    package mutating func slot(for tag: String, now: Int64 = .min) -> Int32? {
        if let slot = self.slots[tag] { return slot }
        guard self.slots.count < self.settings.maxTags else { return nil }
        let info = self.topicMap.tags[tag]
        let detector = TagDetector(settings: self.settings, info: info, isMarket: tag.hasPrefix("market/"))
        if let slot = self.freeSlots.popLast() {
            let index = Int(slot)
            self.slots[tag] = slot
            self.tagNames[index] = tag
            self.detectors[index] = detector
            self.lastValues[index] = .nan
            self.lastQuality[index] = .good
            self.lastReceipt[index] = .min
            self.snapshotted[index] = .min
            self.createdAt[index] = now
            self.history.clear(slot: slot)
            return slot
        }
        let slot = Int32(self.tagNames.count)
        self.slots[tag] = slot
        self.tagNames.append(tag)
        self.detectors.append(detector)
        self.lastValues.append(.nan)
        self.unitOfSlot.append(-1)
        self.lastQuality.append(.good)
        self.lastReceipt.append(.min)
        self.snapshotted.append(.min)
        self.createdAt.append(now)
        self.history.addSlot()
        return slot
    }

    /// Forgets tags that had no sample since `cutoff` (the caller's clock), so that a flood of junk
    /// topics cannot lock real tags out for good: their slots are reused. Tags of the topic map, of a
    /// unit monitor, or with an open alert stay. Returns the evicted tags' last snapshots (to keep
    /// in `tag_state`) and their slots.
    package mutating func evictIdle(before cutoff: Int64, keeping busy: Set<Int32>) -> (snapshots: [TagSnapshot], slots: Set<Int32>) {
        var snapshots: [TagSnapshot] = []
        var evicted: Set<Int32> = []
        for index in self.tagNames.indices {
            let tag = self.tagNames[index]
            let lastActivity = self.lastReceipt[index] == .min ? self.createdAt[index] : self.lastReceipt[index]
            guard !tag.isEmpty, lastActivity < cutoff, self.unitOfSlot[index] < 0, self.detectors[index].mappedInfo == nil,
                !busy.contains(Int32(index))
            else { continue }
            if let last = self.detectors[index].lastSample {
                let statistics = self.detectors[index].statistics
                snapshots.append(
                    TagSnapshot(
                        tag: tag, time: last.time, value: last.value, quality: self.lastQuality[index], samples: statistics.count,
                        ewmaMean: statistics.mean, ewmaVariance: statistics.variance))
            }
            self.slots[tag] = nil
            self.tagNames[index] = ""
            self.lastReceipt[index] = .min
            self.lastValues[index] = .nan
            self.freeSlots.append(Int32(index))
            evicted.insert(Int32(index))
        }
        return (snapshots, evicted)
    }

    /// Forgets what the tags `disowned` picks learned and last saw (their shard moved to another
    /// instance): each starts again as new — no staleness, no open condition, an empty history —
    /// and so do the unit monitors of their units. Returns their slots, and the alert slots of
    /// those units (`-1 - unit`).
    package mutating func park(where disowned: (String) -> Bool) -> Set<Int32> {
        var parked: Set<Int32> = []
        for index in self.tagNames.indices where !self.tagNames[index].isEmpty && disowned(self.tagNames[index]) {
            let tag = self.tagNames[index]
            self.detectors[index] = TagDetector(settings: self.settings, info: self.topicMap.tags[tag], isMarket: tag.hasPrefix("market/"))
            self.lastValues[index] = .nan
            self.lastQuality[index] = .good
            self.lastReceipt[index] = .min
            self.snapshotted[index] = .min
            self.history.clear(slot: Int32(index))
            parked.insert(Int32(index))
            let unit = Int(self.unitOfSlot[index])
            if unit >= 0, !parked.contains(-1 - Int32(unit)) {
                self.units[unit] = UnitMonitor(
                    name: self.units[unit].name, slots: self.units[unit].slots, baselineSize: self.settings.multivariateBaseline)
                self.unitFresh[unit] = false
                parked.insert(-1 - Int32(unit))
            }
        }
        return parked
    }

    /// Takes a reloaded topic map: every existing tag whose entry changed (added, removed, edited)
    /// gets the new one and keeps what its detectors learned; tags made later get theirs from it.
    /// The unit monitors keep the tags they were trained on. Returns the tags whose entry changed.
    package mutating func reconfigure(topicMap: TopicMap) -> [String] {
        self.topicMap = topicMap
        var changed: [String] = []
        for index in self.tagNames.indices where !self.tagNames[index].isEmpty {
            let tag = self.tagNames[index]
            let info = topicMap.tags[tag]
            guard info != self.detectors[index].mappedInfo else { continue }
            self.detectors[index].reconfigure(info: info)
            changed.append(tag)
        }
        return changed.sorted()
    }

    /// The highest multivariate score of the units at their last evaluation, in [0, 1].
    package var lastUnitScore: Double { self.units.reduce(0) { max($0, $1.lastScore) } }

    /// The unit monitors, for status and tests.
    package var unitMonitors: [UnitMonitor] { self.units }

    /// The state of the unit monitor named `name` (its tags by name), nil when there is none.
    package func unitState(named name: String) -> UnitMonitorState? {
        guard let unit = self.units.first(where: { $0.name == name }) else { return nil }
        let names = self.tagNames
        return unit.state(names: { names[Int($0)] })
    }

    /// Monitors the given tags together as one unit (docs/detection.md, "Multivariate unit
    /// monitoring"). Tags already in a unit, or not known to the engine, are refused.
    package mutating func addUnit(name: String, slots: [Int32]) -> Bool {
        guard slots.count >= 2, self.settings.multivariateEnabled,
            slots.allSatisfy({ Int($0) < self.unitOfSlot.count && self.unitOfSlot[Int($0)] < 0 })
        else { return false }
        let index = Int32(self.units.count)
        for slot in slots { self.unitOfSlot[Int(slot)] = index }
        self.units.append(UnitMonitor(name: name, slots: slots, baselineSize: self.settings.multivariateBaseline))
        self.unitFresh.append(false)
        return true
    }

    /// Starts a training period: unit vectors go to the baselines instead of being tested.
    package mutating func beginTraining() { self.training = true }

    /// Ends a training period: units train on what they collected.
    package mutating func endTraining() {
        self.training = false
        for index in self.units.indices { self.units[index].train(settings: self.settings.multivariate) }
    }

    /// Evaluates the multivariate unit monitors on the latest values of their tags: baseline
    /// collection until a unit is trained, then the test. Units with a tag never seen wait, and so
    /// do units none of whose tags had a usable sample since their last evaluation.
    package mutating func evaluateUnits(at time: Int64, into conditions: inout [ConditionEvent]) {
        for index in self.units.indices where self.unitFresh[index] {
            self.vector.removeAll(keepingCapacity: true)
            for slot in self.units[index].slots { self.vector.append(self.lastValues[Int(slot)]) }
            guard !self.vector.contains(where: \.isNaN) else { continue }
            self.unitFresh[index] = false
            if self.training || !self.units[index].isTrained {
                self.units[index].learn(self.vector, settings: self.settings.multivariate, autoTrain: !self.training)
                continue
            }
            let names = self.tagNames
            guard
                let change = self.units[index].evaluate(
                    self.vector, time: time, policy: self.settings.policy, names: { names[Int($0)] })
            else { continue }
            conditions.append(
                ConditionEvent(
                    change: change, slot: -1 - Int32(index), tag: self.units[index].name, info: nil, topic: self.units[index].name,
                    sampleTime: time, now: time))
        }
    }

    /// Feeds one sample to its tag's detectors; the conditions it changes are appended to `conditions`.
    /// Returns the sample's anomaly score in [0, 1] (0 for samples that feed nothing).
    @discardableResult
    package mutating func ingest(
        slot: Int32, value: Double, quality: SampleQuality, sampleTime: Int64, receiptTime: Bool = false, topic: String,
        now: Int64, into conditions: inout [ConditionEvent]
    ) -> Double {
        let score = self.detect(slot: slot, value: value, quality: quality, sampleTime: sampleTime, receiptTime: receiptTime, now: now)
        if self.hasChanges { self.emitChanges(slot: slot, topic: topic, sampleTime: sampleTime, now: now, into: &conditions) }
        return score
    }

    /// Whether the last ``detect(slot:value:quality:sampleTime:receiptTime:now:)`` changed a
    /// condition: its condition events are still to be made with ``emitChanges(slot:topic:sampleTime:now:into:)``.
    package var hasChanges: Bool { !self.changes.isEmpty }

    /// The first half of ``ingest(slot:value:quality:sampleTime:receiptTime:topic:now:into:)``:
    /// every detector, no condition event yet. For a caller that looks the topic up only when an
    /// event needs it (the live path's hot path copies no String per sample).
    package mutating func detect(
        slot: Int32, value: Double, quality: SampleQuality, sampleTime: Int64, receiptTime: Bool = false, now: Int64
    ) -> Double {
        let index = Int(slot)
        if !self.changes.isEmpty { self.changes.removeAll(keepingCapacity: true) }
        // A QoS 1 redelivery (the broker or the publisher sending again what it could not know was
        // received, after a reconnect): the same time and value as a sample already processed.
        // Counted, never fed twice, and no data-quality alarm.
        if !receiptTime, let last = self.detectors[index].lastSample, sampleTime <= last.time,
            self.history.contains(slot: slot, time: sampleTime, value: value)
        {
            self.redeliveries += 1
            self.lastReceipt[index] = now
            return 0
        }
        let score = self.detectors[index].ingest(
            value, time: sampleTime, receiptTime: receiptTime, quality: quality, settings: self.settings,
            scratch: &self.scratch, into: &self.changes)
        let unit = self.unitOfSlot[index]
        if self.detectors[index].lastSampleUsable {
            self.lastValues[index] = value
            if unit >= 0 { self.unitFresh[Int(unit)] = true }
            // Good samples only: uncertain ones are usable by the detectors, not as a module's input.
            if quality == .good { self.history.append(slot: slot, time: sampleTime, value: value) }
        }
        self.lastQuality[index] = quality
        self.lastReceipt[index] = now
        // A trained unit monitor speaks for its tags' level anomalies (its alert names the tags).
        if unit >= 0, self.settings.suppressTagAnomalies, self.units[Int(unit)].isTrained {
            self.changes.removeAll { ($0.condition == .anomaly || $0.condition == .shift) && $0.raised }
        }
        return score
    }

    /// The time of a tag's last usable sample (`nil` before the first).
    package func lastSampleTime(slot: Int32) -> Int64? {
        self.detectors[Int(slot)].lastSample?.time
    }

    /// A frozen stretch in a tag's window: a run of exactly equal values at least 10 samples and
    /// 60 s long, and at least 5 times as long as the tag's other runs, in a window that does vary
    /// (a tag that is constant throughout is the flatline detector's to judge: a setpoint or a
    /// switch may be). A live analog transmitter does not repeat its reading to the last digit for
    /// a minute; one that is stuck, or a gateway that repeats its last value, does.
    /// Market data is left out: a quote that does not trade does not change, and a dead feed is
    /// `stale`'s to report.
    func frozenStretch(slot: Int32, window: Int) -> FrozenStretch? {
        guard !self.detectors[Int(slot)].isMarket, let run = self.history.longestRun(slot: slot, limit: window), run.runs > 1, run.samples >= FrozenStretch.minimumSamples,
            run.milliseconds >= FrozenStretch.minimumMilliseconds, Double(run.samples) >= 5 * run.othersMean
        else { return nil }
        return FrozenStretch(value: run.value, samples: run.samples, seconds: Double(run.milliseconds) / 1000)
    }

    /// What the decision side needs to know about a tag's data (the `data_quality` step,
    /// docs/decisions.md, "Selection criteria").
    /// `openKinds` are the kinds of the tag's open alert episodes (the alert stage knows them);
    /// `window` is how many of its newest samples the module would take.
    /// `qualityCleared` is when its last data-quality-like episode cleared (sample time), if it did.
    package func view(
        of tag: String, window: Int = .max, openKinds: (Int32) -> Set<AlertKind>, qualityCleared: (Int32) -> Int64? = { _ in nil }
    ) -> TagView? {
        guard let slot = self.slots[tag] else { return nil }
        let index = Int(slot)
        let receipt = self.lastReceipt[index]
        return TagView(
            tag: tag, info: self.detectors[index].mappedInfo, lastReceipt: receipt == .min ? nil : receipt,
            lastQuality: self.lastQuality[index], goodSamples: self.history.count(slot: slot),
            openKinds: openKinds(slot), frozen: self.frozenStretch(slot: slot, window: window),
            windowStart: self.history.oldestTime(slot: slot, limit: window), qualityEpisodeCleared: qualityCleared(slot))
    }

    /// The newest `limit` good samples of a tag, oldest first.
    package func window(of tag: String, limit: Int) -> (times: [Int64], values: [Double]) {
        guard let slot = self.slots[tag] else { return ([], []) }
        return self.history.window(slot: slot, limit: limit)
    }

    /// Usable samples a tag's detectors have processed (duplicates, out-of-order and bad-quality
    /// samples excluded).
    package func processedCount(of tag: String) -> Int? {
        self.slots[tag].map { self.detectors[Int($0)].statistics.count }
    }

    /// Tags seen so far whose identifier starts with `prefix`, in name order.
    package func tags(withPrefix prefix: String) -> [String] {
        self.tagNames.filter { !$0.isEmpty && $0.hasPrefix(prefix) }.sorted()
    }

    /// The state of every tag that received a sample since the last call (for `tag_state`).
    /// Sized before it is filled: 10,000 tags grown by doubling would take 16,384 places, and leave
    /// the smaller arrays behind as free memory.
    package mutating func snapshots() -> [TagSnapshot] {
        var changed = 0
        for index in self.detectors.indices where self.hasNewSnapshot(index) { changed += 1 }
        var result: [TagSnapshot] = []
        result.reserveCapacity(changed)
        for index in self.detectors.indices where self.hasNewSnapshot(index) {
            guard let last = self.detectors[index].lastSample else { continue }
            self.snapshotted[index] = last.time
            let statistics = self.detectors[index].statistics
            result.append(
                TagSnapshot(
                    tag: self.tagNames[index], time: last.time, value: last.value, quality: self.lastQuality[index],
                    samples: statistics.count, ewmaMean: statistics.mean, ewmaVariance: statistics.variance))
        }
        return result
    }

    /// Whether the tag in `index` received a sample since its last snapshot.
    private func hasNewSnapshot(_ index: Int) -> Bool {
        guard !self.tagNames[index].isEmpty, let last = self.detectors[index].lastSample else { return false }
        return last.time != self.snapshotted[index]
    }

    /// Warms up tags that have seen nothing yet from their last snapshot.
    package mutating func seed(_ snapshots: [TagSnapshot], now: Int64 = .min) {
        for snapshot in snapshots {
            guard let slot = self.slot(for: snapshot.tag, now: now) else { continue }
            self.detectors[Int(slot)].seed(mean: snapshot.ewmaMean, variance: snapshot.ewmaVariance, count: snapshot.samples)
        }
    }

    /// Marks tags stale at once (their source announced its death).
    package mutating func markStale(_ tags: [String], topic: String, now: Int64, into conditions: inout [ConditionEvent]) {
        for tag in tags {
            guard let slot = self.slots[tag] else { continue }
            self.changes.removeAll(keepingCapacity: true)
            self.detectors[Int(slot)].forceStale(now: now, policy: self.settings.policy, into: &self.changes)
            self.emitChanges(slot: slot, topic: topic, sampleTime: now, now: now, into: &conditions)
        }
    }

    /// A sample from the past (Sparkplug `is_historical`): into the tag's history, in time order,
    /// for the modules' windows; no detector sees it and the tag's present is unchanged.
    @discardableResult
    package mutating func recordHistory(slot: Int32, time: Int64, value: Double) -> Bool {
        guard value.isFinite else { return false }
        return self.history.insert(slot: slot, time: time, value: value)
    }

    /// The source of these tags went away without a word (the broker connection of a Sparkplug
    /// host was lost): their last values are uncertain until a new sample comes — OPC UA's
    /// "last usable value" — with no alarm per tag.
    package mutating func markLastUsable(_ tags: [String]) {
        for tag in tags {
            guard let slot = self.slots[tag] else { continue }
            self.lastQuality[Int(slot)] = .uncertain
        }
    }

    /// A transport-level data-quality problem of a tag (a Sparkplug node's broken sequence).
    package mutating func reportDataQuality(_ issue: DataQualityIssue, tag: String, topic: String, now: Int64, into conditions: inout [ConditionEvent]) {
        guard let slot = self.slot(for: tag, now: now) else { return }
        self.reportDataQuality(issue, slot: slot, topic: topic, now: now, into: &conditions)
    }

    /// A data-quality problem of a sample that was refused before its detectors saw it (a time
    /// far in the future): the tag's clock and statistics are left as they were.
    package mutating func reportDataQuality(_ issue: DataQualityIssue, slot: Int32, topic: String, now: Int64, into conditions: inout [ConditionEvent]) {
        self.changes.removeAll(keepingCapacity: true)
        self.detectors[Int(slot)].reportDataQuality(issue, now: now, settings: self.settings, into: &self.changes)
        self.emitChanges(slot: slot, topic: topic, sampleTime: now, now: now, into: &conditions)
    }

    /// Timer tick: raises `stale` for tags silent for longer than their `stale_after` periods,
    /// counting silence from `silentSince` at the earliest (the broker's return after an outage).
    package mutating func checkStaleness(now: Int64, silentSince: Int64 = .min, into conditions: inout [ConditionEvent]) {
        for index in self.detectors.indices where !self.tagNames[index].isEmpty {
            self.changes.removeAll(keepingCapacity: true)
            let lastReceipt = self.lastReceipt[index] == .min ? .min : max(self.lastReceipt[index], silentSince)
            self.detectors[index].checkStale(
                now: now, lastReceipt: lastReceipt, policy: self.settings.policy, into: &self.changes)
            if !self.changes.isEmpty {
                self.emitChanges(slot: Int32(index), topic: self.tagNames[index], sampleTime: now, now: now, into: &conditions)
            }
        }
    }

    /// The condition events of the conditions the last `detect` changed.
    package mutating func emitChanges(slot: Int32, topic: String, sampleTime: Int64, now: Int64, into conditions: inout [ConditionEvent]) {
        let index = Int(slot)
        defer { self.changes.removeAll(keepingCapacity: true) }
        for change in self.changes {
            conditions.append(
                ConditionEvent(
                    change: change, slot: slot, tag: self.tagNames[index], info: self.detectors[index].mappedInfo, topic: topic,
                    sampleTime: sampleTime, now: now))
        }
    }
}

/// A tag's data as the selection criteria see it.
package struct TagView: Sendable, Equatable {
    package let tag: String
    package let info: TagInfo?
    /// The orchestrator's clock at the tag's last sample (epoch ms).
    package let lastReceipt: Int64?
    package let lastQuality: SampleQuality
    /// Good samples held in the tag's history (at most `detection.history`).
    package let goodSamples: Int
    /// Kinds of the tag's open alert episodes.
    package let openKinds: Set<AlertKind>
    /// A stretch of the window where the value did not change at all (see
    /// ``DetectionEngine/frozenStretch(slot:window:)``).
    package var frozen: FrozenStretch? = nil
    /// Sample time of the oldest sample of the module's window.
    package var windowStart: Int64? = nil
    /// When the tag's last `stale`, `flatline` or `data_quality` episode cleared (sample time).
    package var qualityEpisodeCleared: Int64? = nil
}

/// A run of exactly equal readings inside a window that otherwise varies.
package struct FrozenStretch: Sendable, Equatable {
    package let value: Double
    package let samples: Int
    package let seconds: Double

    static let minimumSamples = 10
    static let minimumMilliseconds: Int64 = 60_000
}

/// One tag's latest state, snapshotted into `tag_state` so a restart can warm up from it.
package struct TagSnapshot: Sendable, Equatable {
    package let tag: String
    package let time: Int64
    package let value: Double
    package let quality: SampleQuality
    package let samples: Int
    package let ewmaMean: Double
    package let ewmaVariance: Double

    package init(
        tag: String, time: Int64, value: Double, quality: SampleQuality, samples: Int, ewmaMean: Double, ewmaVariance: Double
    ) {
        self.tag = tag
        self.time = time
        self.value = value
        self.quality = quality
        self.samples = samples
        self.ewmaMean = ewmaMean
        self.ewmaVariance = ewmaVariance
    }
}
