#!/usr/bin/env bash
# Builds SeaweedFS's weed binary (the real S3-compatible server the
# backupstore tests run against) into .dev/bin/weed from the wrapper module
# in scripts/seaweedfs/, idempotently: skipped when the binary is there and
# was built from the version that module pins. From an empty Go build cache
# this takes minutes (about 7 on 2 vCPUs); run it early, in the background.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
OUT=$PWD/.dev/bin/weed
MOD=scripts/seaweedfs
want=$(awk '$1 == "require" && $2 == "github.com/seaweedfs/seaweedfs" {print $3}' "$MOD/go.mod")
if [ -z "$want" ]; then
  echo "seaweedfs: no version of github.com/seaweedfs/seaweedfs in $MOD/go.mod" >&2
  exit 1
fi
if [ -x "$OUT" ]; then
  have=$("$GO" version -m "$OUT" 2>/dev/null | awk '$1 == "mod" || $1 == "dep" {if ($2 == "github.com/seaweedfs/seaweedfs") print $3}' | head -1)
  if [ "$have" = "$want" ]; then
    echo "seaweedfs: $OUT is $want"
    exit 0
  fi
  echo "seaweedfs: $OUT is ${have:-of an unknown version}, want $want: rebuilding"
fi
mkdir -p "$(dirname "$OUT")"
tmp="$OUT.tmp.$$"
trap 'rm -f "$tmp"' EXIT
echo "seaweedfs: building weed $want into $OUT (minutes from an empty build cache)"
start=$SECONDS
(cd "$MOD" && GOFLAGS=-buildvcs=false "$GO" build -trimpath -o "$tmp" github.com/seaweedfs/seaweedfs/weed)
mv -f "$tmp" "$OUT"
echo "seaweedfs: built in $((SECONDS - start)) s"
