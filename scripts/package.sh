#!/usr/bin/env bash
# Builds dang_<version>_<arch>.deb (docs/deployment.md): /usr/bin/dang with the Swift runtime it
# links bundled in /usr/lib/dang (found through the binary's RUNPATH, so the package needs no Swift
# toolchain), the shipped configuration and topic map as conffiles under /etc/dang (spool and map
# paths made absolute), /etc/default/dang, the systemd unit, and the operator guides.
#
# usage: scripts/package.sh [--binary PATH] [--out DIR] [--compress xz|gzip|none]
#   --binary    an already built `dang` (default: scripts/build-release.sh, stripped)
#   --out       where the .deb goes (default: .build/package)
#   --compress  the archive's compression (default xz; `make test` packages its debug build with none)
# The architecture is the build machine's (dpkg --print-architecture): run it on an arm64 Debian 12
# machine with Swift for aarch64 to get the arm64 package; nothing here is specific to amd64.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"

binary="" out=".build/package" compress=xz
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --compress) compress="$2"; shift 2 ;;
    *) echo "package: unknown argument $1" >&2; exit 2 ;;
  esac
done
die() { echo "package: $*" >&2; exit 1; }
for tool in dpkg-deb patchelf readelf ldd; do command -v "$tool" >/dev/null || die "$tool is missing (scripts/install-deps.sh installs it)"; done

strip_binary=false
if [ -z "$binary" ]; then
  scripts/build-release.sh >&2 || die "the release build failed"
  binary=.build/release/dang
  strip_binary=true
fi
[ -x "$binary" ] || die "$binary is not an executable"
version=$("$binary" --version | tr -d '[:space:]')
[[ "$version" =~ ^[0-9][0-9A-Za-z.+~-]*$ ]] || die "unusable version '$version' from $binary --version"
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

# The binary, and the Swift runtime libraries it loads from the toolchain (every one, transitively;
# none for the release build, which links them statically).
install -D -m 0755 "$binary" "$stage/usr/bin/dang"
$strip_binary && strip --strip-unneeded "$stage/usr/bin/dang"
toolchain_libs=$(ldd "$binary" | awk '$3 ~ /^\// {print $3}' | grep -v -E '^/(lib|usr/lib)/' || true)
if [ -n "$toolchain_libs" ]; then
  install -d "$stage/usr/lib/dang"
  for lib in $toolchain_libs; do
    install -m 0644 "$lib" "$stage/usr/lib/dang/"
    patchelf --set-rpath '$ORIGIN' "$stage/usr/lib/dang/$(basename "$lib")"
  done
  patchelf --set-rpath /usr/lib/dang "$stage/usr/bin/dang"
else
  patchelf --remove-rpath "$stage/usr/bin/dang"
fi

# Runtime dependencies: the packages that hold the system libraries the binary and the bundle name.
needed=$( { readelf -d "$stage/usr/bin/dang"; for f in "$stage"/usr/lib/dang/*.so*; do if [ -e "$f" ]; then readelf -d "$f"; fi; done; } \
  | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort -u)
# Packed relative relocations (scripts/build-release.sh) need glibc 2.36's loader.
libc_version=""
if readelf -d "$stage/usr/bin/dang" | grep '(RELR)' >/dev/null; then libc_version=" (>= 2.36)"; fi
depends=()
for soname in $needed; do
  [ -e "$stage/usr/lib/dang/$soname" ] && continue
  path=$(ldd "$binary" | awk -v n="$soname" '$1 == n {print $3}')
  [ -n "$path" ] || path=$(ldconfig -p | awk -v n="$soname" '$1 == n {print $NF; exit}')
  [ -n "$path" ] || die "cannot find $soname"
  pkg=$(dpkg -S "$(readlink -f "$path")" 2>/dev/null | head -1 | cut -d: -f1) \
    || pkg=$(dpkg -S "$path" 2>/dev/null | head -1 | cut -d: -f1) || true
  [ -n "$pkg" ] || die "no package owns $path ($soname)"
  if [ "$pkg" = libc6 ]; then pkg="libc6$libc_version"; fi
  depends+=("$pkg")
done
depends_line=$(printf '%s\n' "${depends[@]}" | sort -u | paste -sd, | sed 's/,/, /g')

# Configuration (conffiles): the shipped files, with the map next to them and the spool in the
# state directory (never relative to wherever the service happens to start).
install -D -m 0644 topics/refinery.yaml "$stage/etc/dang/topics/refinery.yaml"
sed -e 's|^  map: \.\./topics/refinery\.yaml.*|  map: topics/refinery.yaml   # relative to this file: /etc/dang/topics/refinery.yaml|' \
    -e 's|^  spool_dir: \.dang/spool.*|  spool_dir: /var/lib/dang/spool   # durable store-and-forward while the database is away|' \
    config/orchestrator.yaml > "$stage/etc/dang/orchestrator.yaml"
grep -q '^  map: topics/refinery.yaml' "$stage/etc/dang/orchestrator.yaml" || die "config/orchestrator.yaml: topics.map not where expected"
grep -q '^  spool_dir: /var/lib/dang/spool' "$stage/etc/dang/orchestrator.yaml" || die "config/orchestrator.yaml: database.spool_dir not where expected"
chmod 0644 "$stage/etc/dang/orchestrator.yaml"
install -D -m 0640 deploy/debian/default "$stage/etc/default/dang"
install -D -m 0644 deploy/systemd/dang.service "$stage/lib/systemd/system/dang.service"
for doc in README.md docs/deployment.md docs/configuration.md docs/upgrade.md docs/troubleshooting.md docs/mqtt-contract.md docs/api.md; do
  [ -f "$doc" ] && install -D -m 0644 "$doc" "$stage/usr/share/doc/dang/$(basename "$doc")"
done
[ -d deploy/grafana ] && install -D -m 0644 deploy/grafana/dang-orchestrator.json "$stage/usr/share/dang/grafana/dang-orchestrator.json"

install -d "$stage/DEBIAN"
installed_kib=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<CONTROL
Package: dang
Version: $version
Architecture: $arch
Maintainer: DAN_G Orchestrator team <dang@localhost>
Installed-Size: $installed_kib
Depends: $depends_line
Recommends: mosquitto-clients, postgresql-client
Section: net
Priority: optional
Homepage: https://example.invalid/dang
Description: DAN_G Orchestrator, the central intelligence of refinery process optimization
 A daemon that listens to a plant over MQTT (plain JSON and Sparkplug B), detects anomalies and
 trends on every tag and unit, decides when to invoke the forecasting, market-analysis,
 optimization and ETL modules (rules first, an LLM advisor second), publishes alerts and
 invocations, and keeps a lossless record in PostgreSQL. Runs as the hardened dang.service.
CONTROL
printf '/etc/dang/orchestrator.yaml\n/etc/dang/topics/refinery.yaml\n/etc/default/dang\n' > "$stage/DEBIAN/conffiles"
install -m 0755 deploy/debian/postinst deploy/debian/prerm deploy/debian/postrm "$stage/DEBIAN/"
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | xargs -0 md5sum > DEBIAN/md5sums)

mkdir -p "$out"
deb="$out/dang_${version}_${arch}.deb"
dpkg-deb --root-owner-group "-Z$compress" --build "$stage" "$deb" >/dev/null
echo "$deb ($(du -k "$deb" | cut -f1) KiB; installed $((installed_kib / 1024)) MiB; Depends: $depends_line)"
