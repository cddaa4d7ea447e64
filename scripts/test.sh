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
# Active and standby as processes: the active killed with SIGKILL (docs/availability.md); then
# three instances, the active killed and then cut from the database, every bound checked (the
# benchmark exits 1 on any breach of one).
scripts/failover-test.sh
echo "== dang bench-failover --runs 1"
.build/debug/dang bench-failover --runs 1 --json "$dir/bench-failover.json"
smoked=$(date +%s)

# The Debian package, from this debug build (uncompressed: `make package` builds the release one),
# installed, run as its unit runs it, and purged (docs/deployment.md); then the container image
# where podman or buildah can build one.
echo "== package"
package_dir=$(mktemp -d)
scripts/package.sh --binary .build/debug/dang --out "$package_dir" --compress none
scripts/package-test.sh "$package_dir"/dang_*.deb
rm -rf "$package_dir"
scripts/image.sh --test
done_at=$(date +%s)

echo "== all tests passed (build $((built - start)) s, swift test $((tested - built)) s, end to end $((smoked - tested)) s, package $((done_at - smoked)) s)"
