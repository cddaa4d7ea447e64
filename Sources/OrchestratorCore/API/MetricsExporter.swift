package import CoreMetrics
import Foundation
import Prometheus
import Synchronization

/// Prometheus text from the orchestrator's counters, read at scrape time (nothing on the hot path),
/// and two latency histograms recorded as things finish: module invocations (published → result)
/// and LLM calls.
package final class MetricsExporter: Sendable {
    private let registry = PrometheusCollectorRegistry()
    private let previous = Mutex<[String: Int]>([:])
    private let invocationLatency: DurationHistogram
    private let llmLatency: DurationHistogram

    /// swift-metrics instruments made from this land in the same registry (the record writer's),
    /// with their help text.
    package var factory: any MetricsFactory { DescribedMetricsFactory(registry: self.registry) }

    /// A counter of this registry, for a part that counts as it goes (the API's authentication).
    func counter(_ name: String, help: String) -> Prometheus.Counter {
        self.registry.makeCounter(name: name, help: help)
    }

    package init() {
        let buckets: [Duration] = [
            .milliseconds(10), .milliseconds(50), .milliseconds(100), .milliseconds(500), .seconds(1), .seconds(5), .seconds(10),
            .seconds(30), .seconds(60), .seconds(300), .seconds(900),
        ]
        self.invocationLatency = self.registry.makeDurationHistogram(
            name: "dang_invocation_latency_seconds", buckets: buckets, help: "module invocation published → result")
        self.llmLatency = self.registry.makeDurationHistogram(name: "dang_llm_latency_seconds", buckets: buckets, help: "LLM call, retries included")
    }

    package func observe(_ observation: CoordinatorOutputs.Observation) {
        switch observation {
        case .invocationCompleted(let latency):
            self.invocationLatency.recordNanoseconds(Int64(latency.timeInterval * 1e9))
        case .llmCall(let latency, _):
            // (Failures are counted by the client: dang_llm_failures_total.)
            self.llmLatency.recordNanoseconds(Int64(latency.timeInterval * 1e9))
        }
    }

    func render(_ s: StatusSnapshot) -> [UInt8] {
        let ingest = s.ingest
        let record = s.record
        let decisions = s.decisions
        let llm = s.llm.counters
        // Counters without labels; a count with a breakdown is one labelled family (below), never
        // a total beside its parts.
        let totals: [(String, String, Int)] = [
            ("dang_ingest_messages_total", "MQTT messages handled", ingest.messages),
            ("dang_ingest_samples_total", "samples fed to the detectors", ingest.samples),
            ("dang_ingest_redelivered_total", "samples that repeated one already processed (QoS 1 redelivery), not fed again", ingest.redeliveries),
            ("dang_ingest_other_shard_total", "samples of units another instance holds (sharding.shards), dropped", ingest.otherShard),
            ("dang_ingest_historical_total", "Sparkplug is_historical samples put in their tags' history, not detected", ingest.historicalSamples),
            ("dang_invocation_results_total", "module results received", decisions.results),
            ("dang_invocation_timeouts_total", "invocations timed out", decisions.timeouts),
            ("dang_invocation_retries_total", "invocations sent again", decisions.retries),
            ("dang_llm_calls_total", "LLM calls", llm?.calls ?? 0),
            ("dang_llm_failures_total", "LLM calls without a usable answer", llm?.failures ?? 0),
            ("dang_llm_cache_hits_total", "LLM answers from the cache", llm?.cacheHits ?? 0),
            ("dang_tags_evicted_total", "idle tags outside the topic map forgotten (ingest.evict_idle_after)", ingest.evictedTags),
            ("dang_record_corrupt_bytes_total", "spool bytes skipped as corrupt and moved aside", record.corruptBytesSkipped),
            ("dang_database_pool_refused_total", "reads and operator actions refused: the database pool's queue was full", s.poolRefused),
            ("dang_approvals_refused_total", "approval messages without an explicit {\"approve\": true|false}", decisions.refusedApprovals),
            ("dang_acknowledgements_refused_total", "MQTT acknowledgements refused: too many waiting, or the orchestrator stopping", s.refusedAcknowledgements),
        ]
        for (name, help, value) in totals { self.count(name, help: help, labels: [], value) }
        var rejected = ingest.rejected.map { ($0.key.rawValue, $0.value) }
        rejected += [("unknown_topic", ingest.unknownTopics), ("tag_limit", ingest.tagLimitRejections)]
        for (reason, value) in rejected {
            self.count("dang_ingest_rejected_total", help: "messages and samples refused, by reason", labels: [("reason", reason)], value)
        }
        for (tally, value) in ingest.alerts.merging(s.alertTransitions, uniquingKeysWith: +) {
            self.count(
                "dang_alerts_total", help: "alert events: raised and cleared episodes, and the operators' acknowledgements and shelvings",
                labels: [("kind", tally.kind.rawValue), ("severity", tally.severity.rawValue), ("transition", tally.transition.rawValue)], value)
        }
        for (tally, value) in s.decisionTallies {
            self.count(
                "dang_decisions_total", help: "decisions made, by module and action (invoke, skip, defer)",
                labels: [("module", tally.module.rawValue), ("action", tally.action.rawValue)], value)
        }
        for (result, value) in [("applied", s.reloadsApplied), ("refused", s.reloadsRefused)] {
            self.count("dang_config_reloads_total", help: "configuration reloads (SIGHUP, POST /reload)", labels: [("result", result)], value)
        }
        for role in ["single", "active", "standby", "isolated"] {
            self.registry.makeGauge(
                name: "dang_role", labels: [("role", role)],
                help: "1 for this instance's role: single (no ha), active, standby, or isolated (the active that cannot reach the database)")
                .set(to: s.role == role ? 1 : 0)
        }
        if let shards = s.shards {
            self.registry.makeGauge(name: "dang_shards_held", labels: [], help: "shards this instance holds (sharding.shards)")
                .set(to: Double(shards.count))
        }
        for severity in AlertSeverity.allCases {
            self.registry.makeGauge(name: "dang_alerts_active", labels: [("severity", severity.rawValue)], help: "open alert episodes")
                .set(to: Double(s.activeAlerts[severity] ?? 0))
        }
        self.registry.makeGauge(name: "dang_open_invocations", help: "invocations not finished").set(to: Double(s.openInvocations))
        self.registry.makeGauge(name: "dang_mqtt_connected", help: "1 while connected to the broker").set(to: s.mqttConnected ? 1 : 0)
        self.registry.makeGauge(name: "dang_database_connected", help: "1 while the record writer is connected").set(to: record.connected ? 1 : 0)
        self.registry.makeGauge(name: "dang_tags", help: "tags seen").set(to: Double(ingest.tags))
        self.registry.makeGauge(name: "dang_ready", help: "1 while GET /readyz answers 200 (broker and database connected, spool with room)")
            .set(to: s.notReadyReasons.isEmpty ? 1 : 0)
        self.registry.makeGauge(name: "dang_build_info", labels: [("version", s.version)], help: "always 1; the running version as a label").set(to: 1)
        return self.registry.emitToBuffer()
    }

    /// Brings a counter up to `value` (counts only grow; the registry keeps what it was given).
    private func count(_ name: String, help: String, labels: [(String, String)], _ value: Int) {
        let key = ([name] + labels.map { "\($0.0)=\($0.1)" }).joined(separator: "|")
        self.previous.withLock { previous in
            let delta = value - (previous[key] ?? 0)
            let counter = self.registry.makeCounter(name: name, labels: labels, help: help)
            if delta > 0 { counter.increment(by: Int64(delta)) }
            previous[key] = max(value, previous[key] ?? 0)
        }
    }
}

/// swift-prometheus's factory for swift-metrics, but a counter or gauge this project names gets its
/// `# HELP` line (Prometheus wants one on every family: `promtool check metrics`).
private struct DescribedMetricsFactory: MetricsFactory {
    static let help = [
        "dang_record_written_total": "records written to PostgreSQL",
        "dang_record_dropped_total": "records lost: no spool room and the in-memory queue full, or unwritten at shutdown (logged)",
        "dang_record_rejected_total": "records the database refused for their own data, set aside in the dead-letter file",
        "dang_record_spool_bytes": "bytes in the spool not yet written to PostgreSQL",
        "dang_record_spool_capacity_bytes": "database.spool_max_bytes",
    ]

    let registry: PrometheusCollectorRegistry
    private var plain: PrometheusMetricsFactory { PrometheusMetricsFactory(registry: self.registry) }

    func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        guard let help = Self.help[label] else { return self.plain.makeCounter(label: label, dimensions: dimensions) }
        return self.registry.makeCounter(name: label, labels: dimensions, help: help)
    }

    func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        self.plain.makeFloatingPointCounter(label: label, dimensions: dimensions)
    }

    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        guard !aggregate, let help = Self.help[label] else { return self.plain.makeRecorder(label: label, dimensions: dimensions, aggregate: aggregate) }
        return self.registry.makeGauge(name: label, labels: dimensions, help: help)
    }

    func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        guard let help = Self.help[label] else { return self.plain.makeMeter(label: label, dimensions: dimensions) }
        return self.registry.makeGauge(name: label, labels: dimensions, help: help)
    }

    func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        self.plain.makeTimer(label: label, dimensions: dimensions)
    }

    func destroyCounter(_ handler: any CounterHandler) { self.plain.destroyCounter(handler) }
    func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) { self.plain.destroyFloatingPointCounter(handler) }
    func destroyRecorder(_ handler: any RecorderHandler) { self.plain.destroyRecorder(handler) }
    func destroyMeter(_ handler: any MeterHandler) { self.plain.destroyMeter(handler) }
    func destroyTimer(_ handler: any TimerHandler) { self.plain.destroyTimer(handler) }
}
