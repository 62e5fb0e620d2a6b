#!/usr/bin/env bash
# Installs, idempotently, what packaging and its tests need beyond
# deps-system.sh: systemd-analyze (Debian package systemd; systemd need not
# run: `systemd-analyze verify --root` checks units offline), debootstrap
# (the throw-away Debian root packaging/deb's test installs the .debs into),
# strace (the coordinator's system calls against its SystemCallFilter=) and
# setpriv (util-linux: the units' user and capability bounding sets).
set -euo pipefail
PKGS=(systemd debootstrap strace util-linux dpkg)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: packaging tools present"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "deps: missing Debian packages: ${missing[*]} — run as root (or sudo make deps)" >&2
  exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "deps: packaging tools installed"
