import Foundation
import Yams
package import Mosquitto

/// `detection`: the per-tag detectors and the alert policy shared by every condition.
package struct DetectionSettings: Sendable, Equatable {
    package init() {}

    /// Good samples kept per tag for module invocations (`detection.history`); when the file does
    /// not set it, what the enabled modules need (see ``OrchestratorConfig/sizeHistory()``).
    package var historyDepth = 120
    /// Whether `detection.history` was set in the file.
    package var historyConfigured = false
    /// The least history kept when no module needs more: QoS 1 redeliveries are recognised in it.
    package static let minimumHistory = 16
    /// Weight of the newest sample in the EWMA mean and variance.
    package var ewmaAlpha = 0.05
    /// Samples before a tag's anomaly score may raise an alert.
    package var warmupSamples = 10
    /// Robust |z| below which a raised anomaly clears (hysteresis; below `anomalyMinSigmas`).
    package var zClear = 2.0
    /// Smallest standard deviation used, as a fraction of |mean| (keeps quiet tags from dividing by ~0).
    package var sigmaFloor = 0.001
    /// Values in the robust (quantile) window of the spike score, and the stride at which samples
    /// enter it (256 × 4 spans about 1,000 samples).
    package var robustWindow = 256
    package var windowStride = 4
    /// Spike score shaping: z / (z + spike_shape).
    package var spikeShape = 10.0
    /// The spike's scale is at least the 1–99 % spread divided by this (0: off).
    package var tailWidening = 10.0
    /// Quantisation levels of the pattern-novelty view.
    package var anomalyBins = 8
    /// EWMA rate at which the novelty weighting adapts, and where it starts.
    package var noveltyAdaptation = 0.002
    package var noveltyInitialRate = 0.5
    /// Score the CUSUM contributes when it signals a persistent shift.
    package var driftScore = 0.0
    /// After a raw score of `anomalyRestLevel`, the score is held at 0 for `anomalyRest` samples.
    package var anomalyRest = 84
    /// The rest period grows by this many samples per sample seen, up to `anomalyRestMax`.
    package var anomalyRestGrowth = 0.032
    package var anomalyRestMax = 500
    /// Also suppress detections (not only spikes) that recur at a fixed interval.
    package var gatePeriodicEvents = true
    package var anomalyRestLevel = 0.65
    /// Anomaly score that raises an anomaly alert, and below which it clears.
    package var anomalyRaise = 0.65
    package var anomalyClear = 0.5
    /// An anomaly alert also needs the sample's robust z to reach this (0 = the score alone decides).
    package var anomalyMinSigmas = 5.0
    /// Raise an anomaly alert when the CUSUM signals a small persistent shift.
    package var shiftAlerts = true
    /// CUSUM allowance k and decision interval h, in σ.
    package var cusumK = 0.5
    package var cusumH = 20.0
    /// Most distinct tags tracked; samples of further tags are rejected and counted.
    package var maxTags = 100_000
    /// On/off delays and cooldown for every condition.
    package var policy = AlertPolicy()
    /// Trend detection on block means: on/off, block size, window, significance to raise and to clear.
    package var trendEnabled = true
    package var trendBlock = 10
    package var trendWindow = 30
    package var trendAlpha = 1e-4
    package var trendClearAlpha = 0.05
    /// Without a tag's `min_trend`, a trend must move the value this many σ across the window.
    package var trendMinSigmas = 3.0
    /// Limit predictions (`predicted_limit` advisories): on/off, how far ahead a trend is projected,
    /// and how much further the crossing must recede before the advisory clears (hysteresis).
    package var predictionEnabled = true
    package var predictionHorizon: Duration = .seconds(1800)
    package var predictionClearFactor = 1.5
    /// Learned flatline for every tag without a topic-map `flatline` (not market data): flagged when
    /// its value repeats `factor` × the longest run of equal values it has recently shown (at least
    /// `minSamples`), once it has changed `learnChanges` times (a tag that never changes is a
    /// setpoint or a switch, not a stuck transmitter).
    package var flatlineLearn = true
    package var flatlineFactor = 4.0
    package var flatlineMinSamples = 10
    package var flatlineLearnChanges = 20
    /// A sample arriving more than this many mean intervals after the previous one is a gap.
    package var gapFactor = 10.0
    /// Clean samples before a data-quality alert clears.
    package var dataQualityClearAfter = 10
    /// After a restart, how long an episode the previous run left raised may wait to be raised
    /// again by its tag before it is closed (its tag's next samples usually decide sooner).
    package var adoptWithin: Duration = .seconds(600)
    /// Multivariate unit monitoring: on/off, baseline length (evaluations), model settings, and
    /// whether a trained unit's tags stop raising their own anomaly alerts.
    package var multivariateEnabled = true
    package var multivariateBaseline = 500
    package var multivariate = MultivariateModel.Settings()
    package var suppressTagAnomalies = true
    /// Market move windows: percentage thresholds over time windows, for `market/…` tags.
    package var marketMoves: [MarketMove] = [
        MarketMove(window: .seconds(900), thresholdPercent: 2), MarketMove(window: .seconds(14_400), thresholdPercent: 5),
    ]

    /// One market-move rule.
    package struct MarketMove: Sendable, Equatable {
        package var window: Duration
        package var thresholdPercent: Double
    }
}
