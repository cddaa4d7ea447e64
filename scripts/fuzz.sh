#!/usr/bin/env bash
# Fuzzes the parsers of untrusted bytes with libFuzzer for a bounded time (default 60 s):
# the sample payload parser, the Sparkplug B decoder and session, module results, LLM responses
# (Sources/DangTools/Fuzz/FuzzTargets.swift). Crashes land in .run/fuzz/crash-*; copy one
# into Tests/Fuzz/regressions/ and `make test` replays it from then on.
#   scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
seconds=${1:-60}
echo "== building dang-fuzz with libFuzzer (a separate build directory: .build/fuzz)"
swift build -c release --product dang-fuzz --scratch-path .build/fuzz \
  -Xswiftc -sanitize=fuzzer -Xswiftc -DFUZZING -Xswiftc -parse-as-library
mkdir -p .run/fuzz/corpus
cp -n Tests/Fuzz/corpus/* .run/fuzz/corpus/ 2>/dev/null || true
echo "== fuzzing for ${seconds}s"
.build/fuzz/release/dang-fuzz -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 \
  -artifact_prefix=.run/fuzz/ .run/fuzz/corpus Tests/Fuzz/regressions
