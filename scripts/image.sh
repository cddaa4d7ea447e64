#!/usr/bin/env bash
# `make image`: the container image from Containerfile, with podman (or buildah), tagged
# dang:<version> (docs/deployment.md). Skipped, saying why, where neither is installed.
#
# With registry access the Containerfile's own build stage compiles the package in the Swift
# image. Without it (this project's CI has none), the package is built here with scripts/package.sh
# and passed in (PACKAGE_FROM=prebuilt), on a Debian 12 base made with debootstrap from the
# Debian mirror apt uses — the same runtime stage either way.
#
# usage: scripts/image.sh [--test]
#   --test  (make test) package this debug build, uncompressed, then run the image against the test
#           broker and database (DANG_MQTT_URL, DATABASE_URL) until it reports ready and healthy
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
test_mode=false
[ "${1:-}" = "--test" ] && test_mode=true
fail() { echo "image: FAIL: $*" >&2; exit 1; }

if command -v podman >/dev/null 2>&1; then tool=podman
elif command -v buildah >/dev/null 2>&1; then tool=buildah
else
  echo "skip: neither podman nor buildah is installed (Debian packages podman, buildah): no image built"
  exit 0
fi
base=docker.io/library/debian:12-slim
builder=docker.io/library/swift:6.3-bookworm
args=()
if ! $test_mode && $tool pull -q "$builder" >/dev/null 2>&1 && $tool pull -q "$base" >/dev/null 2>&1; then
  echo "image: building from source in $builder"
else
  # Offline: a local Debian 12 base (cached), and the package from this machine.
  base=localhost/dang-base:bookworm
  if ! $tool image exists "$base" 2>/dev/null; then
    command -v debootstrap >/dev/null 2>&1 || { echo "skip: no registry access and no debootstrap to make a Debian 12 base: no image built"; exit 0; }
    mirror=$(sed -n 's/^URIs: //p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
    rootfs=$(mktemp -d)
    echo "image: no registry: making a Debian 12 base with debootstrap from ${mirror:-http://deb.debian.org/debian}"
    debootstrap --variant=minbase bookworm "$rootfs" "${mirror:-http://deb.debian.org/debian}" > "$rootfs.log" 2>&1 \
      || { tail -5 "$rootfs.log"; rm -rf "$rootfs" "$rootfs.log"; echo "skip: debootstrap failed (no mirror?): no image built"; exit 0; }
    tar -C "$rootfs" -c . | $tool import - "$base" >/dev/null
    rm -rf "$rootfs" "$rootfs.log"
  fi
  rm -rf .build/image && mkdir -p .build/image
  if $test_mode; then
    scripts/package.sh --binary .build/debug/dang --out .build/image --compress none >/dev/null
  else
    scripts/package.sh --out .build/image >/dev/null
  fi
  args+=(--build-arg PACKAGE_FROM=prebuilt)
fi
version=$(.build/debug/dang --version 2>/dev/null || .build/release/dang --version)
tag="localhost/dang:$version"
log=$(mktemp)
if [ "$tool" = podman ]; then
  podman build --isolation chroot --format docker --network host -f Containerfile --build-arg BASE="$base" "${args[@]}" -t "$tag" . > "$log" 2>&1 \
    || { tail -30 "$log"; fail "podman build failed"; }
else
  buildah bud --isolation chroot --format docker --network host -f Containerfile --build-arg BASE="$base" "${args[@]}" -t "$tag" . > "$log" 2>&1 \
    || { tail -30 "$log"; fail "buildah bud failed"; }
fi
size=$($tool image inspect "$tag" --format '{{.Size}}')
echo "ok: image $tag ($((size / 1048576)) MiB) from Containerfile with $tool"
$test_mode || exit 0

# The image as an operator runs it: non-root, the spool on a volume, the health check on /readyz.
[ "$tool" = podman ] || { echo "skip: running the image needs podman"; exit 0; }
: "${DANG_MQTT_URL:?}" "${DATABASE_URL:?}"
[ "$(podman image inspect "$tag" --format '{{.Config.User}}')" = dang ] || fail "the image does not run as dang"
podman image inspect "$tag" --format '{{json .Config.Healthcheck}}' | grep -q readyz || fail "no HEALTHCHECK on /readyz"
podman image inspect "$tag" --format '{{json .Config.Volumes}}' | grep -q /var/lib/dang || fail "no volume for the spool"
name="dang-image-test-$$"
volume="$name-spool"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mnt=""
cleanup() {
  [ -n "$mnt" ] && { umount "$mnt/proc" 2>/dev/null || true; podman umount "$name" >/dev/null 2>&1 || true; }
  podman rm -f "$name" >/dev/null 2>&1 || true
  podman volume rm -f "$volume" >/dev/null 2>&1 || true
  # (The test's image and its debug package are not kept; the Debian base is, for the next run.)
  podman rmi -f "$tag" >/dev/null 2>&1 || true
  rm -rf .build/image
}
trap cleanup EXIT
command=(run --config /etc/dang/orchestrator.yaml --log-format json --http "127.0.0.1:$port")
health=$(podman image inspect "$tag" --format '{{join .Config.Healthcheck.Test " "}}' | sed "s/^CMD-SHELL //; s/127.0.0.1:8080/127.0.0.1:$port/")
if podman run -d --name "$name" --network host -v "$volume:/var/lib/dang" -e DANG_MQTT_URL -e DATABASE_URL \
  "$tag" "${command[@]}" > "$log" 2>&1; then
  runner="podman run"
  exec_in() { podman exec "$name" "$@"; }
else
  # Some machines (this project's CI sandbox among them) let podman build but not start a
  # container: crun may not set rlimits or cgroups there. The image's own filesystem then runs in
  # a chroot, as its USER, with its configuration: the same files, not the same isolation.
  echo "note: podman cannot start a container here ($(grep -o 'crun: .*' "$log" | head -1)); the image's filesystem runs in a chroot as its user instead"
  podman rm -f "$name" >/dev/null 2>&1 || true
  podman create --name "$name" "$tag" >/dev/null
  mnt=$(podman mount "$name")
  mount -t proc proc "$mnt/proc"
  user=$(podman image inspect "$tag" --format '{{.Config.User}}')
  workdir=$(podman image inspect "$tag" --format '{{.Config.WorkingDir}}')
  in_image() { chroot --userspec="$user:$user" "$mnt" /usr/bin/env -i PATH=/usr/bin:/bin HOME="$workdir" DANG_MQTT_URL="$DANG_MQTT_URL" DATABASE_URL="$DATABASE_URL" "$@"; }
  in_image /bin/sh -c "cd $workdir && exec /usr/bin/dang ${command[*]}" > "$log" 2>&1 &
  pid=$!
  runner="a chroot of the image"
  exec_in() { in_image "$@"; }
fi
for _ in $(seq 150); do curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null || { tail -20 "$log"; fail "dang in the image did not become ready"; }
exec_in /bin/sh -c "$health" || fail "the HEALTHCHECK ($health) failed on a ready gateway"
[ "$(exec_in id -un)" = dang ] || fail "the image's user is not dang"
exec_in test -d /var/lib/dang/spool || fail "no spool in /var/lib/dang"
if [ "$runner" = "podman run" ]; then
  podman stop -t 20 "$name" >/dev/null
  status=$(podman inspect "$name" --format '{{.State.ExitCode}}')
else
  pkill -TERM -f "dang run --config /etc/dang/orchestrator.yaml --log-format json --http 127.0.0.1:$port"
  wait "$pid" && status=0 || status=$?
fi
[ "$status" = 0 ] || { tail -5 "$log"; fail "dang exited with $status on SIGTERM"; }
rm -f "$log"
echo "ok: the image ($runner) runs as dang with its spool in /var/lib/dang, becomes ready, passes its HEALTHCHECK, and stops cleanly"
