// A forecasting module for the DAN_G Orchestrator, in Swift (docs/modules.md): the same module as
// naive_forecast.py. The command transport: the invocation is one JSON object on stdin, the result
// one JSON object on stdout. Run it as a script, or build it into a binary for speed:
//
//     swift NaiveForecast.swift < fixtures/forecasting-invocation.json
//     swiftc -O NaiveForecast.swift -o naive-forecast
import Foundation

struct Invocation: Decodable {
    struct Tag: Decodable {
        struct Limits: Decodable { let hi: Double? }
        let t: [Int64]
        let v: [Double]
        let limits: Limits?
    }
    struct Params: Decodable {
        let tags: [String: Tag]?
        let horizon: Int?
        let intervalMs: Int64?
        enum CodingKeys: String, CodingKey { case tags, horizon, intervalMs = "interval_ms" }
    }
    let invocationId: String
    let ts: Int64
    let params: Params
    enum CodingKeys: String, CodingKey { case invocationId = "invocation_id", ts, params }
}

struct Forecast: Encodable {
    let t: [Int64]
    let mean: [Double]
    let lower95: [Double]
    let upper95: [Double]
}

struct Result: Encodable {
    struct Output: Encodable {
        let forecasts: [String: Forecast]
        let model = "linear trend"
    }
    struct Metrics: Encodable { let benefit: Double }
    let invocationId: String
    let status: String
    let output: Output
    let metrics: Metrics
    enum CodingKeys: String, CodingKey { case invocationId = "invocation_id", status, output, metrics }
}

/// Least-squares slope and intercept of v over x, and the residuals' standard deviation.
func line(_ x: [Double], _ v: [Double]) -> (slope: Double, intercept: Double, sd: Double) {
    let n = Double(x.count)
    let mx = x.reduce(0, +) / n, mv = v.reduce(0, +) / n
    let sxx = x.reduce(0) { $0 + ($1 - mx) * ($1 - mx) }
    let slope = sxx > 0 ? zip(x, v).reduce(0) { $0 + ($1.0 - mx) * ($1.1 - mv) } / sxx : 0
    let intercept = mv - slope * mx
    let squares = zip(x, v).reduce(0) { $0 + pow($1.1 - (intercept + slope * $1.0), 2) }
    return (slope, intercept, (squares / max(n - 2, 1)).squareRoot())
}

func round4(_ x: Double) -> Double { (x * 10_000).rounded() / 10_000 }

let invocation = try JSONDecoder().decode(Invocation.self, from: FileHandle.standardInput.readDataToEndOfFile())
let horizon = invocation.params.horizon ?? 12
let step = invocation.params.intervalMs ?? 60_000
var forecasts: [String: Forecast] = [:]
var crossing: Int64?
for (tag, data) in (invocation.params.tags ?? [:]).sorted(by: { $0.key < $1.key }) where data.v.count >= 3 && data.t.count == data.v.count {
    let origin = data.t[0]
    let fit = line(data.t.map { Double($0 - origin) / 1000 }, data.v)
    let t = (1...horizon).map { data.t[data.t.count - 1] + step * Int64($0) }
    let mean = t.map { fit.intercept + fit.slope * Double($0 - origin) / 1000 }
    forecasts[tag] = Forecast(
        t: t, mean: mean.map(round4), lower95: mean.map { round4($0 - 1.96 * fit.sd) }, upper95: mean.map { round4($0 + 1.96 * fit.sd) })
    if crossing == nil, let hi = data.limits?.hi { crossing = zip(t, mean).first { $0.1 > hi }?.0 }
}
if forecasts.isEmpty {
    print(#"{"invocation_id": "\#(invocation.invocationId)", "status": "error", "output": {"error": "no tag with at least 3 samples"}}"#)
} else {
    let warning = crossing.map { Double($0 - invocation.ts) / Double(Int64(horizon) * step) } ?? 0
    let result = Result(
        invocationId: invocation.invocationId, status: "ok", output: .init(forecasts: forecasts),
        metrics: .init(benefit: round4(max(0, min(1, warning)))))
    let encoder = JSONEncoder()
    encoder.outputFormatting = .sortedKeys
    FileHandle.standardOutput.write(try encoder.encode(result))
}
