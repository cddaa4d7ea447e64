/// Counts of everything the ingest path saw, for status, metrics and tests.
package struct IngestCounters: Sendable, Equatable {
    package var messages = 0
    package var samples = 0
    package var badQualitySamples = 0
    /// Samples that repeated one already processed (a QoS 1 redelivery): not fed again.
    package var redeliveries = 0
    /// Sparkplug metrics flagged `is_historical`, put in their tags' history (not detected).
    package var historicalSamples = 0
    package var rejected: [PayloadRejection: Int] = [:]
    package var unknownTopics = 0
    package var tagLimitRejections = 0
    /// Samples of units of shards another instance holds (`sharding.shards`), dropped: not an error.
    package var otherShard = 0
    /// Idle tags forgotten to make room (``IngestPipeline/evictIdle(now:)``).
    package var evictedTags = 0
    package var alertsRaised = 0
    package var alertsCleared = 0
    /// Alert events by kind, severity and transition (`raised`, `cleared`): `dang_alerts_total`.
    package var alerts: [AlertTally: Int] = [:]
    package var tags = 0

    package var totalRejected: Int { self.rejected.values.reduce(0, +) + self.unknownTopics + self.tagLimitRejections }
}

/// One series of `dang_alerts_total`: an alert's kind and severity, and the transition counted.
package struct AlertTally: Sendable, Hashable {
    /// What happened to the alert: the pipeline's raise and clear, the desk's lifecycle steps.
    package enum Transition: String, Sendable, Hashable {
        case raised
        case cleared
        case acknowledged
        case shelved
        case unshelved

        package init(_ state: AlertEvent.State) {
            switch state {
            case .raised: self = .raised
            case .cleared: self = .cleared
            }
        }
    }

    package let kind: AlertKind
    package let severity: AlertSeverity
    package let transition: Transition

    package init(kind: AlertKind, severity: AlertSeverity, transition: Transition) {
        self.kind = kind
        self.severity = severity
        self.transition = transition
    }
}
