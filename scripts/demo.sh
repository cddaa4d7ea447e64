#!/usr/bin/env bash
# `make demo`: build, start a private broker and database, run the orchestrator against the
# built-in refinery simulator, and show alerts live. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
dir=.run/demo

echo "== building dang"
swift build
dang=.build/debug/dang

echo "== starting a private mosquitto and PostgreSQL ($dir), with an empty record"
# Each demo starts from scratch: the last one's record (kept until now for inspection) would carry
# its cooldowns and learned outcomes into this one.
scripts/services.sh stop "$dir" --purge >/dev/null 2>&1 || true
scripts/services.sh start "$dir" >/dev/null
set -a; . "$dir/env"; set +a
# The console needs a token to show anything: the demo's own unless one is set.
export DANG_API_TOKEN="${DANG_API_TOKEN:-demo-operate}"

pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "== stopping"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  scripts/services.sh stop "$dir" >/dev/null 2>&1 || true
  echo "stopped. The record is kept in $dir until the next make demo (make clean removes it)."
}
trap stop INT TERM EXIT

cat <<MSG
== broker   $DANG_MQTT_URL   (watch it: mosquitto_sub -h 127.0.0.1 -p ${DANG_MQTT_URL##*:} -t 'apos/#' -v)
== database $DATABASE_URL   (psql "$DATABASE_URL" -c 'select * from alerts')
== console  http://127.0.0.1:8080/console   (token: $DANG_API_TOKEN)
== the simulator publishes 17 refinery and market tags at 5 Hz; the CDU furnace outlet
   temperature r1/cdu/cdu1/TI-101 jumps past its HI and HIHI limits after 15 s, for 20 s,
   and again every 60 s. From 30 s on, the flash zone temperature r1/cdu/cdu1/TI-105 drifts up
   slowly towards its HI limit (reached after about 6 minutes): within the first two minutes a
   predicted_limit advisory says when it will cross, the forecast it asks for confirms it, and the
   forecast's crossing is followed by a chained optimisation of the unit (trigger
   forecast-predicts-limit, parent_decision_id set). Alerts appear below as they are raised and
   cleared; each alert that fires a trigger (config/orchestrator.yaml) is followed by a decision,
   and invoked modules are answered by the reference workers (dang worker
   forecasting|analysis|optimization).
   psql "\$DATABASE_URL" -c "select module, action, parent_decision_id from decisions"   (the chain)
   psql "\$DATABASE_URL" -c 'select module, status, attempts from invocations'   Ctrl-C stops.

MSG
"$dang" run --config config/orchestrator.yaml &
pids+=($!)
for module in forecasting analysis optimization; do
  "$dang" worker "$module" --config config/orchestrator.yaml --log-level warning > "$dir/worker-$module.log" 2>&1 &
  pids+=($!)
done
sleep 1
"$dang" simulate --config config/orchestrator.yaml --rate 5 --upset-after 15 --upset-duration 20 --upset-every 60 \
  --drift-tag r1/cdu/cdu1/TI-105 --drift-after 30 --drift-minutes 8 \
  > "$dir/simulate.log" 2>&1 &
pids+=($!)
wait
