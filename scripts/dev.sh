#!/usr/bin/env bash
# Dev mode: one coordinator and three agents on 127.0.0.11-13, each with its
# own data dir and containerd namespace, all under .dev/. Ctrl-C stops
# everything this started (members included, with a clean redis shutdown so
# data is saved); running it again resumes with the addons that existed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEV=${CACHEPLANE_DEV_DIR:-$ROOT/.dev}
BIN=$ROOT/bin
CLI="$BIN/cacheplane --socket $DEV/coordinator/admin.sock"
COORD_IP=127.0.0.10
HOSTS=(h1:127.0.0.11:zone-a h2:127.0.0.12:zone-b h3:127.0.0.13:zone-c)
mkdir -p "$DEV/logs"
chmod 700 "$DEV"

pids=()
stopping=0
cleanup() {
  [ $stopping = 1 ] && return; stopping=1
  echo; echo "dev: stopping agents and coordinator..."
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  echo "dev: stopping members (redis saves its data on the way out)..."
  local nss=()
  for h in "${HOSTS[@]}"; do nss+=("cacheplane-dev-${h%%:*}"); done
  for ns in "${nss[@]}"; do
    for id in $(ctr -n "$ns" task ls -q 2>/dev/null); do ctr -n "$ns" task kill -s SIGTERM "$id" >/dev/null 2>&1 || true; done
  done
  # One shared deadline: redis exits after its save; haproxy, PID 1 in its
  # container, may ignore SIGTERM and is killed after the deadline.
  for _ in $(seq 1 50); do
    left=0
    for ns in "${nss[@]}"; do
      n=$(ctr -n "$ns" task ls 2>/dev/null | awk 'NR>1 && $3=="RUNNING" && $1 !~ /haproxy/' | wc -l)
      left=$((left + n))
    done
    [ "$left" = 0 ] && break; sleep 0.1
  done
  for ns in "${nss[@]}"; do
    for id in $(ctr -n "$ns" task ls -q 2>/dev/null); do
      ctr -n "$ns" task kill -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
  done
  for ns in "${nss[@]}"; do
    for _ in $(seq 1 30); do
      [ "$(ctr -n "$ns" task ls 2>/dev/null | awk 'NR>1 && $3=="RUNNING"' | wc -l)" = 0 ] && break; sleep 0.1
    done
    for id in $(ctr -n "$ns" task ls -q 2>/dev/null); do ctr -n "$ns" task delete "$id" >/dev/null 2>&1 || true; done
  done
  echo "dev: stopped. Run 'make run' again to resume; rm -rf $DEV to start afresh."
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$BIN/cacheplane-coordinator" serve --id dev-c1 --data-dir "$DEV/coordinator" \
  --raft-addr $COORD_IP:7400 --http-addr $COORD_IP:7401 --socket "$DEV/coordinator/admin.sock" \
  --bootstrap --state-keys-file "$DEV/coordinator/state-keys.json" --entrypoint-cidr 127.0.1.0/24 >>"$DEV/logs/coordinator.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do $CLI members >/dev/null 2>&1 && break; sleep 0.1; done
$CLI members >/dev/null || { echo "dev: the coordinator did not start; see $DEV/logs/coordinator.log" >&2; tail -5 "$DEV/logs/coordinator.log" >&2; exit 1; }

for h in "${HOSTS[@]}"; do
  IFS=: read -r id ip zone <<<"$h"
  # A single-use join token per agent (unused once the agent has its
  # certificate in $DEV/$id/identity, as on a resumed run).
  join=()
  [ -s "$DEV/$id/identity/cert.pem" ] || join=(--join-token "$($CLI hosts-token "$id" --ttl 10m)")
  "$BIN/cacheplane-agent" --host-id "$id" --address "$ip" --zone "$zone" --memory-mb 4096 \
    --coordinator $COORD_IP:7401 "${join[@]}" \
    --data-dir "$DEV/$id" --namespace "cacheplane-dev-$id" --image-dir "$DEV/images" \
    >>"$DEV/logs/agent-$id.log" 2>&1 &
  pids+=($!)
done
ready=0
for _ in $(seq 1 150); do
  ready=$($CLI hosts --json 2>/dev/null | grep -c '"state": "ready"' || true)
  [ "$ready" -ge 3 ] && break; sleep 0.1
done
if [ "$ready" -lt 3 ]; then
  echo "dev: only $ready of 3 agents are ready; see $DEV/logs/agent-*.log" >&2; exit 1
fi
$CLI hosts
cat <<MSG

cacheplane dev fleet is up: coordinator on $COORD_IP, agents h1-h3 on 127.0.0.11-13.
In another shell:

  export CACHEPLANE_SOCKET=$DEV/coordinator/admin.sock
  $BIN/cacheplane addons-plans
  $BIN/cacheplane addons-add --app my-app redis redis-starter-256
  $BIN/cacheplane addons --app my-app
  $BIN/cacheplane env --app my-app
  redis-cli -u "\$($BIN/cacheplane env --app my-app | sed -n 's/^REDIS_URL=//p')" ping

Logs: $DEV/logs/. Ctrl-C stops everything.
MSG
# Exit (and clean up) as soon as any daemon dies.
wait -n "${pids[@]}"
echo "dev: a daemon exited; see $DEV/logs/" >&2
exit 1
