#!/usr/bin/env bash
# Regenerates scripts/link-order.txt: the functions `dang run` executes when it starts with 10,000
# tags and takes samples, alerts and status requests (the scenario of `dang bench --phases
# memory`). scripts/build-release.sh gives the list to the linker, which places those functions
# together at the front of .text, so the pages a running daemon touches are few and contiguous
# instead of one or two functions in every 64 KB the kernel maps around a fault
# (docs/performance.md, "Memory").
#
# The list is names, not addresses: it stays useful as the code changes (a function it no longer
# names is placed with the rest, and costs at most the pages it touches). Regenerate it after large
# changes to the live path. Needs valgrind (installed if missing), the broker and PostgreSQL
# (scripts/services.sh), and takes about five minutes.
#
# usage: scripts/link-order.sh [DANG_BINARY]   (default: .build/release/dang, from make release)
set -euo pipefail
cd "$(dirname "$0")/.."
dang=${1:-.build/release/dang}
[ -x "$dang" ] || { echo "link-order: $dang is missing (make release)" >&2; exit 1; }
if ! command -v valgrind >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
fi
work=.run/link-order
rm -rf "$work" && mkdir -p "$work"
scripts/services.sh start "$work/services" >/dev/null
trap 'scripts/services.sh stop "$work/services" >/dev/null 2>&1 || true' EXIT
set -a; . "$work/services/env"; set +a

# valgrind cannot read the Swift toolchain's DWARF 5; the symbol table is all it needs.
strip -g -o "$work/dang" "$dang"
skip='*/mosquitto,*/postgres,*/initdb,*/pg_ctl,*/psql,*/sh,*/bash'

# 1. The memory phase of `dang bench`: 10,000 tags started, 20 samples each, limit breaches, the
#    decisions and invocations they trigger, GET /status (its `dang run` child's profile is kept).
valgrind --tool=callgrind --trace-children=yes --trace-children-skip="$skip" --dump-instr=no --collect-jumps=no \
  --callgrind-out-file="$work/callgrind.%p" "$work/dang" bench --phases memory --database-url "$DATABASE_URL" \
  --json "$work/bench.json" > "$work/bench.log" 2>&1

# 2. The shipped configuration and topic map, with `dang simulate`'s upset: the detectors, the unit
#    monitors, the alarm lifecycle, the decision engine and the modules' invocations as shipped.
api_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
status() { curl -fsS -m 5 "http://127.0.0.1:$api_port/status" 2>/dev/null || true; }
valgrind --tool=callgrind --dump-instr=no --collect-jumps=no --callgrind-out-file="$work/callgrind.shipped" \
  "$work/dang" run --config config/orchestrator.yaml --log-level error --http "127.0.0.1:$api_port" \
  --spool-dir "$work/spool" > "$work/run.log" 2>&1 &
run_pid=$!
for _ in $(seq 300); do status | grep '"connected":true' >/dev/null && break; sleep 1; done
timeout 60 "$dang" simulate --config config/orchestrator.yaml --rate 5 --upset-after 10 --upset-duration 20 \
  --log-level error > "$work/simulate.log" 2>&1 || true
status > /dev/null
kill -INT "$run_pid"
wait "$run_pid" || true

nm -S --defined-only "$work/dang" > "$work/symbols.txt"
nm -SC --defined-only "$work/dang" > "$work/symbols-demangled.txt"
python3 - "$work" "$(readlink -f "$work/dang")" > scripts/link-order.txt <<'PY'
import bisect, glob, re, sys
work, binary = sys.argv[1:]
# Every function callgrind saw run in the binary, in each profile of `dang run`: "fn=(id) name"
# (in the object of the last "ob=(id) object") and "cfn=(id) name" (a callee: in the object of a
# "cob=" just before it, else the caller's); a name is given once, later lines repeat only the id.
ran = []
for path in glob.glob(f"{work}/callgrind.*"):
    lines = open(path).read().split("\n")
    if not any(line.startswith("cmd:") and " run " in line for line in lines[:20]):
        continue
    objects, names, owner = {}, {}, {}
    ob = cob = None
    for line in lines:
        m = re.match(r"^(c?ob)=\((\d+)\)(?: (.*))?$", line)
        if m:
            if m.group(3): objects[m.group(2)] = m.group(3)
            if m.group(1) == "ob": ob = m.group(2)
            else: cob = m.group(2)
            continue
        m = re.match(r"^(c?fn)=\((\d+)\)(?: (.*))?$", line)
        if m:
            if m.group(3): names[m.group(2)] = m.group(3)
            if m.group(1) == "fn": owner[m.group(2)] = ob
            else: owner.setdefault(m.group(2), cob or ob)
            cob = None
    ran += [re.sub(r"'\d+$", "", names[f]) for f, o in owner.items() if objects.get(o) == binary and f in names]
# callgrind demangles C++ names; the linker wants them mangled. Functions without a symbol come as addresses.
mangled, demangled, spans = set(), {}, []
for raw, shown in zip(open(f"{work}/symbols.txt"), open(f"{work}/symbols-demangled.txt")):
    a, b = raw.split(" ", 3), shown.split(" ", 3)
    if len(a) < 4 or a[2] not in "tTwW": continue
    name = a[3].strip()
    mangled.add(name)
    demangled.setdefault(b[3].strip(), []).append(name)
    spans.append((int(a[0], 16), int(a[1], 16), name))
spans.sort()
starts = [s[0] for s in spans]
def containing(address):
    i = bisect.bisect_right(starts, address) - 1
    return spans[i][2] if i >= 0 and spans[i][0] <= address < spans[i][0] + max(spans[i][1], 1) else None
def preceding(address):
    i = bisect.bisect_right(starts, address) - 1
    return spans[i][2] if i >= 0 else None
# A function without a name is its address where valgrind loaded the executable: at 0x108000 for
# a position-independent one (the base that places the most of them inside a symbol is taken).
# Code outside every symbol's extent (a compiler's unnamed code) is in the section of the symbol
# before it, and moves with that symbol.
addresses = [int(name, 16) for name in ran if name.startswith("0x")]
base = max((0, 0x108000), key=lambda b: sum(containing(a - b) is not None for a in addresses))
order = set()
for name in ran:
    if name in mangled: order.add(name)
    elif name in demangled: order.update(demangled[name])
    elif name.startswith("0x") and (symbol := containing(int(name, 16) - base) or preceding(int(name, 16) - base)): order.add(symbol)
print("\n".join(sorted(order)))
PY
echo "link-order: scripts/link-order.txt names $(wc -l < scripts/link-order.txt) functions" >&2
