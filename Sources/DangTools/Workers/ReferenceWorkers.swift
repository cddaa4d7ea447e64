package import Foundation
package import OrchestratorCore

/// The reference modules (`dang worker …`): small, honest implementations that close the loop in
/// the demo and the tests. Each takes an invocation (docs/mqtt-contract.md, "Outputs") and returns its result message.
package enum ReferenceWorker: String, Sendable, CaseIterable {
    case forecasting
    case analysis
    case optimization

    /// One tag's window from an invocation's `params.tags`.
    package struct Series: Sendable {
        package let tag: String
        package let times: [Int64]
        package let values: [Double]
        package let limits: [String: Double]
    }

    /// Answers one invocation message with a result message (`status` `error` if it cannot be read).
    package func answer(_ invocation: [UInt8]) -> [UInt8] {
        guard let object = (try? JSONSerialization.jsonObject(with: Data(invocation))) as? [String: Any] else {
            return Self.result(id: nil, status: "error", output: ["reason": "the invocation is not a JSON object"], benefit: nil)
        }
        let id = object["invocation_id"] as? String
        let params = object["params"] as? [String: Any] ?? [:]
        let series = Self.series(params)
        switch self {
        case .forecasting:
            let horizon = (params["horizon"] as? NSNumber)?.intValue ?? 12
            let step = (params["interval_ms"] as? NSNumber)?.doubleValue
            let (output, benefit) = Self.forecast(series, horizon: max(1, min(horizon, 10_000)), stepMilliseconds: step)
            return Self.result(id: id, status: output.isEmpty ? "error" : "ok", output: output.isEmpty ? ["reason": "no series with 4 or more samples"] : ["forecasts": output], benefit: benefit)
        case .analysis:
            let (output, benefit) = Self.analyse(series)
            return Self.result(id: id, status: output.isEmpty ? "error" : "ok", output: output.isEmpty ? ["reason": "no series with 2 or more samples"] : ["instruments": output], benefit: benefit)
        case .optimization:
            let objective = params["objective"] as? [String: Any]
            let (output, benefit) = Self.optimise(series, objectiveTag: objective?["tag"] as? String, direction: objective?["direction"] as? String)
            return Self.result(id: id, status: "ok", output: ["suggestions": output], benefit: benefit)
        }
    }

    static func series(_ params: [String: Any]) -> [Series] {
        guard let tags = params["tags"] as? [String: Any] else { return [] }
        return tags.keys.sorted().compactMap { tag in
            guard let entry = tags[tag] as? [String: Any], let t = entry["t"] as? [NSNumber], let v = entry["v"] as? [Any] else { return nil }
            let values = v.map { ($0 as? NSNumber)?.doubleValue ?? .nan }
            let limits = (entry["limits"] as? [String: NSNumber])?.mapValues(\.doubleValue) ?? [:]
            let n = min(t.count, values.count)
            return Series(tag: tag, times: t.prefix(n).map(\.int64Value), values: Array(values.prefix(n)), limits: limits)
        }
    }

    static func result(id: String?, status: String, output: [String: Any], benefit: Double?) -> [UInt8] {
        var object: [String: Any] = ["status": status, "output": output]
        if let id { object["invocation_id"] = id }
        if let benefit, benefit.isFinite { object["metrics"] = ["benefit": benefit] }
        return Array((try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data(#"{"status":"error"}"#.utf8))
    }

    // MARK: Forecasting

    /// Holt's linear method per tag, α and β chosen on a grid by one-step-ahead squared error,
    /// with 95 % prediction intervals from its forecast variance
    /// σ²(1 + Σ_{j<h} α²(1 + jβ)²) (Hyndman & Athanasopoulos, FPP §8.7). The benefit is 1 when a
    /// forecast crosses a limit of the tag within the horizon (an early warning), else 0.2.
    /// A step is `stepMilliseconds` long (the invocation's `interval_ms`), else one sampling interval.
    static func forecast(_ series: [Series], horizon: Int, stepMilliseconds: Double? = nil) -> (output: [String: Any], benefit: Double?) {
        var output: [String: Any] = [:]
        var warning = false
        for s in series {
            let values = s.values.filter(\.isFinite)
            guard values.count >= 4 else { continue }
            let fit = HoltFit.best(values)
            // Times come from the invocation: differences in Double, results clamped (never a trap).
            let sampling = s.times.count > 1 ? (Double(s.times.last!) - Double(s.times.first!)) / Double(s.times.count - 1) : 1000
            let step = stepMilliseconds.flatMap { $0.isFinite && $0 > 0 ? $0 : nil } ?? sampling
            // Samples per forecast step (the fit's own unit), bounded so the whole horizon spans at
            // most a million samples (the variance sum walks them).
            let ratio = sampling > 0 && sampling.isFinite ? max(1, min((step / sampling).rounded(), 1_000_000 / Double(horizon))) : 1
            var mean: [Double] = []
            var lower: [Double] = []
            var upper: [Double] = []
            var times: [Int64] = []
            var variance = 0.0
            var counted = 1
            for k in 1...horizon {
                let h = Int(Double(k) * ratio)
                let forecast = fit.level + Double(h) * fit.trend
                while counted < h {
                    let term = fit.alpha * (1 + Double(counted) * fit.beta)
                    variance += term * term
                    counted += 1
                }
                let sd = fit.sigma * (1 + variance).squareRoot()
                mean.append(forecast)
                lower.append(forecast - 1.96 * sd)
                upper.append(forecast + 1.96 * sd)
                let ahead = (Double(s.times.last ?? 0) + Double(k) * step).rounded()
                times.append(ahead.isFinite ? Int64(max(-9.0e18, min(9.0e18, ahead))) : 0)
            }
            var crossing: String? = nil
            if let hi = s.limits["hi"], let first = mean.firstIndex(where: { $0 > hi }) { crossing = "hi in \(first + 1) steps" }
            if let lo = s.limits["lo"], let first = mean.firstIndex(where: { $0 < lo }) { crossing = "lo in \(first + 1) steps" }
            if crossing != nil { warning = true }
            var entry: [String: Any] = [
                "t": times, "mean": mean, "lower95": lower, "upper95": upper, "alpha": fit.alpha, "beta": fit.beta,
                "rmse": fit.sigma, "samples": values.count,
            ]
            if let crossing { entry["limit_crossing"] = crossing }
            output[s.tag] = entry
        }
        return (output, output.isEmpty ? nil : (warning ? 1 : 0.2))
    }

    struct HoltFit {
        var alpha: Double
        var beta: Double
        var level: Double
        var trend: Double
        var sigma: Double

        static func best(_ y: [Double]) -> HoltFit {
            var best = HoltFit(alpha: 0.5, beta: 0.1, level: y.last!, trend: 0, sigma: .infinity)
            for alpha in stride(from: 0.1, through: 0.9, by: 0.1) {
                for beta in [0.01, 0.05, 0.1, 0.2, 0.3] {
                    var level = y[0]
                    var trend = y[1] - y[0]
                    var sse = 0.0
                    for value in y.dropFirst() {
                        let error = value - (level + trend)
                        sse += error * error
                        let previous = level
                        level = alpha * value + (1 - alpha) * (level + trend)
                        trend = beta * (level - previous) + (1 - beta) * trend
                    }
                    let sigma = (sse / Double(max(1, y.count - 3))).squareRoot()
                    if sigma < best.sigma { best = HoltFit(alpha: alpha, beta: beta, level: level, trend: trend, sigma: sigma) }
                }
            }
            return best
        }
    }

    // MARK: Analysis

    /// Per instrument: the move over the window in percent, the largest drawdown, and the
    /// volatility of its log returns. Benefit: the largest |move| in units of 5 %, at most 2.
    static func analyse(_ series: [Series]) -> (output: [String: Any], benefit: Double?) {
        var output: [String: Any] = [:]
        var largest = 0.0
        for s in series {
            let values = s.values.filter { $0.isFinite && $0 > 0 }
            guard values.count >= 2, let first = values.first, let last = values.last else { continue }
            let move = (last - first) / first * 100
            var peak = first
            var drawdown = 0.0
            for value in values {
                peak = max(peak, value)
                drawdown = max(drawdown, (peak - value) / peak * 100)
            }
            let returns = zip(values.dropFirst(), values).map { log($0 / $1) }
            let mean = returns.reduce(0, +) / Double(returns.count)
            let volatility = (returns.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(max(1, returns.count - 1))).squareRoot() * 100
            largest = max(largest, abs(move))
            output[s.tag] = [
                "first": first, "last": last, "move_percent": move, "max_drawdown_percent": drawdown, "volatility_percent": volatility,
                "direction": move > 0 ? "up" : (move < 0 ? "down" : "flat"), "samples": values.count,
            ]
        }
        return (output, output.isEmpty ? nil : min(2, largest / 5))
    }

    // MARK: Optimization

    /// Setpoint suggestions within the tags' limits: a tag outside the middle 80 % of its lo–hi
    /// range is brought back to the nearest edge of that band; the objective tag, if any, is moved
    /// 1 % of its range the way the objective asks, never past the band. Benefit: the sum of the
    /// suggested moves in units of each tag's range.
    static func optimise(_ series: [Series], objectiveTag: String?, direction: String?) -> (output: [[String: Any]], benefit: Double) {
        var suggestions: [[String: Any]] = []
        var benefit = 0.0
        for s in series {
            guard let current = s.values.last(where: \.isFinite), let lo = s.limits["lo"] ?? s.limits["lolo"],
                let hi = s.limits["hi"] ?? s.limits["hihi"], hi > lo
            else { continue }
            let span = hi - lo
            let bandLow = lo + 0.1 * span
            let bandHigh = hi - 0.1 * span
            var target = min(max(current, bandLow), bandHigh)
            var reason = current < bandLow ? "below the safe band" : (current > bandHigh ? "above the safe band" : "")
            if s.tag == objectiveTag, let direction {
                let step = (direction == "up" ? 1.0 : -1.0) * 0.01 * span
                let moved = min(max(target + step, bandLow), bandHigh)
                let note = moved != target ? "objective: move \(direction)" : "objective \(direction) not possible inside the safe band"
                target = moved
                reason = reason.isEmpty ? note : reason + "; " + note
            }
            guard target != current else { continue }
            benefit += abs(target - current) / span
            suggestions.append([
                "tag": s.tag, "current": current, "suggested_setpoint": target, "change": target - current, "reason": reason,
                "limits": ["lo": lo, "hi": hi],
            ])
        }
        return (suggestions, benefit)
    }
}
