#!/usr/bin/env bash
# Installs, idempotently, the Debian packages cacheplane needs to run and to
# be tested. Runs apt-get only when something is missing.
set -euo pipefail
# chromium: the dashboard's browser test (e2e/dashboard_test.go, through chromedp)
# python3-redis: redis-py, the Python client of the TLS test (e2e/tls_test.go)
PKGS=(redis-server redis-sentinel redis-tools haproxy containerd runc iptables procps ca-certificates git chromium python3-redis)
missing=()
# Node.js + npm run the client-compatibility tests (node-redis, ioredis). A
# machine may already have them from another source (then Debian's npm
# conflicts): install Debian's only when the commands are missing.
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: Debian packages present"
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
# Debian's packages start their own redis/sentinel services where a service
# manager runs; cacheplane runs its own members, so stop those if present.
for s in redis-server redis-sentinel haproxy; do
  (command -v systemctl >/dev/null && systemctl disable --now "$s" >/dev/null 2>&1) || true
  (command -v service >/dev/null && service "$s" stop >/dev/null 2>&1) || true
done
echo "deps: Debian packages installed"
