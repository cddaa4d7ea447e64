#!/usr/bin/env bash
# The release build of `dang` that ships (scripts/package.sh) and that the benchmarks measure
# (`make release`): .build/release/dang.
#
# Linked to use less memory once loaded (docs/performance.md, "Memory"): the Swift runtime and
# Foundation statically (`--static-swift-stdlib`: only the code it calls is kept), with the
# toolchain's lld, no dynamic symbol table of its own (`--no-export-dynamic`: the loader no longer
# reads 52,000 symbols' names and hashes), and relative relocations packed (`-z
# pack-relative-relocs`: 27 KB instead of 3.3 MB read at every start; needs glibc 2.36, Debian 12).
# With 10,000 tags that is 6–8 MiB less resident than the shared runtime. And the functions the
# daemon runs are placed together at the front of .text (`--symbol-ordering-file
# scripts/link-order.txt`, made by scripts/link-order.sh; every function in a section of its own,
# `-function-sections`, so the linker can move it): the kernel maps code 64 KB around each page
# fault, and with the live code scattered through 32 MB of .text that was 17 MiB resident.
#
# usage: scripts/build-release.sh [more swift build options]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
swiftc=$(command -v swiftc) || { echo "build-release: swiftc is not on PATH" >&2; exit 1; }
lld="$(dirname "$(readlink -f "$swiftc")")/ld.lld"
[ -x "$lld" ] || { echo "build-release: $lld is missing (the Swift toolchain's lld)" >&2; exit 1; }
mkdir -p .build
toolset=.build/release-toolset.json
printf '{"schemaVersion": "1.0", "linker": {"path": "%s", "extraCLIOptions": ["-z", "pack-relative-relocs"]}}\n' "$lld" > "$toolset.new"
cmp -s "$toolset.new" "$toolset" && rm "$toolset.new" || mv "$toolset.new" "$toolset"
# The compiler keeps an object file whose code is unchanged, whatever the flags: objects compiled
# before `-function-sections` was added are removed once, so that every function can be placed.
stamp=.build/release-function-sections
if [ ! -e "$stamp" ]; then
  find .build -path '*/release/*.build/*.o' -delete
  touch "$stamp"
fi
# The build does not know the order file as an input: relink when it changed.
if [ -e .build/release/dang ] && [ scripts/link-order.txt -nt .build/release/dang ]; then rm -f .build/release/dang; fi
exec swift build -c release --product dang --static-swift-stdlib --toolset "$toolset" -Xlinker --no-export-dynamic \
  -Xswiftc -Xfrontend -Xswiftc -function-sections \
  -Xlinker --symbol-ordering-file="$PWD/scripts/link-order.txt" -Xlinker --no-warn-symbol-ordering "$@"
