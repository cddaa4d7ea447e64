/// Every tag's detectors and the open alert episodes: the part of the live path that is the same
/// in `dang run` and `dang replay`. A value type with no I/O and no clock: time arrives with each
/// sample.
package struct DetectionEngine: Sendable {
    package let settings: DetectionSettings
    private let topicMap: TopicMap
    private var slots: [String: Int32] = [:]
    package private(set) var tagNames: [String] = []
    private var tagInfos: [TagInfo?] = []
    private var detectors: [TagDetector] = []
    private var alerts = AlertBook()
    private var changes: [ConditionChange] = []
    private var scratch: [Double] = []

    package init(settings: DetectionSettings, topicMap: TopicMap) {
        self.settings = settings
        self.topicMap = topicMap
    }

    package var tagCount: Int { self.tagNames.count }

    /// Alert episodes currently open.
    package var openAlerts: Int { self.alerts.openCount }

    /// The slot of a tag, created on first sight; `nil` once `max_tags` tags exist.
    package mutating func slot(for tag: String) -> Int32? {
        if let slot = self.slots[tag] { return slot }
        guard self.tagNames.count < self.settings.maxTags else { return nil }
        let slot = Int32(self.tagNames.count)
        let info = self.topicMap.tags[tag]
        self.slots[tag] = slot
        self.tagNames.append(tag)
        self.tagInfos.append(info)
        self.detectors.append(TagDetector(settings: self.settings, info: info ?? TagInfo(), isMarket: tag.hasPrefix("market/")))
        return slot
    }

    /// The last multivariate score of any unit, in [0, 1].
    package private(set) var lastUnitScore = 0.0

    /// Ends a training period: detectors that learn a baseline freeze it.
    package mutating func endTraining() {}

    /// Evaluates the multivariate unit monitors on the latest values of their tags.
    package mutating func evaluateUnits(at time: Int64, into events: inout [AlertEvent]) {}

    /// Feeds one sample to its tag's detectors; alert transitions are appended to `events`.
    /// Returns the sample's anomaly score in [0, 1] (0 for samples that feed nothing).
    @discardableResult
    package mutating func ingest(
        slot: Int32, value: Double, quality: SampleQuality, sampleTime: Int64, receiptTime: Bool = false, topic: String,
        now: Int64, into events: inout [AlertEvent]
    ) -> Double {
        let index = Int(slot)
        self.changes.removeAll(keepingCapacity: true)
        let score = self.detectors[index].ingest(
            value, time: sampleTime, receiptTime: receiptTime, quality: quality, settings: self.settings,
            scratch: &self.scratch, into: &self.changes)
        self.emit(slot: slot, topic: topic, sampleTime: sampleTime, now: now, into: &events)
        return score
    }

    /// Timer tick: raises `stale` for tags silent for longer than their `stale_after` periods.
    package mutating func checkStaleness(now: Int64, into events: inout [AlertEvent]) {
        for index in self.detectors.indices {
            self.changes.removeAll(keepingCapacity: true)
            self.detectors[index].checkStale(now: now, policy: self.settings.policy, into: &self.changes)
            if !self.changes.isEmpty {
                self.emit(slot: Int32(index), topic: "", sampleTime: now, now: now, into: &events)
            }
        }
    }

    private mutating func emit(slot: Int32, topic: String, sampleTime: Int64, now: Int64, into events: inout [AlertEvent]) {
        let index = Int(slot)
        for change in self.changes {
            if let event = self.alerts.event(
                for: change, slot: slot, tag: self.tagNames[index], info: self.tagInfos[index], topic: topic,
                sampleTime: sampleTime, now: now)
            {
                events.append(event)
            }
        }
    }
}
