#!/usr/bin/env python3
"""A forecasting module for the DAN_G Orchestrator, in plain Python (docs/modules.md).

The command transport: the invocation arrives as one JSON object on stdin; the result is one
JSON object on stdout. For each tag it fits a straight line to the samples it was given and
projects it `horizon` steps of `interval_ms` ahead, with a 95 % band from the residuals: the
shape chained triggers read (`output.forecasts.{tag}.t`, `mean`, `lower95`, `upper95`).

    python3 naive_forecast.py < fixtures/forecasting-invocation.json
"""
import json
import math
import sys


def line(ts, vs):
    """Least-squares slope and intercept of v over t (t in seconds), and the residuals' spread."""
    n = len(ts)
    mt, mv = sum(ts) / n, sum(vs) / n
    stt = sum((t - mt) ** 2 for t in ts)
    slope = sum((t - mt) * (v - mv) for t, v in zip(ts, vs)) / stt if stt > 0 else 0.0
    intercept = mv - slope * mt
    sd = math.sqrt(sum((v - (intercept + slope * t)) ** 2 for t, v in zip(ts, vs)) / max(n - 2, 1))
    return slope, intercept, sd


def forecast(invocation):
    params = invocation["params"]
    horizon = int(params.get("horizon", 12))
    step_ms = int(params.get("interval_ms", 60_000))
    forecasts, crossing = {}, None
    for tag, data in params.get("tags", {}).items():
        times, values = data.get("t", []), data.get("v", [])
        if len(values) < 3:
            continue  # too little to fit: say nothing about this tag
        origin = times[0]
        slope, intercept, sd = line([(t - origin) / 1000 for t in times], values)
        t = [times[-1] + step_ms * (k + 1) for k in range(horizon)]
        mean = [intercept + slope * (x - origin) / 1000 for x in t]
        forecasts[tag] = {
            "t": t,
            "mean": [round(m, 4) for m in mean],
            "lower95": [round(m - 1.96 * sd, 4) for m in mean],
            "upper95": [round(m + 1.96 * sd, 4) for m in mean],
        }
        hi = (data.get("limits") or {}).get("hi")
        if hi is not None and crossing is None:
            crossing = next((x for x, m in zip(t, mean) if m > hi), None)
    if not forecasts:
        return {"status": "error", "output": {"error": "no tag with at least 3 samples"}}
    # The benefit the orchestrator learns from: here, how much warning a predicted crossing gives.
    benefit = 0.0 if crossing is None else max(0.0, min(1.0, (crossing - invocation["ts"]) / (horizon * step_ms)))
    return {"status": "ok", "output": {"forecasts": forecasts, "model": "linear trend"}, "metrics": {"benefit": round(benefit, 4)}}


def main():
    invocation = json.load(sys.stdin)
    result = forecast(invocation)
    result["invocation_id"] = invocation["invocation_id"]
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
