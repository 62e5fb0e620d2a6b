#!/usr/bin/env bash
# Re-vendors uPlot from npm (npm pack: the registry npm is configured
# with), checking the tarball's SHA-256 against the one recorded in
# uplot/VERSION, so the committed files are exactly the package's. Run it
# by hand to update (then change VERSION); builds never need npm.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)/assets/vendor
version=${1:-$(awk 'NR==1{print $2}' "$here/uplot/VERSION")}
want=${2:-$(awk '/sha256/{print $4}' "$here/uplot/VERSION")}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack "uplot@$version" --loglevel=error >/dev/null)
got=$(sha256sum "$tmp/uplot-$version.tgz" | awk '{print $1}')
if [ "$got" != "$want" ]; then
  echo "uplot-$version.tgz: sha256 $got, want $want" >&2
  exit 1
fi
tar -xzf "$tmp/uplot-$version.tgz" -C "$tmp"
cp "$tmp/package/dist/uPlot.iife.min.js" "$tmp/package/dist/uPlot.min.css" "$tmp/package/LICENSE" "$here/uplot/"
echo "uplot $version vendored"
