#!/usr/bin/env bash
# Install the Debian packages this project needs (idempotent).
# Only missing packages are installed; prints one line describing what happened.
set -euo pipefail

PACKAGES=(
  libmosquitto-dev
  libpq-dev
  libcurl4-openssl-dev
  mosquitto
  mosquitto-clients
  postgresql
  pkg-config
  python3
  curl
  openssl
  python3-venv
  chromium
  chromium-driver
  prometheus
  patchelf
  binutils
  podman
  buildah
  debootstrap
)

die() { echo "install-deps: ERROR: $*" >&2; exit 1; }

command -v dpkg-query >/dev/null 2>&1 || die "dpkg-query not found (this script supports Debian/Ubuntu only)"

missing=()
for pkg in "${PACKAGES[@]}"; do
  status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
  if [[ "$status" != "install ok installed" ]]; then
    missing+=("$pkg")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#PACKAGES[@]} packages already installed, nothing to do"
  exit 0
fi

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
  else
    die "not root and sudo is not available; cannot install: ${missing[*]}"
  fi
fi

# Note: on machines without systemd, installing 'mosquitto' may try to start a
# system broker on port 1883. That is harmless; scripts/services.sh runs its own
# private broker and does not depend on it.
log="$(mktemp -t install-deps.XXXXXX.log)"
trap 'rm -f "$log"' EXIT

if ! "${SUDO[@]}" apt-get update >"$log" 2>&1; then
  tail -n 20 "$log" >&2
  die "apt-get update failed"
fi
if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
     apt-get install -y --no-install-recommends "${missing[@]}" >>"$log" 2>&1; then
  tail -n 20 "$log" >&2
  die "apt-get install failed for: ${missing[*]}"
fi

echo "install-deps: installed ${#missing[@]} missing package(s): ${missing[*]}"
