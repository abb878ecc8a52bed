#!/usr/bin/env bash
# Builds the shared test fixtures once and caches them under $NYDUS_FIXTURES (default
# /var/tmp/nydus-ts-fixtures), where later runs on the same machine find them:
#   debian-rootfs/      a real Debian bookworm root filesystem (debootstrap minbase + python3)
#   debian-rootfs.tar   the same tree as an OCI layer tar (numeric owners, xattrs kept)
#   busybox-rootfs/     a tiny tree with Debian's static busybox and its applet links
# Usage: scripts/fixtures.sh [debian|busybox|all]
set -euo pipefail
FIX="${NYDUS_FIXTURES:-/var/tmp/nydus-ts-fixtures}"
# The Debian archive this machine's apt already uses (deb822 .sources or one-line sources.list), so
# the script names no mirror host of its own; DEBIAN_MIRROR overrides it.
apt_mirror() {
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    uri=$(awk '/^URIs:/ {print $2; exit}' "$f")
    case "$uri" in *security*|"") ;; *) echo "$uri"; return 0 ;; esac
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    uri=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' "$f")
    [ -n "$uri" ] && { echo "$uri"; return 0; }
  done
  return 1
}
MIRROR="${DEBIAN_MIRROR:-$(apt_mirror)}" || { echo "fixtures: no Debian archive found in /etc/apt sources; set DEBIAN_MIRROR" >&2; exit 1; }
mkdir -p "$FIX"
what="${1:-all}"

debian() {
  if [ -f "$FIX/debian-rootfs.tar" ]; then return 0; fi
  command -v debootstrap >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
  local tmp="$FIX/debian-rootfs.partial"
  rm -rf "$tmp"
  echo "fixtures: debootstrap bookworm (minbase + python3) into $tmp; this takes a few minutes" >&2
  debootstrap --variant=minbase --include=python3,python3-pip,perl --components=main bookworm "$tmp" "$MIRROR" >"$FIX/debootstrap.log" 2>&1 \
    || { tail -20 "$FIX/debootstrap.log" >&2; exit 1; }
  # Drop what only the debootstrap run needed: apt lists, caches and logs.
  rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/* "$tmp"/var/log/* "$tmp"/dev/*
  rm -rf "$FIX/debian-rootfs"
  mv "$tmp" "$FIX/debian-rootfs"
  tar --numeric-owner --xattrs --xattrs-include='*' -C "$FIX/debian-rootfs" -cf "$FIX/debian-rootfs.tar.partial" .
  mv "$FIX/debian-rootfs.tar.partial" "$FIX/debian-rootfs.tar"
  echo "fixtures: $(du -sh "$FIX/debian-rootfs" | cut -f1) Debian tree ready" >&2
}

busybox() {
  if [ -x "$FIX/busybox-rootfs/bin/busybox" ]; then return 0; fi
  [ -x /bin/busybox ] || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null; }
  local tmp="$FIX/busybox-rootfs.partial"
  rm -rf "$tmp"; mkdir -p "$tmp"/{bin,etc,tmp,proc,sys,dev,root}
  cp /bin/busybox "$tmp/bin/busybox"
  for a in sh ls cat echo true false sleep ps mkdir rm cp mv wc head tail sha256sum find stat id env uname; do ln -s busybox "$tmp/bin/$a"; done
  echo 'root:x:0:0:root:/root:/bin/sh' > "$tmp/etc/passwd"
  echo 'root:x:0:' > "$tmp/etc/group"
  rm -rf "$FIX/busybox-rootfs"; mv "$tmp" "$FIX/busybox-rootfs"
}

case "$what" in
  debian) debian ;;
  busybox) busybox ;;
  all) busybox; debian ;;
  *) echo "usage: $0 [debian|busybox|all]" >&2; exit 2 ;;
esac
