import Foundation
import Logging
import Synchronization

/// What a reload did (SIGHUP or `POST /reload`): refused with the file's errors (the running
/// configuration stays whole), or applied — what changed, and what changed but waits for a restart.
package struct ReloadReport: Sendable, Equatable {
    /// The problems that refused it (`check-config`'s, with file, line and key); empty when applied.
    package var errors: [String] = []
    package var warnings: [String] = []
    /// What changed and now applies: `orchestrator.triggers`, `orchestrator.modules.forecasting`,
    /// `tag r1/cdu/cdu1/TI-101`…
    package var applied: [String] = []
    /// What changed but takes a restart (the broker, the database, the listener, detection
    /// settings…); the running values stay.
    package var restartNeeded: [String] = []

    package var accepted: Bool { self.errors.isEmpty }
}

/// Where a reload reads the configuration from: the file `dang run` started with, with the same
/// command-line overrides.
package typealias ConfigurationSource = @Sendable () throws -> OrchestratorConfig

extension Orchestrator {
    /// Reads the configuration and topic map again, checks them as `check-config` does, and applies
    /// what can change while running — tag entries of the topic map (limits, metadata, detector
    /// settings), `suppress_when`, triggers, module settings and the decision engine's — keeping
    /// every detector's and unit model's state. A file with errors is refused and nothing changes.
    /// The API's certificate is read again too (`api.tls`).
    package func reload() -> ReloadReport {
        self.reloadLock.withLock { _ in
            var report = ReloadReport()
            guard let source = self.configurationSource else {
                report.errors = ["no configuration file to read again (this orchestrator was not started from one)"]
                return self.finish(report)
            }
            let next: OrchestratorConfig
            do {
                next = try source()
            } catch let error as ConfigError {
                report.errors = error.issues.filter { $0.severity == .error }.map(\.description)
                report.warnings = error.issues.filter { $0.severity != .error }.map(\.description)
                return self.finish(report)
            } catch {
                report.errors = ["\(error)"]
                return self.finish(report)
            }
            report.warnings = next.warnings.map(\.description)
            let running = self.config
            report.restartNeeded = Self.restartNeeded(running: running, next: next)

            // What applies: the running configuration with the reloadable parts of the new one.
            var applied = running
            applied.modules = next.modules
            applied.decisionEngine = next.decisionEngine
            applied.triggers = next.triggers
            applied.topicMap.tags = next.topicMap.tags
            applied.topicMap.suppressions = next.topicMap.suppressions
            applied.warnings = next.warnings
            if running.triggers != next.triggers { report.applied.append("orchestrator.triggers") }
            if running.decisionEngine != next.decisionEngine { report.applied.append("orchestrator.decision_engine") }
            for module in ModuleName.allCases where running.modules[module] != next.modules[module] {
                report.applied.append("orchestrator.modules.\(module.rawValue)")
            }
            if running.topicMap.suppressions != next.topicMap.suppressions { report.applied.append("suppress_when") }
            // Every tag whose entry changed, added or went (tags not seen yet included).
            self.pipeline.reconfigure(topicMap: applied.topicMap, triggers: applied.triggers)
            report.applied += Set(running.topicMap.tags.keys).union(next.topicMap.tags.keys)
                .filter { running.topicMap.tags[$0] != next.topicMap.tags[$0] }.sorted().map { "tag \($0)" }
            self.coordinator.reconfigure(applied)
            self.live.withLock { $0 = applied }
            if let certificates = self.apiCertificates {
                do {
                    try certificates.reload()
                    report.applied.append("api.tls (the certificate and key were read again)")
                } catch {
                    report.warnings.append("api.tls: the certificate and key in use stay: \(error)")
                }
            }
            return self.finish(report)
        }
    }

    /// Logs and counts a reload's outcome.
    private func finish(_ report: ReloadReport) -> ReloadReport {
        self.reloadCounts.withLock { if report.accepted { $0.applied += 1 } else { $0.refused += 1 } }
        if !report.accepted {
            self.logger.error(
                "reload refused: the configuration has errors; the running one stays",
                metadata: ["errors": "\(report.errors.joined(separator: "; "))"])
            return report
        }
        for warning in report.warnings { self.logger.warning("reload: \(warning)") }
        if !report.restartNeeded.isEmpty {
            self.logger.warning(
                "reload: changed, but only a restart applies them (the running values stay)",
                metadata: ["keys": "\(report.restartNeeded.joined(separator: ", "))"])
        }
        self.logger.notice(
            report.applied.isEmpty ? "reload: nothing changed" : "reload: applied",
            metadata: ["changes": "\(report.applied.count)", "applied": "\(report.applied.prefix(20).joined(separator: ", "))"])
        return report
    }

    /// The sections that differ but are fixed while running: connections and listeners, the
    /// detection engine's settings (every tag's detectors are built from them), topic routing, and
    /// the units (their models are trained on a fixed set of tags).
    static func restartNeeded(running: OrchestratorConfig, next: OrchestratorConfig) -> [String] {
        var keys: [String] = []
        if running.mqtt != next.mqtt { keys.append("mqtt") }
        if running.database != next.database { keys.append("database") }
        if running.api != next.api { keys.append("api") }
        if running.topics != next.topics { keys.append("topics") }
        if running.ingest != next.ingest { keys.append("ingest") }
        if running.detection != next.detection { keys.append("detection") }
        if running.llm != next.llm { keys.append("orchestrator.llm") }
        if running.timeZone != next.timeZone { keys.append("orchestrator.time_zone") }
        if running.availability != next.availability { keys.append("instance / ha / sharding") }
        // (The decision service's timer is set when it starts; the rest of decision_engine applies.)
        if running.decisionEngine.tick != next.decisionEngine.tick { keys.append("orchestrator.decision_engine.tick") }
        if running.topicMap.sensorPattern != next.topicMap.sensorPattern || running.topicMap.marketPattern != next.topicMap.marketPattern
            || running.topicMap.namedTopics != next.topicMap.namedTopics
        {
            keys.append("the topic map's patterns and topic: names")
        }
        let units = Dictionary(running.topicMap.units.map { ($0.name, $0.tags) }, uniquingKeysWith: { a, _ in a })
        let nextUnits = Dictionary(next.topicMap.units.map { ($0.name, $0.tags) }, uniquingKeysWith: { a, _ in a })
        for unit in Set(units.keys).union(nextUnits.keys).sorted() where units[unit] != nextUnits[unit] {
            keys.append("unit \(unit) (its monitor keeps the tags it was trained on)")
        }
        return keys
    }
}
