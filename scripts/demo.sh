#!/usr/bin/env bash
# The main job, end to end on a fresh Debian machine (as root):
#   1. installs what it needs (Debian packages, npm modules) and builds;
#   2. starts a local registry (in its own network namespace, behind a 200 Mbit/s link) and a
#      private containerd with containerd-nydus-grpc as its `nydus` proxy snapshotter;
#   3. pushes a Debian/python image and converts it to a nydus image with nydusify;
#   4. runs `python3 -c ...` from it lazily (`./bin/ctr-remote images rpull` + `ctr run --snapshotter nydus`)
#      and prints the time beside the plain OCI run (`ctr images pull` + overlayfs) and the stargz
#      snapshotter's (the image converted to eStargz, bench/stargz-grpc built from Debian's Go source),
#      with where the nydus run's time went.
# Nothing outside temp dirs is touched: the machine's own containerd keeps running as it was.
# Everything it starts (registry, network namespace, containerd, snapshotter, nydusd, mounts) is
# stopped by PID and undone when it ends, fails, or is interrupted with Ctrl-C.
# The first run on a fresh machine takes about 10 minutes: Debian packages and npm modules (~3 min),
# a Debian/python root filesystem by debootstrap (~4 min), the stargz snapshotter's Go build (~2 min),
# conversions and the three runs (~5 min). Later runs reuse what is cached and take about 2 minutes.
# Usage: sudo scripts/demo.sh        (BENCH_RATE_MBIT=N changes the link speed)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "demo: error: run as root (containerd, FUSE and a network namespace need it)" >&2
  exit 1
fi
start=$(date +%s)
echo "demo: installing dependencies (first run on a fresh machine: ~3 minutes)" >&2
bash scripts/install-deps.sh
echo "demo: building" >&2
npm run build >/dev/null
npm run build:bench >/dev/null
node dist-bench/bench/coldstart.js --demo
echo "demo: done in $(( $(date +%s) - start )) s" >&2
