#!/usr/bin/env bash
# Installs the Debian packages and npm modules the project and its tests use. Idempotent.
#   --print-packages   print the Debian packages this script installs, one a line, and exit
#                      (test/native-libs.test.ts checks that every system library a native addon
#                      loads comes from one of them or from the minimal Debian system)
set -euo pipefail
cd "$(dirname "$0")/.."
PKGS=(
  erofs-utils containerd runc docker-registry skopeo umoci debootstrap stargz-snapshotter
  fuse3 iproute2 util-linux e2fsprogs openssl attr apache2-utils busybox-static
  # nydusd's kernel EROFS mode calls mount(2) through perl's syscall (essential; listed to say so)
  perl-base
  # containerd's own snapshotter test suite, built offline from Debian's Go source
  golang-go golang-github-containerd-containerd-dev
  # kubectl: parses deploy/kubernetes/ in test/deploy.kubernetes.test.ts
  kubernetes-client
  # a real S3 service for the s3 backend tests (test/helpers/ceph.ts): monitor, memstore OSD, gateway
  ceph-mon ceph-osd radosgw
  # the stargz snapshotter the cold-start benchmark measures beside nydus (bench/stargz-grpc/)
  golang-github-containerd-stargz-snapshotter-dev
)
if [ "${1:-}" = "--print-packages" ]; then printf '%s\n' "${PKGS[@]}"; exit 0; fi
missing=()
for p in "${PKGS[@]}"; do
  # Another package's kubectl (e.g. Google Cloud SDK's) owns /usr/bin/kubectl; Debian's would conflict.
  if [ "$p" = kubernetes-client ] && command -v kubectl >/dev/null; then continue; fi
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing Debian packages (run as root to install them): ${missing[*]}" >&2
    exit 1
  fi
  echo "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "installing npm modules (npm ci; about 2 minutes on a fresh machine)"
  npm ci --no-audit --no-fund
fi
