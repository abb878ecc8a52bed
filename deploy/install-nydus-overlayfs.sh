#!/usr/bin/env bash
# Installs the nydus-overlayfs mount helper where containerd 1.6 finds it, for snapshotters run
# with `[snapshot] enable_nydus_overlayfs = true` (docs/snapshotter.md, "VM runtimes").
#
# containerd mounts a `fuse.nydus-overlayfs` mount by running `mount.fuse overlay <target> -o …
# -t nydus-overlayfs`; mount.fuse (Debian package fuse3) runs `nydus-overlayfs` from PATH. So the
# helper goes into PATH, and util-linux `mount -t fuse.nydus-overlayfs` gets the same through
# /sbin/mount.fuse.nydus-overlayfs.
#
#   sudo deploy/install-nydus-overlayfs.sh [CHECKOUT (default: this one)] [PREFIX (default: /usr/local)]
#   sudo deploy/install-nydus-overlayfs.sh --uninstall [CHECKOUT] [PREFIX]
set -euo pipefail
uninstall=false
if [ "${1:-}" = "--uninstall" ]; then uninstall=true; shift; fi
checkout="$(cd "${1:-$(dirname "$0")/..}" && pwd)"
prefix="${2:-/usr/local}"
link="$prefix/bin/nydus-overlayfs"

if $uninstall; then
  # Only what this script made: a link to this checkout's helper.
  [ "$(readlink "$link" 2>/dev/null)" = "$checkout/bin/nydus-overlayfs" ] && rm -f "$link"
  exit 0
fi
[ -x "$checkout/bin/nydus-overlayfs" ] || { echo "install-nydus-overlayfs: $checkout/bin/nydus-overlayfs is missing" >&2; exit 1; }
[ -f "$checkout/dist/cli/nydus-overlayfs.js" ] || { echo "install-nydus-overlayfs: run 'npm run build' in $checkout first" >&2; exit 1; }
command -v mount.fuse >/dev/null || command -v mount.fuse3 >/dev/null || {
  echo "install-nydus-overlayfs: mount.fuse is missing (containerd runs it for fuse.* mounts): apt-get install fuse3" >&2
  exit 1
}
mkdir -p "$prefix/bin"
ln -sfn "$checkout/bin/nydus-overlayfs" "$link"
echo "installed $link -> $checkout/bin/nydus-overlayfs"
echo "now set [snapshot] enable_nydus_overlayfs = true in the snapshotter's config.toml and restart it"
