#if canImport(Glibc)
import Glibc
#endif

/// A unit's model of normal operation: the correlation structure of its tags, learned from a
/// baseline, with control limits for the regularised Mahalanobis distance D² and its EWMA.
///
/// D² is the sum of Hotelling's T² over the retained principal components and the same statistic
/// over the residual ones (the SPE/Q subspace, scaled by its variances): small eigenvalues are
/// floored so that near-collinear tags cannot explode it. Limits come from a 5-fold contiguous
/// cross-validation on the baseline (so they are not fitted to the very samples they judge),
/// through a scaled χ² (Box 1954) with the Wilson–Hilferty quantile.
package struct MultivariateModel: Sendable {
    package struct Settings: Sendable, Equatable {
        /// Eigenvalues below this are raised to it (in units of the standardised variables' variance).
        package var eigenvalueFloor = 0.01
        /// Share of variance the retained components explain (for the T²/SPE split).
        package var varianceExplained = 0.90
        /// EWMA weight of the temporal filter on D².
        package var lambda = 0.1
        /// Widening of the EWMA limit beyond its fitted quantile (the baseline is short and
        /// normal operation drifts).
        package var kappa = 2.0
        /// Samples of the EWMA dropped at the start of the baseline (its start-up).
        package var burnIn = 20
        /// Standard-normal quantile of the limits (3.0902 = 0.999).
        package var z = 3.090232306167813
        package var folds = 5
        /// A single tag beyond this many baseline standard deviations alarms by itself (0: off;
        /// `nil`: ``derivedTagLimit(tags:)``, the limit that gives the whole unit the false-alarm
        /// rate of one 3σ alarm).
        package var tagSigmas: Double? = nil

        package init() {}
    }

    package let tags: Int
    package let mean: [Double]
    package let scale: [Double]
    /// Eigenvectors as columns, row-major `tags × tags`.
    package let vectors: [Double]
    package let eigenvalues: [Double]
    /// Floored eigenvalues.
    package let floored: [Double]
    /// Components retained for the T² part.
    package let retained: Int
    /// Limit of D² (raw, per sample).
    package let rawLimit: Double
    /// Control limits of Hotelling's T² (retained components) and of SPE/Q (the residual), each
    /// from the cross-validated baseline; reported with every multivariate alarm.
    package let t2Limit: Double
    package let speLimit: Double
    /// Limit of the EWMA of D².
    package let filteredLimit: Double
    /// Limit of a single tag's |z| (0: no per-tag test).
    package let tagLimit: Double
    /// Mean of the cross-validated D² (the EWMA's starting point).
    package let baselineMean: Double
    /// Diagonal of the regularised inverse correlation matrix, for the contributions.
    package let inverseDiagonal: [Double]
    package let settings: Settings

    /// Why a baseline cannot be used.
    package struct TrainingError: Error, CustomStringConvertible, Sendable {
        package let message: String
        package var description: String { self.message }
    }

    /// Fits the model and its limits. `rows` are baseline samples, one value per tag, in time order.
    package static func train(rows: [[Double]], settings: Settings = Settings()) throws(TrainingError) -> MultivariateModel {
        guard let width = rows.first?.count, width >= 2 else {
            throw TrainingError(message: "a unit needs at least two tags")
        }
        guard rows.count >= max(2 * width, 10 * settings.folds) else {
            throw TrainingError(message: "a baseline of \(rows.count) samples is too short for \(width) tags (need \(max(2 * width, 10 * settings.folds)))")
        }
        let fit = Fit(rows: rows[...], floor: settings.eigenvalueFloor)
        let total = fit.eigenvalues.reduce(0) { $0 + max($1, 0) }
        var cumulative = 0.0
        var retained = width
        for (index, value) in fit.eigenvalues.enumerated() {
            cumulative += max(value, 0)
            if cumulative / total >= settings.varianceExplained {
                retained = index + 1
                break
            }
        }

        // Cross-validated D², T² and SPE in time order.
        var cv: [Double] = []
        var cvT2: [Double] = []
        var cvSPE: [Double] = []
        cv.reserveCapacity(rows.count)
        let foldSize = (rows.count + settings.folds - 1) / settings.folds
        for fold in 0..<settings.folds {
            let start = fold * foldSize
            let end = min(rows.count, start + foldSize)
            guard start < end else { continue }
            let trainingRows = Array(rows[..<start]) + Array(rows[end...])
            let foldFit = Fit(rows: trainingRows[...], floor: settings.eigenvalueFloor)
            for row in rows[start..<end] {
                let parts = foldFit.parts(row, retained: retained)
                cv.append(parts.d2)
                cvT2.append(parts.t2)
                cvSPE.append(parts.spe)
            }
        }
        let rawLimit = Self.scaledChiSquareLimit(cv, z: settings.z)
        let baselineMean = cv.reduce(0, +) / Double(cv.count)
        var e = baselineMean
        var filtered: [Double] = []
        for (index, d) in cv.enumerated() {
            e = (1 - settings.lambda) * e + settings.lambda * d
            if index >= settings.burnIn { filtered.append(e) }
        }
        let filteredMean = filtered.reduce(0, +) / Double(max(filtered.count, 1))
        let quantile = Self.scaledChiSquareLimit(filtered, z: settings.z)
        let filteredLimit = filteredMean + settings.kappa * (quantile - filteredMean)

        guard rawLimit > 0, rawLimit.isFinite, filteredLimit > 0, filteredLimit.isFinite else {
            throw TrainingError(message: "the baseline shows no variation to learn from (constant tags?)")
        }
        var inverseDiagonal = [Double](repeating: 0, count: width)
        for j in 0..<width {
            var sum = 0.0
            for i in 0..<width { sum += fit.vectors[j * width + i] * fit.vectors[j * width + i] / fit.floored[i] }
            inverseDiagonal[j] = sum
        }
        return MultivariateModel(
            tags: width, mean: fit.mean, scale: fit.scale, vectors: fit.vectors, eigenvalues: fit.eigenvalues,
            floored: fit.floored, retained: retained, rawLimit: rawLimit,
            t2Limit: Self.scaledChiSquareLimit(cvT2, z: settings.z), speLimit: Self.scaledChiSquareLimit(cvSPE, z: settings.z),
            filteredLimit: filteredLimit, tagLimit: settings.tagSigmas ?? Self.derivedTagLimit(tags: width),
            baselineMean: baselineMean, inverseDiagonal: inverseDiagonal, settings: settings)
    }

    /// The per-tag limit when none is configured: the |z| that one of `tags` Gaussian tags exceeds
    /// with probability 2Φ(−3)/`tags` — so the unit as a whole (Bonferroni) alarms on noise no more
    /// often than a single 3σ alarm (0.27 % of samples) — and never below 4σ, which keeps small
    /// units from alarming on 3σ readings. 52 tags: 4.047σ.
    package static func derivedTagLimit(tags: Int) -> Double {
        let tail = 0.5 * erfc(3 / 2.0.squareRoot())
        return max(4, upperNormalQuantile(tail / Double(max(tags, 1))))
    }

    /// The z with P(Z > z) = `p` for a standard normal Z, 0 < p ≤ 0.5: bisection on `erfc` to the
    /// last bit (called once per unit at training, so exactness beats speed).
    package static func upperNormalQuantile(_ p: Double) -> Double {
        precondition(p > 0 && p <= 0.5, "upper-tail probability \(p) outside (0, 0.5]")
        var low = 0.0
        var high = 40.0
        while true {
            let middle = 0.5 * (low + high)
            guard middle > low, middle < high else { return middle }
            if 0.5 * erfc(middle / 2.0.squareRoot()) > p { low = middle } else { high = middle }
        }
    }

    /// The limit of a positive statistic whose distribution is matched to g·χ²(h) by its mean and
    /// variance: g = v / 2m, h = 2m² / v.
    package static func scaledChiSquareLimit(_ values: [Double], z: Double) -> Double {
        let n = Double(values.count)
        let mean = values.reduce(0, +) / n
        let variance = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / max(n - 1, 1)
        guard mean > 0, variance > 0 else { return mean }
        let g = variance / (2 * mean)
        let h = 2 * mean * mean / variance
        return g * chiSquareQuantile(degrees: h, z: z)
    }

    /// Wilson–Hilferty approximation of the χ² quantile with `degrees` degrees of freedom at the
    /// standard-normal quantile `z`.
    package static func chiSquareQuantile(degrees h: Double, z: Double) -> Double {
        let c = 2 / (9 * h)
        let base = max(0, 1 - c + z * c.squareRoot())
        return h * base * base * base
    }

    /// Standardised values, projected scores and D² parts for one sample, written into caller-owned
    /// buffers (`z`, `y` of `tags` elements each).
    package func evaluate(_ x: [Double], z: inout [Double], y: inout [Double]) -> (t2: Double, residual: Double, spe: Double) {
        let n = self.tags
        for j in 0..<n { z[j] = (x[j] - self.mean[j]) / self.scale[j] }
        var t2 = 0.0
        var residual = 0.0
        var spe = 0.0
        for i in 0..<n {
            var sum = 0.0
            for j in 0..<n { sum += self.vectors[j * n + i] * z[j] }
            y[i] = sum
            let part = sum * sum / self.floored[i]
            if i < self.retained {
                t2 += part
            } else {
                residual += part
                spe += sum * sum
            }
        }
        return (t2, residual, spe)
    }

    /// Reconstruction-based contribution of each tag (Alcala & Qin 2009): g = C⁻¹z, RBCⱼ = gⱼ² / (C⁻¹)ⱼⱼ.
    package func contributions(y: [Double], into output: inout [Double]) {
        let n = self.tags
        for j in 0..<n {
            var g = 0.0
            for i in 0..<n { g += self.vectors[j * n + i] * y[i] / self.floored[i] }
            output[j] = g * g / self.inverseDiagonal[j]
        }
    }
}

/// Mean, scale and eigen-decomposition of the correlation matrix of some rows.
private struct Fit {
    let mean: [Double]
    let scale: [Double]
    let eigenvalues: [Double]
    let floored: [Double]
    let vectors: [Double]

    init(rows: ArraySlice<[Double]>, floor: Double) {
        let n = rows.first!.count
        let count = Double(rows.count)
        var mean = [Double](repeating: 0, count: n)
        for row in rows { for j in 0..<n { mean[j] += row[j] } }
        for j in 0..<n { mean[j] /= count }
        var scale = [Double](repeating: 0, count: n)
        for row in rows { for j in 0..<n { scale[j] += (row[j] - mean[j]) * (row[j] - mean[j]) } }
        for j in 0..<n {
            let sd = (scale[j] / max(count - 1, 1)).squareRoot()
            // A constant tag carries no information; scale 1 keeps its z at (x − mean).
            scale[j] = sd > 1e-12 * max(1, abs(mean[j])) ? sd : 1
        }
        var correlation = [Double](repeating: 0, count: n * n)
        for row in rows {
            for a in 0..<n {
                let za = (row[a] - mean[a]) / scale[a]
                for b in a..<n { correlation[a * n + b] += za * (row[b] - mean[b]) / scale[b] }
            }
        }
        for a in 0..<n {
            for b in a..<n {
                correlation[a * n + b] /= max(count - 1, 1)
                correlation[b * n + a] = correlation[a * n + b]
            }
        }
        let (values, vectors) = SymmetricEigen.decompose(correlation, n: n)
        self.mean = mean
        self.scale = scale
        self.eigenvalues = values
        self.floored = values.map { max($0, floor) }
        self.vectors = vectors
    }

    /// D² of a row, with its T² (first `retained` components) and SPE (squared residual) parts.
    func parts(_ row: [Double], retained: Int) -> (d2: Double, t2: Double, spe: Double) {
        let n = self.mean.count
        var d = 0.0
        var t2 = 0.0
        var spe = 0.0
        for i in 0..<n {
            var y = 0.0
            for j in 0..<n { y += self.vectors[j * n + i] * (row[j] - self.mean[j]) / self.scale[j] }
            let part = y * y / self.floored[i]
            d += part
            if i < retained { t2 += part } else { spe += y * y }
        }
        return (d, t2, spe)
    }
}
