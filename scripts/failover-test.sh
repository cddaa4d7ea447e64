#!/usr/bin/env bash
# Active/standby with real processes (docs/availability.md): two `dang run` with ha.enabled and the
# shipped configuration, on the test broker and a database of their own. A breach is alerted once
# by the active; the active is killed with SIGKILL; the standby must take over within 2 × the lease
# and clear the same alert id when the value returns; one raise, one alert row in all. Both are the
# Sparkplug primary host in turn: only the active's STATE birth, the killed one's will, then the
# new active's birth with a later timestamp.
#
# usage: scripts/failover-test.sh   (DANG_MQTT_URL and DATABASE_URL set; .build/debug/dang built, or DANG_BIN)
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DANG_MQTT_URL:?}" "${DATABASE_URL:?}"
dang=${DANG_BIN:-.build/debug/dang}   # DANG_BIN: another build (the release one: scripts/build-release.sh)
fail() { echo "failover-test: FAIL: $*" >&2; exit 1; }
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do { kill -9 "$pid"; wait "$pid"; } 2>/dev/null || true; done
  if [ -n "${KEEP:-}" ]; then echo "logs kept in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
host=${DANG_MQTT_URL#mqtt://}; port=${host##*:}; host=${host%:*}
database="failover_$$_$RANDOM"
psql "$DATABASE_URL" -qc "CREATE DATABASE $database" || fail "could not create the database"
database_url="${DATABASE_URL%/*}/$database"
lease=3

# The shipped configuration, with a prefix of its own, the map found from here, and ha on; each
# process names itself through the environment (DANG_INSTANCE).
host_id="hasmoke-$$"
python3 - "$work/ha.yaml" "$lease" "$host_id" <<'PY' || fail "could not write the configuration"
import os, sys
text = open("config/orchestrator.yaml").read()
text = text.replace("map: ../topics/refinery.yaml", "map: " + os.path.abspath("topics/refinery.yaml"), 1)
assert "\n  prefix: apos" in text
text = text.replace("\n  prefix: apos", "\n  prefix: hasmoke\n  sparkplug_host_id: " + sys.argv[3], 1)
text += "\ninstance:\n  id: ${DANG_INSTANCE}\nha:\n  enabled: true\n  lease: %ss\n" % sys.argv[2]
open(sys.argv[1], "w").write(text)
PY
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
start() {  # start NAME: a `dang run` with its own instance id (so its own client id), spool and API port
  local name=$1 http; http=$(free_port)
  # (Ids of this run only: the shipped persistent sessions must not bring a past run's messages.)
  DANG_INSTANCE="$name-$$" "$dang" run --config "$work/ha.yaml" --mqtt-url "$DANG_MQTT_URL" --database-url "$database_url" \
    --spool-dir "$work/spool-$name" --http "127.0.0.1:$http" > "$work/$name.log" 2>&1 &
  pids+=($!)
  eval "pid_$name=$!; http_$name=$http"
}
role() { curl -fsS "http://127.0.0.1:$1/status" 2>/dev/null | python3 -c 'import json, sys; print(json.load(sys.stdin)["role"])' 2>/dev/null || echo none; }
wait_role() {  # wait_role PORT ROLE TENTHS
  for _ in $(seq "$3"); do [ "$(role "$1")" = "$2" ] && return 0; sleep 0.1; done
  return 1
}

mosquitto_sub -h "$host" -p "$port" -q 1 -v -t 'hasmoke/alert/#' -t 'hasmoke/status' -t "spBv1.0/STATE/$host_id" > "$work/sub.log" &
pids+=($!)
start a
wait_role "$http_a" active 150 || { tail -5 "$work/a.log"; fail "the first instance did not become active"; }
start b
wait_role "$http_b" standby 150 || { tail -5 "$work/b.log"; fail "the second instance did not stand by"; }
sleep 1
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$http_b/readyz")" = 503 ] || fail "the standby says it is ready"

# The Sparkplug STATE: (online, timestamp) in the order received.
states() { grep "^spBv1.0/STATE/$host_id " "$work/sub.log" | cut -d' ' -f2- | python3 -c '
import json, sys
for line in sys.stdin:
    try: s = json.loads(line)
    except ValueError: continue  # (the retained STATE cleared at the end)
    print("online" if s["online"] else "offline", s["timestamp"])'; }
[ "$(states | grep -c online)" = 1 ] || fail "STATE: expected one birth (the active's) before the kill, got: $(states | tr '\n' ' ')"
birth_a=$(states | awk '$1 == "online" {print $2}')

# A breach of TI-105 (HI 368): one alert, from the active.
tag=r1/cdu/cdu1/TI-105
now=$(( $(date +%s) * 1000 - 60000 ))
for i in $(seq 0 29); do echo "{\"ts\": $((now + i * 1000)), \"v\": 355.$((i % 3))}"; done \
  | mosquitto_pub -h "$host" -p "$port" -q 1 -t "plant/$tag" -l
sleep 0.5
mosquitto_pub -h "$host" -p "$port" -q 1 -t "plant/$tag" -m "{\"ts\": $((now + 31000)), \"v\": 371.5}"
raised() { grep "^hasmoke/alert/[a-z]*/$tag " "$work/sub.log" | cut -d' ' -f2- | python3 -c '
import json, sys
for line in sys.stdin:
    a = json.loads(line)
    if a["kind"] == "limit" and a["state"] == sys.argv[1]: print(a["alert_id"])' "$1"; }
for _ in $(seq 100); do [ -n "$(raised raised)" ] && break; sleep 0.1; done
alert_id=$(raised raised | sed -n 1p)
[ -n "$alert_id" ] || fail "no limit alert from the active"
for _ in $(seq 50); do [ "$(psql "$database_url" -qAtc "SELECT count(*) FROM alerts WHERE alert_id = '$alert_id'")" = 1 ] && break; sleep 0.1; done

# The active is killed. The standby must take over within 2 × the lease.
killed=$(date +%s%N)
{ kill -9 "$pid_a"; wait "$pid_a"; } 2>/dev/null || true
wait_role "$http_b" active $(( lease * 2 * 10 + 20 )) || { tail -5 "$work/b.log"; fail "the standby did not take over"; }
took=$(( ($(date +%s%N) - killed) / 1000000 ))
[ "$took" -le $(( lease * 2000 )) ] || fail "the takeover took $took ms (more than 2 × the lease, $(( lease * 2000 )) ms)"

# Back to normal: the new active clears the same alert id; nothing was raised twice.
for i in $(seq 32 36); do echo "{\"ts\": $((now + i * 1000)), \"v\": 355.1}"; done \
  | mosquitto_pub -h "$host" -p "$port" -q 1 -t "plant/$tag" -l
for _ in $(seq 100); do [ -n "$(raised cleared)" ] && break; sleep 0.1; done
[ "$(raised cleared | sed -n 1p)" = "$alert_id" ] || fail "the clear does not carry the killed active's alert id: $(raised cleared) (raised $alert_id)"
[ "$(raised raised | wc -l)" = 1 ] || fail "the alarm was raised $(raised raised | wc -l) times"
for _ in $(seq 50); do [ "$(psql "$database_url" -qAtc "SELECT count(*) || ' ' || min(state) FROM alerts WHERE kind = 'limit'")" = "1 cleared" ] && break; sleep 0.1; done
[ "$(psql "$database_url" -qAtc "SELECT count(*) || ' ' || min(state) FROM alerts WHERE kind = 'limit'")" = "1 cleared" ] \
  || fail "the record does not hold one closed episode: $(psql "$database_url" -qAtc "SELECT alert_id, state FROM alerts WHERE kind = 'limit'")"
grep -q "\"instance\":\"b-$$\",\"role\":\"active\"" "$work/sub.log" || fail "the new active did not announce itself on hasmoke/status"
# The killed host's will (its birth's timestamp), then the new active's birth, later.
for _ in $(seq 50); do [ "$(states | tail -1 | cut -d' ' -f1)" = online ] && [ "$(states | wc -l)" -ge 3 ] && break; sleep 0.1; done
# (Never `grep -q` or `head` after a producer here: with pipefail, the producer's broken pipe fails the test.)
states | grep "^offline $birth_a\$" > /dev/null || fail "STATE: no will of the killed host: $(states | tr '\n' ' ')"
last=$(states | tail -1)
[ "${last%% *}" = online ] && [ "${last##* }" -gt "$birth_a" ] || fail "STATE: the new active's birth is not the last word: $(states | tr '\n' ' ')"
kill -TERM "$pid_b"; wait "$pid_b" 2>/dev/null || true
for _ in $(seq 50); do [ "$(states | tail -1 | cut -d' ' -f1)" = offline ] && break; sleep 0.1; done
[ "$(states | tail -1 | cut -d' ' -f1)" = offline ] || fail "STATE: no death at the graceful stop: $(states | tr '\n' ' ')"
mosquitto_pub -h "$host" -p "$port" -q 1 -r -n -t "spBv1.0/STATE/$host_id"  # (forget the retained STATE)
echo "ok: SIGKILL of the active: the standby took over in $took ms (lease ${lease} s), cleared the same alert id; one raise, one alert row; STATE: $(states | tr '\n' ' ')"
