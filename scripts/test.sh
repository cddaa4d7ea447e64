#!/usr/bin/env bash
# `make test`: build, start a private mosquitto + PostgreSQL, run the Swift test suites against
# them, then drive the `dang` binary end to end (scripts/smoke-test.sh). Stops the servers on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"

dir=.run/test
stop() { scripts/services.sh stop "$dir" --purge >/dev/null 2>&1 || true; }
trap stop EXIT

start=$(date +%s)
echo "== build"
swift build --build-tests
built=$(date +%s)

echo "== services"
stop
scripts/services.sh start "$dir" >/dev/null
set -a; . "$dir/env"; set +a
echo "broker $DANG_MQTT_URL, database $DATABASE_URL"

echo "== swift test"
swift test --skip-build
tested=$(date +%s)

echo "== dang end to end"
scripts/smoke-test.sh
done_at=$(date +%s)

echo "== all tests passed (build $((built - start)) s, swift test $((tested - built)) s, end to end $((done_at - tested)) s)"
