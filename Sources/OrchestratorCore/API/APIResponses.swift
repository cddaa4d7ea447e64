package import Foundation

/// The JSON bodies of the API (docs/openapi.yaml), as `Encodable` types. A field the description
/// marks nullable is written as `null`, never left out.
enum APIResponse {
    struct Failure: Encodable {
        let error: String
    }

    struct Invoked: Encodable {
        let decisionID: String
        let module: String
        let action: String
        let confidence: Double
        let reasons: JSONValue

        enum CodingKeys: String, CodingKey {
            case decisionID = "decision_id", module, action, confidence, reasons
        }
    }

    struct Approved: Encodable {
        let decisionID: String
        let approved: Bool

        enum CodingKeys: String, CodingKey {
            case decisionID = "decision_id", approved
        }
    }

    struct Acknowledged: Encodable {
        let alertID: String
        let acknowledged: Bool

        enum CodingKeys: String, CodingKey {
            case alertID = "alert_id", acknowledged
        }
    }

    struct Shelved: Encodable {
        let alertID: String
        let shelvedUntil: Int64

        enum CodingKeys: String, CodingKey {
            case alertID = "alert_id", shelvedUntil = "shelved_until"
        }
    }

    struct Unshelved: Encodable {
        let alertID: String
        let unshelved: Bool

        enum CodingKeys: String, CodingKey {
            case alertID = "alert_id", unshelved
        }
    }

    struct Alerts: Encodable {
        let alerts: [AlertListing]
    }

    struct Reloaded: Encodable {
        let reloaded = true
        let applied: [String]
        let restartNeeded: [String]
        let warnings: [String]

        enum CodingKeys: String, CodingKey {
            case reloaded, applied, restartNeeded = "restart_needed", warnings
        }
    }

    struct ReloadRefused: Encodable {
        let reloaded = false
        let error: String
        let errors: [String]
        let warnings: [String]
    }

    struct Tags: Encodable {
        let tags: [TagReading]
        /// The unit monitor of the path asked for; null when it has none.
        let monitor: UnitMonitorState?

        func encode(to encoder: any Encoder) throws {
            enum Key: String, CodingKey { case tags, monitor }
            var c = encoder.container(keyedBy: Key.self)
            try c.encode(self.tags, forKey: .tags)
            try c.encode(self.monitor, forKey: .monitor)
        }
    }

    struct OutOfService: Encodable {
        let outOfService: [OutOfServiceTag]

        enum CodingKeys: String, CodingKey {
            case outOfService = "out_of_service"
        }
    }

    struct Service: Encodable {
        let tag: String
        let outOfService: Bool

        enum CodingKeys: String, CodingKey {
            case tag, outOfService = "out_of_service"
        }
    }

    struct Decisions: Encodable {
        struct Row: Encodable {
            let row: History.DecisionRow

            enum CodingKeys: String, CodingKey {
                case decisionID = "decision_id", ts, module, action, source, trigger, reasons, confidence
                case latency = "latency_us", outcome, parent = "parent_decision_id", invocation
            }

            enum InvocationKeys: String, CodingKey {
                case invocationID = "invocation_id", attempts, latency = "latency_ms", result, resultBytes = "result_bytes"
            }

            func encode(to encoder: any Encoder) throws {
                let d = self.row.decision
                var c = encoder.container(keyedBy: CodingKeys.self)
                try c.encode(d.decisionID.uuidString.lowercased(), forKey: .decisionID)
                try c.encode(d.ts, forKey: .ts)
                try c.encode(d.module, forKey: .module)
                try c.encode(d.action, forKey: .action)
                try c.encode(d.source, forKey: .source)
                try c.encode(JSONValue(parsing: Array(d.trigger.utf8)) ?? .string(d.trigger), forKey: .trigger)
                try c.encode(JSONValue(parsing: Array(d.reasons.utf8)) ?? .string(d.reasons), forKey: .reasons)
                try c.encode(d.confidence.flatMap { $0.isFinite ? $0 : nil }, forKey: .confidence)
                try c.encode(d.latencyMicroseconds, forKey: .latency)
                try c.encode(self.row.outcome, forKey: .outcome)
                try c.encode(d.parentDecisionID?.uuidString.lowercased(), forKey: .parent)
                if let invocation = self.row.invocation {
                    var i = c.nestedContainer(keyedBy: InvocationKeys.self, forKey: .invocation)
                    try i.encode(invocation.id.uuidString.lowercased(), forKey: .invocationID)
                    try i.encode(invocation.attempts, forKey: .attempts)
                    try i.encode(invocation.latencyMilliseconds, forKey: .latency)
                    try i.encode(invocation.resultBytes, forKey: .resultBytes)
                    try i.encode(invocation.result.flatMap { JSONValue(parsing: Array($0.utf8)) }, forKey: .result)
                } else {
                    try c.encodeNil(forKey: .invocation)
                }
            }
        }

        struct Count: Encodable {
            let module: String
            let triggerKind: String
            let outcome: String
            let decisions: Int

            enum CodingKeys: String, CodingKey {
                case module, triggerKind = "trigger_kind", outcome, decisions
            }
        }

        struct Module: Encodable {
            let stats: History.ModuleStats

            enum CodingKeys: String, CodingKey {
                case module, invocations, successRate = "success_rate", p50 = "latency_ms_p50", p95 = "latency_ms_p95", p99 = "latency_ms_p99"
            }

            func encode(to encoder: any Encoder) throws {
                var c = encoder.container(keyedBy: CodingKeys.self)
                try c.encode(self.stats.module, forKey: .module)
                try c.encode(self.stats.invocations, forKey: .invocations)
                try c.encode(self.stats.successRate, forKey: .successRate)
                try c.encode(self.stats.p50, forKey: .p50)
                try c.encode(self.stats.p95, forKey: .p95)
                try c.encode(self.stats.p99, forKey: .p99)
            }
        }

        let decisions: [Row]
        let next: String?
        let counts: [Count]?
        let modules: [Module]?

        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(self.decisions, forKey: .decisions)
            try c.encode(self.next, forKey: .next)
            try c.encodeIfPresent(self.counts, forKey: .counts)
            try c.encodeIfPresent(self.modules, forKey: .modules)
        }

        enum CodingKeys: String, CodingKey {
            case decisions, next, counts, modules
        }
    }

    /// `GET /livez`.
    struct Alive: Encodable {
        let status = "alive"
    }

    /// `GET /readyz`: whether the instance is ready, and the reasons it is not.
    struct Readiness: Encodable {
        let ready: Bool
        let reasons: [String]
    }

    /// `GET /status`.
    struct Status: Encodable {
        let snapshot: StatusSnapshot

        private enum Key: String, CodingKey {
            case state, version, startedAt = "started_at", instance, role, leaseEpoch = "lease_epoch", shards, mqtt, database, ingest, detectors, modules, decisions, llm
            case shelvedAlarms = "shelved_alarms", outOfServiceTags = "out_of_service_tags", connected, connects, lastError = "last_error", droppedWhileAway = "dropped_while_away"
            case written, spoolBytes = "spool_bytes", rejected, dropped, corruptBytesSkipped = "corrupt_bytes_skipped", poolRefused = "pool_refused", fenced
            case messages, samples, unknownTopics = "unknown_topics", rejectedByReason = "rejected_by_reason", tagLimit = "tag_limit"
            case tagsEvicted = "tags_evicted", redelivered, otherShard = "other_shard", tags, alertsRaised = "alerts_raised", alertsCleared = "alerts_cleared"
            case units, name, trained, enabled, transport, inFlight = "in_flight", maxInFlight = "max_in_flight"
            case requiresApproval = "requires_approval", invoked, skipped, deferred, results, timeouts, retries
            case openInvocations = "open_invocations", active, provider, model, calls, failures, cacheHits = "cache_hits"
            case rejectedCircuitOpen = "rejected_circuit_open"
        }

        func encode(to encoder: any Encoder) throws {
            let s = self.snapshot
            var c = encoder.container(keyedBy: Key.self)
            try c.encode(!s.mqttConnected || !s.record.connected ? "degraded" : "ok", forKey: .state)
            try c.encode(s.version, forKey: .version)
            try c.encode(s.startedAt.formatted(.iso8601), forKey: .startedAt)
            try c.encode(s.instance, forKey: .instance)
            try c.encode(s.role, forKey: .role)
            try c.encodeIfPresent(s.leaseEpoch, forKey: .leaseEpoch)
            try c.encodeIfPresent(s.shards, forKey: .shards)
            var mqtt = c.nestedContainer(keyedBy: Key.self, forKey: .mqtt)
            try mqtt.encode(s.mqttConnected, forKey: .connected)
            try mqtt.encode(s.mqttConnects, forKey: .connects)
            try mqtt.encode(s.mqttLastError, forKey: .lastError)
            try mqtt.encode(s.droppedWhileAway, forKey: .droppedWhileAway)
            var database = c.nestedContainer(keyedBy: Key.self, forKey: .database)
            try database.encode(s.record.connected, forKey: .connected)
            try database.encode(s.record.written, forKey: .written)
            try database.encode(s.record.spooledBytes, forKey: .spoolBytes)
            try database.encode(s.record.rejectedRecords, forKey: .rejected)
            try database.encode(s.record.dropped, forKey: .dropped)
            try database.encode(s.record.fenced, forKey: .fenced)
            try database.encode(s.record.corruptBytesSkipped, forKey: .corruptBytesSkipped)
            try database.encode(s.poolRefused, forKey: .poolRefused)
            var ingest = c.nestedContainer(keyedBy: Key.self, forKey: .ingest)
            try ingest.encode(s.ingest.messages, forKey: .messages)
            try ingest.encode(s.ingest.samples, forKey: .samples)
            try ingest.encode(s.ingest.totalRejected, forKey: .rejected)
            try ingest.encode(s.ingest.unknownTopics, forKey: .unknownTopics)
            try ingest.encode(
                Dictionary(uniqueKeysWithValues: s.ingest.rejected.map { ($0.key.rawValue, $0.value) }), forKey: .rejectedByReason)
            try ingest.encode(s.ingest.tagLimitRejections, forKey: .tagLimit)
            try ingest.encode(s.ingest.evictedTags, forKey: .tagsEvicted)
            try ingest.encode(s.ingest.redeliveries, forKey: .redelivered)
            try ingest.encode(s.ingest.otherShard, forKey: .otherShard)
            try ingest.encode(s.ingest.tags, forKey: .tags)
            try ingest.encode(s.ingest.alertsRaised, forKey: .alertsRaised)
            try ingest.encode(s.ingest.alertsCleared, forKey: .alertsCleared)
            var detectors = c.nestedContainer(keyedBy: Key.self, forKey: .detectors)
            var units = detectors.nestedUnkeyedContainer(forKey: .units)
            for unit in s.units {
                var entry = units.nestedContainer(keyedBy: Key.self)
                try entry.encode(unit.name, forKey: .name)
                try entry.encode(unit.tags, forKey: .tags)
                try entry.encode(unit.trained, forKey: .trained)
            }
            var modules = c.nestedContainer(keyedBy: NameKey.self, forKey: .modules)
            for (name, module) in s.modules {
                var entry = modules.nestedContainer(keyedBy: Key.self, forKey: NameKey(name.rawValue))
                try entry.encode(module.enabled, forKey: .enabled)
                try entry.encode(module.transport, forKey: .transport)
                try entry.encode(module.inFlight, forKey: .inFlight)
                try entry.encode(module.maxInFlight, forKey: .maxInFlight)
                try entry.encode(module.requiresApproval, forKey: .requiresApproval)
            }
            var decisions = c.nestedContainer(keyedBy: Key.self, forKey: .decisions)
            try decisions.encode(s.decisions.decisions, forKey: .decisions)
            try decisions.encode(s.decisions.invoked, forKey: .invoked)
            try decisions.encode(s.decisions.skipped, forKey: .skipped)
            try decisions.encode(s.decisions.deferred, forKey: .deferred)
            try decisions.encode(s.decisions.results, forKey: .results)
            try decisions.encode(s.decisions.timeouts, forKey: .timeouts)
            try decisions.encode(s.decisions.retries, forKey: .retries)
            try decisions.encode(s.openInvocations, forKey: .openInvocations)
            var llm = c.nestedContainer(keyedBy: Key.self, forKey: .llm)
            try llm.encode(s.llm.active, forKey: .active)
            try llm.encode(s.llm.provider, forKey: .provider)
            try llm.encode(s.llm.model, forKey: .model)
            if let counters = s.llm.counters {
                try llm.encode(counters.calls, forKey: .calls)
                try llm.encode(counters.failures, forKey: .failures)
                try llm.encode(counters.cacheHits, forKey: .cacheHits)
                try llm.encode(counters.rejectedOpen, forKey: .rejectedCircuitOpen)
            }
            try c.encode(s.shelvedAlerts, forKey: .shelvedAlarms)
            try c.encode(s.outOfServiceTags, forKey: .outOfServiceTags)
        }
    }
}
