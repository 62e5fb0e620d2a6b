#!/usr/bin/env bash
# Makes sure a containerd daemon answers on its socket: a service manager's
# if there is one, else one started here in the background (logs in
# /var/log/cacheplane-containerd.log). Idempotent.
set -euo pipefail
SOCK=${CONTAINERD_SOCKET:-/run/containerd/containerd.sock}
ok() { ctr --address "$SOCK" version >/dev/null 2>&1; }
if ok; then echo "containerd: running ($SOCK)"; exit 0; fi
if [ "$(id -u)" != 0 ]; then echo "containerd: not running and not root: start it with 'sudo containerd &'" >&2; exit 1; fi
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl start containerd || true
fi
if ! ok; then
  mkdir -p /var/log
  setsid nohup containerd >>/var/log/cacheplane-containerd.log 2>&1 < /dev/null &
fi
for _ in $(seq 1 100); do ok && { echo "containerd: started ($SOCK)"; exit 0; }; sleep 0.1; done
echo "containerd: did not answer on $SOCK within 10 s; see /var/log/cacheplane-containerd.log" >&2
exit 1
