#!/usr/bin/env bash
# The .deb as an integrator meets it (docs/deployment.md): its control fields and contents, the
# unit checked by systemd-analyze, `dpkg -i` on this machine, the binary run with the bundled
# runtime only, the service started exactly as dang.service starts it (its user, environment file,
# working directory, ExecStartPre and ExecStart read from the installed unit) against the test
# broker and database, reloaded as ExecReload does, stopped, and the package purged.
#
# usage: scripts/package-test.sh DEB   (DANG_MQTT_URL and DATABASE_URL set; root, on a machine
# where installing a package is fine: CI's, or a developer's own)
set -euo pipefail
cd "$(dirname "$0")/.."
deb=${1:?usage: package-test.sh DEB}
: "${DANG_MQTT_URL:?}" "${DATABASE_URL:?}"
fail() { echo "package-test: FAIL: $*" >&2; exit 1; }
work=$(mktemp -d)
run_pid=""
cleanup() {
  [ -n "$run_pid" ] && kill "$run_pid" 2>/dev/null || true
  if dpkg-query -W -f='${Status}' dang 2>/dev/null | grep -q installed; then dpkg --purge dang >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# 1. Control fields and contents.
field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = dang ] || fail "Package is $(field Package)"
[ "$(field Architecture)" = "$(dpkg --print-architecture)" ] || fail "Architecture is $(field Architecture)"
for dep in libmosquitto1 libpq5 libcurl4 libc6; do
  field Depends | tr ',' '\n' | sed 's/^ *//; s/ .*//' | grep -qx "$dep" || fail "Depends lacks $dep: $(field Depends)"
done
field Depends | grep -q -i swift && fail "Depends names a Swift package: the runtime is bundled or linked in"
contents=$(dpkg-deb -c "$deb" | awk '{print $6}')
# The Swift runtime is either bundled in /usr/lib/dang (a build that loads it as shared libraries:
# the debug build `make test` packages) or linked in (the release build, scripts/build-release.sh).
bundled=false
grep -qx ./usr/lib/dang/libswiftCore.so <<<"$contents" && bundled=true
runtime=()
$bundled && runtime=(./usr/lib/dang/libswiftCore.so ./usr/lib/dang/libFoundation.so)
for path in ./usr/bin/dang "${runtime[@]}" ./etc/dang/orchestrator.yaml \
  ./etc/dang/topics/refinery.yaml ./etc/default/dang ./lib/systemd/system/dang.service ./usr/share/doc/dang/deployment.md; do
  grep -qx "$path" <<<"$contents" || fail "the package lacks $path"
done
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles > "$work/conffiles"
[ "$(sort "$work/conffiles" | paste -sd' ')" = "/etc/dang/orchestrator.yaml /etc/dang/topics/refinery.yaml /etc/default/dang" ] \
  || fail "conffiles: $(cat "$work/conffiles")"
echo "ok: control fields (Depends: $(field Depends)), contents and conffiles"

# 2. Install, and the binary with nothing of a Swift toolchain.
[ "$(id -u)" -eq 0 ] || { echo "skip: not root, the package is not installed here"; exit 0; }
if dpkg-query -W -f='${Status}' dang 2>/dev/null | grep -q installed; then fail "a dang package is installed already: remove it first"; fi
dpkg -i "$deb" > "$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg -i failed"; }
getent passwd dang >/dev/null || fail "postinst made no dang user"
[ "$(stat -c %U:%a /var/lib/dang)" = "dang:750" ] || fail "/var/lib/dang is $(stat -c %U:%a /var/lib/dang)"
[ "$(stat -c %G:%a /etc/default/dang)" = "dang:640" ] || fail "/etc/default/dang is $(stat -c %G:%a /etc/default/dang)"
ldd /usr/bin/dang > "$work/ldd.txt"
grep -q "not found" "$work/ldd.txt" && fail "unresolved libraries: $(grep 'not found' "$work/ldd.txt")"
grep -q "/opt/swift\|/\.build/" "$work/ldd.txt" && fail "the installed binary loads from a toolchain: $(grep '/opt/swift' "$work/ldd.txt" | head -3)"
if $bundled; then
  grep -q "/usr/lib/dang/libswiftCore.so" "$work/ldd.txt" || fail "the bundled Swift runtime is not used"
  where="the runtime from /usr/lib/dang"
else
  grep -q "libswift\|libFoundation\|libdispatch" "$work/ldd.txt" && fail "the binary loads a Swift runtime the package lacks: $(grep 'libswift\|libFoundation\|libdispatch' "$work/ldd.txt")"
  where="the Swift runtime linked in"
fi
runuser -u dang -- /usr/bin/dang check-config --config /etc/dang/orchestrator.yaml > "$work/check.log" 2>&1 \
  || fail "check-config of the installed configuration: $(cat "$work/check.log")"
echo "ok: dpkg -i: the dang user, /var/lib/dang, $where; $(tail -1 "$work/check.log")"

# 3. The unit: systemd-analyze verify where it exists (it needs no running systemd).
if command -v systemd-analyze >/dev/null 2>&1; then
  systemd-analyze verify /lib/systemd/system/dang.service > "$work/verify.log" 2>&1 \
    || { cat "$work/verify.log"; fail "systemd-analyze verify dang.service"; }
  echo "ok: systemd-analyze verify dang.service$(grep -q . "$work/verify.log" && echo " ($(wc -l < "$work/verify.log") notes)")"
else
  echo "skip: systemd-analyze is not installed"
fi

# 4. The service as the unit starts it: its user, environment file, working directory and commands.
unit=/lib/systemd/system/dang.service
value() { sed -n "s/^$1=//p" "$unit" | head -1; }
[ "$(value User)" = dang ] && [ "$(value Restart)" = on-failure ] && [ "$(value ProtectSystem)" = strict ] \
  && [ "$(value NoNewPrivileges)" = true ] && [ "$(value StateDirectory)" = dang ] || fail "the unit lost its hardening"
# An operator's edits: the servers in the environment file, another port in the configuration.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'DANG_MQTT_URL=%s\nDATABASE_URL=%s\nDANG_API_TOKEN=package-test\n' "$DANG_MQTT_URL" "$DATABASE_URL" >> /etc/default/dang
sed -i "s|^  listen: .*|  listen: 127.0.0.1:$port|" /etc/dang/orchestrator.yaml
grep -q "^  listen: 127.0.0.1:$port" /etc/dang/orchestrator.yaml || fail "could not set api.listen"
pre=$(value ExecStartPre); start=$(value ExecStart)
environment=$(grep -v '^#' /etc/default/dang | grep = || true)
as_unit() {
  # shellcheck disable=SC2086
  (cd "$(value WorkingDirectory)" && exec runuser -u dang -- env -i PATH=/usr/bin:/bin $environment sh -c "exec $1")
}
as_unit "$pre" > "$work/pre.log" 2>&1 || fail "ExecStartPre failed: $(cat "$work/pre.log")"
# systemd's notification socket, as Type=notify and WatchdogSec give it (here 4 s: a ping every 2 s).
[ "$(value Type)" = notify ] && [ -n "$(value WatchdogSec)" ] || fail "the unit is not Type=notify with a watchdog"
install -d -o dang -m 0700 "$work/notify"
python3 - "$work/notify/socket" "$work/notify.log" <<'PY' &
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
os.chmod(sys.argv[1], 0o666)
s.settimeout(60)
with open(sys.argv[2], "a") as log:
    try:
        while True:
            log.write(s.recv(4096).decode().replace("\n", " ") + "\n")
            log.flush()
    except socket.timeout:
        pass
PY
notify_pid=$!
for _ in $(seq 50); do [ -S "$work/notify/socket" ] && break; sleep 0.1; done
chmod 0711 "$work"  # (the dang user reaches the socket through it)
environment="$environment NOTIFY_SOCKET=$work/notify/socket WATCHDOG_USEC=4000000"
as_unit "$start" > "$work/service.log" 2>&1 &
run_pid=$!
for _ in $(seq 150); do curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; kill -0 $run_pid 2>/dev/null || break; sleep 0.1; done
curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null || { tail -20 "$work/service.log"; fail "the service did not become ready"; }
[ "$(stat -c %U /var/lib/dang/spool)" = dang ] || fail "the spool is not under /var/lib/dang, owned by dang"
pings="^WATCHDOG=1 STATUS=broker connected, database connected, [0-9]* tags"
for _ in $(seq 60); do grep -q "$pings" "$work/notify.log" 2>/dev/null && break; sleep 0.1; done
grep -q "^READY=1 STATUS=broker " "$work/notify.log" || fail "no READY=1 to systemd: $(cat "$work/notify.log" 2>/dev/null)"
grep -q "$pings" "$work/notify.log" || fail "no WATCHDOG=1 with the status within the watchdog's half period: $(cat "$work/notify.log")"
python3 - "$work/service.log" <<'PY' || fail "the service's log is not JSON lines (--log-format json)"
import json, sys
lines = [l for l in open(sys.argv[1]) if l.strip()]
assert lines and all(isinstance(json.loads(l), dict) for l in lines), lines[:3]
PY
# ExecReload.
child=$(pgrep -u dang -f "/usr/bin/dang run" | head -1)
[ -n "$child" ] || fail "no dang process of the dang user"
kill -HUP "$child"
for _ in $(seq 50); do grep -q '"reload: ' "$work/service.log" && break; sleep 0.1; done
grep -q '"reload: nothing changed"' "$work/service.log" || fail "SIGHUP (ExecReload) did not reload: $(grep -i reload "$work/service.log" | tail -2)"
for _ in $(seq 30); do grep -q "^READY=1 STATUS=reloaded" "$work/notify.log" && break; sleep 0.1; done
grep -q "^RELOADING=1 MONOTONIC_USEC=[0-9]" "$work/notify.log" && grep -q "^READY=1 STATUS=reloaded" "$work/notify.log" \
  || fail "no RELOADING=1 then READY=1 around the reload: $(cat "$work/notify.log")"
kill -TERM "$child"
wait $run_pid || fail "the service exited with status $? on SIGTERM"
run_pid=""
grep -q "^STOPPING=1" "$work/notify.log" || fail "no STOPPING=1 at shutdown"
kill "$notify_pid" 2>/dev/null || true
echo "ok: started as dang.service starts it (user dang, /etc/default/dang, ExecStartPre check-config), ready, reloaded by SIGHUP, stopped by SIGTERM; systemd told READY, WATCHDOG, RELOADING and STOPPING"

# 5. Purge: the program, the user and the state go; nothing is left running.
dpkg --purge dang > "$work/purge.log" 2>&1 || { cat "$work/purge.log"; fail "dpkg --purge failed"; }
[ ! -e /usr/bin/dang ] && [ ! -e /var/lib/dang ] && ! getent passwd dang >/dev/null || fail "purge left files or the user behind"
echo "ok: dpkg --purge removes the program, the state directory and the user"
