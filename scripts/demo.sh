#!/usr/bin/env bash
# `make demo`: build, start a private broker and database, run the orchestrator against the
# built-in refinery simulator, and show alerts live. Ctrl-C stops everything.
#
# `make demo-ha` (scripts/demo.sh --ha): two instances share the broker and the database, one active
# and one standby (docs/availability.md); after DEMO_HA_KILL_AFTER seconds (default 45) the active
# is killed with SIGKILL and the standby's takeover is shown.
set -euo pipefail
ha=false
[ "${1:-}" = "--ha" ] && ha=true
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
if $ha; then
  # The shipped configuration with ha on; each instance names itself through DANG_INSTANCE.
  python3 - "$dir/ha.yaml" <<'PY'
import os, sys
text = open("config/orchestrator.yaml").read()
text = text.replace("map: ../topics/refinery.yaml", "map: " + os.path.abspath("topics/refinery.yaml"), 1)
text += "\ninstance:\n  id: ${DANG_INSTANCE}\nha:\n  enabled: true\n  lease: 3s\n"
open(sys.argv[1], "w").write(text)
PY
  DANG_INSTANCE=demo-a "$dang" run --config "$dir/ha.yaml" --spool-dir "$dir/spool-a" --http 127.0.0.1:8080 > "$dir/dang-a.log" 2>&1 &
  pid_a=$!
  pids+=("$pid_a")
  sleep 2
  DANG_INSTANCE=demo-b "$dang" run --config "$dir/ha.yaml" --spool-dir "$dir/spool-b" --http 127.0.0.1:8081 > "$dir/dang-b.log" 2>&1 &
  pid_b=$!
  pids+=("$pid_b")
  role() { curl -fsS "http://127.0.0.1:$1/status" 2>/dev/null | python3 -c 'import json, sys; print(json.load(sys.stdin)["role"])' 2>/dev/null || echo down; }
  kill_after=${DEMO_HA_KILL_AFTER:-45}
  cat <<MSG
== high availability: demo-a (console http://127.0.0.1:8080/console, log $dir/dang-a.log) and
   demo-b (console http://127.0.0.1:8081/console, log $dir/dang-b.log) share the broker and the
   database; one holds the lease (3 s) and acts, the other stands by, warm.
   mosquitto_sub -h 127.0.0.1 -p ${DANG_MQTT_URL##*:} -t 'apos/status/#' -v   (each instance's liveness)
   psql "\$DATABASE_URL" -c 'select * from leases'   (who holds the lease, and its epoch)
   In ${kill_after} s the active is killed with SIGKILL; the standby takes over within 2 × the lease.
MSG
  (
    sleep 5
    echo "== roles: demo-a $(role 8080), demo-b $(role 8081)"
    sleep "$kill_after"
    if [ "$(role 8080)" = active ]; then victim=$pid_a name=demo-a survivor=8081; else victim=$pid_b name=demo-b survivor=8080; fi
    echo "== kill -9 the active instance, $name"
    start=$(date +%s%N)
    kill -9 "$victim" 2>/dev/null || true
    for _ in $(seq 200); do [ "$(role "$survivor")" = active ] && break; sleep 0.05; done
    echo "== the standby (console http://127.0.0.1:$survivor/console) is $(role "$survivor") $(( ($(date +%s%N) - start) / 1000000 )) ms after the kill"
  ) &
  pids+=($!)
else
  "$dang" run --config config/orchestrator.yaml &
  pids+=($!)
fi
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
