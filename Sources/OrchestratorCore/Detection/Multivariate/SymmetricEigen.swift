/// Eigen-decomposition of a real symmetric matrix by the cyclic Jacobi method (Golub & Van Loan,
/// *Matrix Computations*, §8.5): small, exact to rounding, and plenty fast for the few dozen tags of
/// a process unit (it runs once, at training time).
package enum SymmetricEigen {
    /// Eigenvalues in descending order and the matching unit eigenvectors as columns of a row-major
    /// `n × n` matrix (`vectors[row * n + column]`). Each eigenvector's largest-magnitude entry is
    /// made positive, so the result does not depend on rotation order.
    package static func decompose(_ matrix: [Double], n: Int, maxSweeps: Int = 100) -> (values: [Double], vectors: [Double]) {
        precondition(matrix.count == n * n, "matrix must be n × n")
        var a = matrix
        var v = [Double](repeating: 0, count: n * n)
        for i in 0..<n { v[i * n + i] = 1 }

        for _ in 0..<maxSweeps {
            var off = 0.0
            for p in 0..<n {
                for q in (p + 1)..<n { off += a[p * n + q] * a[p * n + q] }
            }
            if off < 1e-22 { break }
            for p in 0..<n {
                for q in (p + 1)..<n {
                    let apq = a[p * n + q]
                    guard abs(apq) > 1e-300 else { continue }
                    let app = a[p * n + p]
                    let aqq = a[q * n + q]
                    // Rotation angle that zeroes a[p][q] (numerically stable form).
                    let theta = (aqq - app) / (2 * apq)
                    let t = (theta >= 0 ? 1 : -1) / (abs(theta) + (theta * theta + 1).squareRoot())
                    let c = 1 / (t * t + 1).squareRoot()
                    let s = t * c
                    for k in 0..<n {
                        let akp = a[k * n + p]
                        let akq = a[k * n + q]
                        a[k * n + p] = c * akp - s * akq
                        a[k * n + q] = s * akp + c * akq
                    }
                    for k in 0..<n {
                        let apk = a[p * n + k]
                        let aqk = a[q * n + k]
                        a[p * n + k] = c * apk - s * aqk
                        a[q * n + k] = s * apk + c * aqk
                    }
                    for k in 0..<n {
                        let vkp = v[k * n + p]
                        let vkq = v[k * n + q]
                        v[k * n + p] = c * vkp - s * vkq
                        v[k * n + q] = s * vkp + c * vkq
                    }
                }
            }
        }

        let order = (0..<n).sorted { a[$0 * n + $0] > a[$1 * n + $1] }
        var values = [Double](repeating: 0, count: n)
        var vectors = [Double](repeating: 0, count: n * n)
        for (column, source) in order.enumerated() {
            values[column] = a[source * n + source]
            var largest = 0.0
            for row in 0..<n where abs(v[row * n + source]) > abs(largest) { largest = v[row * n + source] }
            let sign = largest < 0 ? -1.0 : 1.0
            for row in 0..<n { vectors[row * n + column] = sign * v[row * n + source] }
        }
        return (values, vectors)
    }
}
