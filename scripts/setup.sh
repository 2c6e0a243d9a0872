#!/usr/bin/env bash
# Installs what dvcr-importer needs on a Debian/Ubuntu machine, idempotently:
#   redis-server, qemu-utils, skopeo, xorriso (system packages), and the distribution registry binary
#   (Debian's docker-registry) unpacked into .tools/ -- never `apt-get install docker-registry`, whose
#   install script would start a registry service on :5000 on all interfaces.
# It says what it did, and what to do when it cannot.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
tools="$root/.tools"
packages=(redis-server qemu-utils skopeo xorriso zstd xz-utils curl openssl)

say() { printf '[setup] %s\n' "$*"; }
fail() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then
  if [ ${#missing[@]} -gt 0 ] || [ ! -x "$tools/bin/docker-registry" ]; then
    fail "this is not a Debian/Ubuntu machine (no apt-get/dpkg-deb). Install by hand: ${packages[*]} and a
       distribution registry v2.8 binary at $tools/bin/docker-registry (or use docker-compose.yml)."
  fi
fi

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo "$@"
  else fail "not root and no password-less sudo. Run as root: apt-get install -y ${missing[*]}"; fi
}

updated=0
apt_update() { [ $updated -eq 1 ] || { as_root apt-get update -qq; updated=1; }; }

if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  apt_update
  # Debian's redis-server package starts a service where an init system runs; we never use it
  # (tests and `dvcr-importer up` start their own redis-server on a free loopback port).
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  say "installed: ${missing[*]}"
else
  say "Debian packages present: ${packages[*]}"
fi

if [ -x "$tools/bin/docker-registry" ]; then
  say "registry binary present: $tools/bin/docker-registry"
else
  say "fetching the distribution registry binary (docker-registry .deb, unpacked, not installed)"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  ( cd "$work" && apt-get download docker-registry >/dev/null 2>&1 ) || {
    apt_update
    ( cd "$work" && apt-get download docker-registry >/dev/null ) || fail "apt-get download docker-registry failed"
  }
  dpkg-deb -x "$work"/docker-registry_*.deb "$work/x"
  mkdir -p "$tools/bin"
  install -m 0755 "$work/x/usr/bin/docker-registry" "$tools/bin/docker-registry"
  say "registry binary unpacked to $tools/bin/docker-registry"
fi
"$tools/bin/docker-registry" --version | sed 's/^/[setup] /'
say "done"
