import Foundation
import Yams
package import Mosquitto

/// Reading the `detection` section of `orchestrator.yaml` into the settings.
extension DetectionSettings {
    mutating func read(_ detection: YAMLSection) {
        self.ewmaAlpha = detection.double("ewma_alpha", default: self.ewmaAlpha, in: 0.0001...1)
        self.warmupSamples = detection.int("warmup_samples", default: self.warmupSamples, in: 2...1_000_000)
        self.zClear = detection.double("z_clear", default: self.zClear, in: 0.01...1000)
        self.sigmaFloor = detection.double("sigma_floor", default: self.sigmaFloor, in: 0...1)
        if let anomaly = detection.section("anomaly") {
            self.robustWindow = anomaly.int("window", default: self.robustWindow, in: 8...RobustWindow.maximumCapacity)
            self.windowStride = anomaly.int("window_stride", default: self.windowStride, in: 1...10_000)
            self.spikeShape = anomaly.double("spike_shape", default: self.spikeShape, in: 0.01...1000)
            self.tailWidening = anomaly.double("tail_widening", default: self.tailWidening, in: 0...1000)
            self.anomalyBins = anomaly.int("bins", default: self.anomalyBins, in: 2...16)
            self.noveltyAdaptation = anomaly.double("novelty_adaptation", default: self.noveltyAdaptation, in: 0...1)
            self.driftScore = anomaly.double("drift_score", default: self.driftScore, in: 0...1)
            self.anomalyRest = anomaly.int("rest", default: self.anomalyRest, in: 0...1_000_000)
            self.anomalyRestGrowth = anomaly.double("rest_growth", default: self.anomalyRestGrowth, in: 0...10)
            self.anomalyRestMax = anomaly.int("rest_max", default: self.anomalyRestMax, in: 0...10_000_000)
            self.gatePeriodicEvents = anomaly.bool("gate_periodic_events", default: self.gatePeriodicEvents)
            self.anomalyRestLevel = anomaly.double("rest_level", default: self.anomalyRestLevel, in: 0...1)
            self.anomalyRaise = anomaly.double("raise", default: self.anomalyRaise, in: 0.01...1)
            self.anomalyClear = anomaly.double("clear", default: self.anomalyClear, in: 0...1)
            self.anomalyMinSigmas = anomaly.double("min_sigmas", default: self.anomalyMinSigmas, in: 0...1000)
            self.shiftAlerts = anomaly.bool("shift_alerts", default: self.shiftAlerts)
            if self.anomalyClear > self.anomalyRaise {
                anomaly.diagnostics.report(.error, anomaly.keyPath("clear"), at: anomaly.markOf("clear"), "must not exceed raise")
            }
            anomaly.finish()
        }
        self.cusumK = detection.double("cusum_k", default: self.cusumK, in: 0...100)
        self.cusumH = detection.double("cusum_h", default: self.cusumH, in: 0.1...1000)
        self.maxTags = detection.int("max_tags", default: self.maxTags, in: 1...10_000_000)
        self.historyConfigured = detection.node("history") != nil
        self.historyDepth = detection.int("history", default: self.historyDepth, in: 0...100_000)
        if self.anomalyMinSigmas > 0, self.zClear >= self.anomalyMinSigmas {
            detection.diagnostics.report(
                .error, detection.keyPath("z_clear"), at: detection.markOf("z_clear"),
                "must be below anomaly.min_sigmas (\(self.anomalyMinSigmas)) so that alerts clear with hysteresis")
        }
        if let alerts = detection.section("alerts") {
            self.policy.onDelay = alerts.int("on_delay", default: self.policy.onDelay, in: 1...1_000_000)
            self.policy.offDelay = alerts.int("off_delay", default: self.policy.offDelay, in: 1...1_000_000)
            self.policy.cooldownMilliseconds = alerts.duration("cooldown", default: .zero).milliseconds
            self.adoptWithin = alerts.duration("adopt_within", default: self.adoptWithin)
            if self.adoptWithin < .seconds(1) {
                alerts.diagnostics.report(.error, alerts.keyPath("adopt_within"), at: alerts.markOf("adopt_within"), "must be at least 1s")
                self.adoptWithin = .seconds(600)
            }
            alerts.finish()
        }
        if let trend = detection.section("trend") {
            self.trendEnabled = trend.bool("enabled", default: self.trendEnabled)
            self.trendBlock = trend.int("block", default: self.trendBlock, in: 1...100_000)
            self.trendWindow = trend.int("window", default: self.trendWindow, in: 4...1000)
            self.trendAlpha = trend.double("alpha", default: self.trendAlpha, in: 1e-12...0.5)
            self.trendClearAlpha = trend.double("clear_alpha", default: self.trendClearAlpha, in: 1e-12...1)
            self.trendMinSigmas = trend.double("min_sigmas", default: self.trendMinSigmas, in: 0...1000)
            if self.trendClearAlpha < self.trendAlpha {
                trend.diagnostics.report(
                    .error, trend.keyPath("clear_alpha"), at: trend.markOf("clear_alpha"), "must be at least alpha")
            }
            trend.finish()
        }
        if let flatline = detection.section("flatline") {
            self.flatlineLearn = flatline.bool("learn", default: self.flatlineLearn)
            self.flatlineFactor = flatline.double("factor", default: self.flatlineFactor, in: 1...1000)
            self.flatlineMinSamples = flatline.int("min_samples", default: self.flatlineMinSamples, in: 2...1_000_000)
            self.flatlineLearnChanges = flatline.int("learn_changes", default: self.flatlineLearnChanges, in: 1...1_000_000)
            flatline.finish()
        }
        if let prediction = detection.section("prediction") {
            self.predictionEnabled = prediction.bool("enabled", default: self.predictionEnabled)
            self.predictionHorizon = prediction.duration("horizon", default: self.predictionHorizon)
            self.predictionClearFactor = prediction.double("clear_factor", default: self.predictionClearFactor, in: 1...100)
            if self.predictionHorizon < .seconds(1) {
                prediction.diagnostics.report(.error, prediction.keyPath("horizon"), at: prediction.markOf("horizon"), "must be at least 1s")
                self.predictionHorizon = .seconds(1800)
            }
            prediction.finish()
        }
        if let unit = detection.section("multivariate") {
            self.multivariateEnabled = unit.bool("enabled", default: self.multivariateEnabled)
            self.multivariateBaseline = unit.int("baseline", default: self.multivariateBaseline, in: 20...1_000_000)
            self.multivariate.eigenvalueFloor = unit.double("eigenvalue_floor", default: self.multivariate.eigenvalueFloor, in: 1e-9...10)
            self.multivariate.varianceExplained = unit.double("variance_explained", default: self.multivariate.varianceExplained, in: 0.1...1)
            self.multivariate.lambda = unit.double("ewma_lambda", default: self.multivariate.lambda, in: 0.001...1)
            self.multivariate.kappa = unit.double("limit_widening", default: self.multivariate.kappa, in: 1...100)
            // `auto` (the default): the unit's Bonferroni limit, `MultivariateModel.derivedTagLimit`.
            if let text = unit.text("tag_sigmas")?.trimmingCharacters(in: .whitespaces), text != "auto" {
                if let sigmas = Double(text), (0...1000).contains(sigmas) {
                    self.multivariate.tagSigmas = sigmas
                } else {
                    unit.diagnostics.report(
                        .error, unit.keyPath("tag_sigmas"), at: unit.markOf("tag_sigmas"),
                        "expected auto or a number of standard deviations in 0...1000 (0: off), got \"\(text)\"")
                }
            }
            self.suppressTagAnomalies = unit.bool("suppress_tag_anomalies", default: self.suppressTagAnomalies)
            unit.finish()
        }
        if let quality = detection.section("data_quality") {
            self.gapFactor = quality.double("gap_factor", default: self.gapFactor, in: 1...1_000_000)
            self.dataQualityClearAfter = quality.int("clear_after", default: self.dataQualityClearAfter, in: 1...1_000_000)
            quality.finish()
        }
        if let node = detection.node("market_moves") {
            guard
                let entries = YAMLSection.items(
                    of: node, path: detection.keyPath("market_moves"), diagnostics: detection.diagnostics, expected: "{window, threshold_percent}")
            else {
                detection.finish()
                return
            }
            var moves: [MarketMove] = []
            for entry in entries {
                moves.append(
                    MarketMove(
                        window: entry.duration("window", default: .seconds(900)),
                        thresholdPercent: entry.double("threshold_percent", default: 2, in: 0.0001...1_000_000)))
                entry.finish()
            }
            self.marketMoves = moves
        }
        detection.finish()
    }
}
