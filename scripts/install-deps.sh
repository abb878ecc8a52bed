#!/usr/bin/env bash
# Installs the Debian packages and npm modules the project and its tests use. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PKGS=(erofs-utils containerd runc docker-registry skopeo umoci debootstrap stargz-snapshotter fuse3 iproute2 util-linux e2fsprogs openssl attr apache2-utils busybox-static libfuse2)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
