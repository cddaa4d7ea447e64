#!/usr/bin/env bash
# Private mosquitto broker + private PostgreSQL server on free loopback ports,
# with all state kept under one directory.
#
# Usage:
#   scripts/services.sh start  DIR           start both (idempotent), write+print DIR/env
#   scripts/services.sh stop   DIR [--purge] stop both; --purge also deletes DIR
#   scripts/services.sh status DIR           print state of each (exit 0 iff both running)
#
# DIR/env (shell-sourceable KEY=value lines):
#   DANG_MQTT_URL=mqtt://127.0.0.1:<port>
#   DATABASE_URL=postgres://dang@127.0.0.1:<port>/dang
#   DANG_SERVICES_DIR=<DIR>
#
# Layout: DIR/mosquitto/{mosquitto.conf,mosquitto.log,mosquitto.pid,data/}
#         DIR/pg/{data/,sock/,postgres.log,initdb.log}
# Environment overrides: PG_BIN (PostgreSQL bin dir), MOSQUITTO (broker binary).
set -euo pipefail

PROG="$(basename "$0")"
PG_USER_NAME="dang"   # database role and database name

usage() {
  cat >&2 <<EOF
usage: $PROG start DIR
       $PROG stop DIR [--purge]
       $PROG status DIR
EOF
  exit 2
}

log()  { echo "$PROG: $*" >&2; }
die()  { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- arguments

[[ $# -ge 2 ]] || usage
CMD="$1"
RAW_DIR="$2"
PURGE=0
if [[ $# -ge 3 ]]; then
  [[ "$CMD" == "stop" && "$3" == "--purge" && $# -eq 3 ]] || usage
  PURGE=1
fi
[[ -n "$RAW_DIR" ]] || usage

# Absolute-ize DIR without requiring it to exist (stop/status must not create it).
if [[ "$RAW_DIR" != /* ]]; then
  RAW_DIR="$PWD/$RAW_DIR"
fi
# The path ends up in mosquitto.conf (whitespace-separated) and in a
# single-quoted postgres option, so keep it to a safe character set.
[[ "$RAW_DIR" =~ ^[A-Za-z0-9._/@+,:=~-]+$ ]] \
  || die "DIR '$RAW_DIR' contains unsupported characters (whitespace, quotes, \$, ...)"
if [[ "$CMD" == "start" ]]; then
  mkdir -p "$RAW_DIR" || die "cannot create $RAW_DIR"
fi
if [[ -d "$RAW_DIR" ]]; then
  DIR="$(cd "$RAW_DIR" && pwd -P)"
else
  DIR="${RAW_DIR%/}"
fi
[[ "$DIR" != "/" && -n "$DIR" ]] || die "refusing to use / as the services directory"
# Re-check after resolving symlinks.
[[ "$DIR" =~ ^[A-Za-z0-9._/@+,:=~-]+$ ]] \
  || die "DIR '$DIR' contains unsupported characters (whitespace, quotes, \$, ...)"

MQ_DIR="$DIR/mosquitto"
MQ_CONF="$MQ_DIR/mosquitto.conf"
MQ_LOG="$MQ_DIR/mosquitto.log"
MQ_PID="$MQ_DIR/mosquitto.pid"
PG_ROOT="$DIR/pg"
PG_DATA="$PG_ROOT/data"
PG_SOCK="$PG_ROOT/sock"
PG_LOG="$PG_ROOT/postgres.log"
ENV_FILE="$DIR/env"

IS_ROOT=0
[[ "$(id -u)" -eq 0 ]] && IS_ROOT=1

# ---------------------------------------------------------------- helpers

find_pg_bin() {
  if [[ -n "${PG_BIN:-}" ]]; then
    [[ -x "$PG_BIN/pg_ctl" ]] || die "PG_BIN=$PG_BIN has no pg_ctl"
    echo "$PG_BIN"; return
  fi
  local best
  best="$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -type d -regex '.*/[0-9][0-9.]*' \
            -printf '%f\n' 2>/dev/null | sort -V | tail -n 1 || true)"
  if [[ -n "$best" && -x "/usr/lib/postgresql/$best/bin/pg_ctl" ]]; then
    echo "/usr/lib/postgresql/$best/bin"; return
  fi
  if command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v pg_ctl)"; return
  fi
  die "PostgreSQL server binaries not found (run scripts/install-deps.sh)"
}

# Run a PostgreSQL server tool: as the postgres user when we are root
# (initdb/pg_ctl refuse to run as root), directly otherwise.
as_pg() {
  if [[ $IS_ROOT -eq 1 ]]; then
    # cd somewhere postgres can read so tools do not trip over an unreadable cwd.
    (cd "$PG_ROOT" 2>/dev/null || cd /; runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

# alive PID -> 0 if the process exists and is not a zombie (an orphaned daemon may
# linger as a zombie if PID 1 does not reap it).
alive() {
  local state
  kill -0 "$1" 2>/dev/null || return 1
  state="$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null)" || return 1
  [[ -n "$state" && "$state" != "Z" && "$state" != "X" ]]
}

port_open() {  # port_open PORT -> 0 if 127.0.0.1:PORT accepts TCP connections
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

free_ports() {  # free_ports N -> N distinct free loopback ports, one per line
  command -v python3 >/dev/null 2>&1 || die "python3 is required to pick free ports"
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
for s in socks:
    s.close()
PY
}

tail_log() {  # tail_log FILE LABEL
  if [[ -f "$1" ]]; then
    log "---- last 20 lines of $2 ($1) ----"
    tail -n 20 "$1" >&2 || true
    log "---- end of $2 ----"
  else
    log "($2 log $1 does not exist)"
  fi
}

# --- mosquitto

# PID of the mosquitto running with our config, or nothing.
mosq_pid() {
  local pid
  if [[ -f "$MQ_PID" ]]; then
    pid="$(head -n 1 "$MQ_PID" 2>/dev/null | tr -dc '0-9')"
    if [[ -n "$pid" ]] && is_our_mosq "$pid"; then echo "$pid"; return 0; fi
  fi
  # Fallback: pid file missing/stale; look for a process started with our config.
  local p
  for p in /proc/[0-9]*; do
    pid="${p#/proc/}"
    if is_our_mosq "$pid"; then echo "$pid"; return 0; fi
  done
  return 1
}

is_our_mosq() {  # is_our_mosq PID
  local pid="$1" comm args
  alive "$pid" || return 1
  comm="$(cat "/proc/$pid/comm" 2>/dev/null)" || return 1
  [[ "$comm" == "mosquitto" ]] || return 1
  args="$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  grep -qxF -- "$MQ_CONF" <<<"$args"
}

mosq_port() {
  [[ -f "$MQ_CONF" ]] && awk '$1=="listener"{print $2; exit}' "$MQ_CONF"
}

start_mosquitto() {  # start_mosquitto PORT
  local port="$1" bin="${MOSQUITTO:-}"
  if [[ -z "$bin" ]]; then
    bin="$(command -v mosquitto || true)"
    [[ -n "$bin" ]] || { [[ -x /usr/sbin/mosquitto ]] && bin=/usr/sbin/mosquitto; }
  fi
  [[ -n "$bin" && -x "$bin" ]] || die "mosquitto binary not found (run scripts/install-deps.sh)"

  mkdir -p "$MQ_DIR/data"
  rm -f "$MQ_PID"
  cat >"$MQ_CONF" <<EOF
# Generated by $PROG - private broker for $DIR
per_listener_settings false
listener $port 127.0.0.1
allow_anonymous true
set_tcp_nodelay true
persistence true
persistence_location $MQ_DIR/data/
autosave_interval 1
log_dest file $MQ_LOG
log_type error
log_type warning
log_type notice
log_type information
pid_file $MQ_PID
user root
max_queued_messages 100000
EOF
  if ! "$bin" -c "$MQ_CONF" -d >>"$MQ_LOG" 2>&1; then
    tail_log "$MQ_LOG" "mosquitto"
    die "mosquitto failed to start"
  fi
  local i
  for ((i = 0; i < 100; i++)); do
    if port_open "$port" && mosq_pid >/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  tail_log "$MQ_LOG" "mosquitto"
  die "mosquitto did not accept connections on 127.0.0.1:$port within 10 s"
}

stop_mosquitto() {
  local pid i tries=0
  while ((tries++ < 5)) && pid="$(mosq_pid)"; do
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      alive "$pid" || break
      sleep 0.1
    done
    if alive "$pid"; then
      log "mosquitto (pid $pid) did not exit within 10 s, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do
        alive "$pid" || break
        sleep 0.1
      done
    fi
    echo "mosquitto: stopped (pid $pid)"
  done
  rm -f "$MQ_PID"
}

# --- postgres

pg_pid() {
  local pid comm
  [[ -f "$PG_DATA/postmaster.pid" ]] || return 1
  pid="$(head -n 1 "$PG_DATA/postmaster.pid" 2>/dev/null | tr -dc '0-9')"
  [[ -n "$pid" ]] && alive "$pid" || return 1
  comm="$(cat "/proc/$pid/comm" 2>/dev/null)" || return 1
  [[ "$comm" == postgres* ]] || return 1
  echo "$pid"
}

pg_port() {
  [[ -f "$PG_DATA/postmaster.pid" ]] && sed -n 4p "$PG_DATA/postmaster.pid"
}

# Make sure the postgres user can traverse every directory from / down to DIR.
ensure_pg_traversable() {
  [[ $IS_ROOT -eq 1 ]] || return 0
  local d="" part
  local -a parts
  IFS='/' read -r -a parts <<<"${DIR#/}"
  for part in "${parts[@]}"; do
    [[ -n "$part" ]] || continue
    d="$d/$part"
    if ! runuser -u postgres -- test -x "$d" 2>/dev/null; then
      log "note: chmod o+x $d so the postgres user can reach $PG_ROOT"
      chmod o+x "$d"
    fi
  done
}

start_postgres() {  # start_postgres PORT
  local port="$1" bin sockdir
  bin="$(find_pg_bin)"
  mkdir -p "$PG_ROOT" "$PG_SOCK"
  if [[ $IS_ROOT -eq 1 ]]; then
    getent passwd postgres >/dev/null || die "running as root but there is no 'postgres' user"
    ensure_pg_traversable
    chown -R postgres: "$PG_ROOT"
  fi
  chmod 700 "$PG_ROOT" 2>/dev/null || true

  if [[ ! -f "$PG_DATA/PG_VERSION" ]]; then
    rm -rf "$PG_DATA"
    if ! as_pg "$bin/initdb" -D "$PG_DATA" -U "$PG_USER_NAME" --auth=trust -E UTF8 \
           --no-locale --no-instructions >"$PG_ROOT/initdb.log" 2>&1; then
      tail_log "$PG_ROOT/initdb.log" "initdb"
      die "initdb failed"
    fi
  fi

  # Unix socket paths are limited to ~107 bytes; skip the socket if too long
  # (clients use TCP anyway).
  sockdir="$PG_SOCK"
  if (( ${#PG_SOCK} + ${#port} + 12 > 107 )); then
    log "note: $PG_SOCK is too long for a Unix socket path; using TCP only"
    sockdir=""
  fi

  if ! as_pg "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -t 60 \
         -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories='$sockdir' -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
         -w start >"$PG_ROOT/pg_ctl.log" 2>&1; then
    tail_log "$PG_ROOT/pg_ctl.log" "pg_ctl"
    tail_log "$PG_LOG" "postgresql"
    die "PostgreSQL failed to start"
  fi

  local exists
  if ! exists="$("$bin/psql" -X -q -t -A -h 127.0.0.1 -p "$port" -U "$PG_USER_NAME" -d postgres \
                   -c "select 1 from pg_database where datname = '$PG_USER_NAME'" 2>&1)"; then
    log "$exists"
    tail_log "$PG_LOG" "postgresql"
    die "cannot connect to PostgreSQL on 127.0.0.1:$port"
  fi
  if [[ "$exists" != "1" ]]; then
    local out
    if ! out="$("$bin/createdb" -h 127.0.0.1 -p "$port" -U "$PG_USER_NAME" "$PG_USER_NAME" 2>&1)"; then
      log "$out"
      tail_log "$PG_LOG" "postgresql"
      die "createdb $PG_USER_NAME failed"
    fi
  fi
}

stop_postgres() {
  local pid bin i
  pid="$(pg_pid)" || { return 0; }
  bin="$(find_pg_bin)"
  if ! as_pg "$bin/pg_ctl" -D "$PG_DATA" -m fast -t 30 -w stop >/dev/null 2>&1; then
    if alive "$pid"; then
      log "pg_ctl stop failed; sending SIGQUIT (immediate shutdown) to postmaster $pid"
      kill -QUIT "$pid" 2>/dev/null || true
      for ((i = 0; i < 100; i++)); do
        alive "$pid" || break
        sleep 0.1
      done
      if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    fi
  fi
  echo "postgresql: stopped (pid $pid)"
}

# ---------------------------------------------------------------- commands

print_env() { cat "$ENV_FILE"; }

cmd_start() {
  if [[ -f "$ENV_FILE" ]] && mosq_pid >/dev/null && pg_pid >/dev/null; then
    print_env
    return 0
  fi

  # Partial/stale state: stop leftovers, then start fresh (data is kept).
  rm -f "$ENV_FILE"
  stop_postgres >/dev/null
  stop_mosquitto >/dev/null

  local ports mq_port pg_port_
  ports="$(free_ports 2)" || die "could not pick free ports"
  mq_port="$(sed -n 1p <<<"$ports")"
  pg_port_="$(sed -n 2p <<<"$ports")"
  [[ "$mq_port" =~ ^[0-9]+$ && "$pg_port_" =~ ^[0-9]+$ ]] || die "bad ports from python3: $ports"

  # On any failure from here on, tear down whatever was started.
  trap 'rc=$?; if [[ $rc -ne 0 ]]; then log "start failed, stopping services in $DIR"; stop_postgres >/dev/null 2>&1 || true; stop_mosquitto >/dev/null 2>&1 || true; fi' EXIT

  start_mosquitto "$mq_port"
  start_postgres "$pg_port_"

  local tmp="$ENV_FILE.tmp.$$"
  cat >"$tmp" <<EOF
DANG_MQTT_URL=mqtt://127.0.0.1:$mq_port
DATABASE_URL=postgres://$PG_USER_NAME@127.0.0.1:$pg_port_/$PG_USER_NAME
DANG_SERVICES_DIR=$DIR
EOF
  mv -f "$tmp" "$ENV_FILE"
  trap - EXIT
  print_env
}

cmd_stop() {
  if [[ -d "$DIR" ]]; then
    stop_postgres
    stop_mosquitto
    rm -f "$ENV_FILE"
  fi
  if [[ $PURGE -eq 1 && -e "$DIR" ]]; then
    # Only delete directories that look like ours.
    if [[ -e "$MQ_DIR" || -e "$PG_ROOT" || -e "$ENV_FILE" || -z "$(ls -A "$DIR")" ]]; then
      rm -rf "$DIR"
      echo "purged $DIR"
    else
      die "$DIR does not look like a services directory; not purging"
    fi
  fi
}

cmd_status() {
  local rc=0 pid
  if pid="$(mosq_pid)"; then
    echo "mosquitto: running (pid $pid, 127.0.0.1:$(mosq_port))"
  else
    echo "mosquitto: stopped"; rc=3
  fi
  if pid="$(pg_pid)"; then
    echo "postgresql: running (pid $pid, 127.0.0.1:$(pg_port))"
  else
    echo "postgresql: stopped"; rc=3
  fi
  return $rc
}

case "$CMD" in
  start)  cmd_start ;;
  stop)   cmd_stop ;;
  status) cmd_status ;;
  *)      usage ;;
esac
