/**
 * Mounts for VM runtimes (Kata) and the `nydus-overlayfs` mount helper, as upstream's
 * `[snapshot] enable_nydus_overlayfs` makes them.
 *
 * A container rootfs over a nydus image is answered as ONE mount of type `fuse.nydus-overlayfs`
 * (or `fuse.<nydus_overlayfs_path>`), source `overlay`, with the usual overlay options plus
 *
 *   extraoption=<base64(JSON {"source": bootstrap path, "config": nydusd JSON as a string,
 *                             "snapshotdir": <root>/snapshots/<id>, "fs_version": "v5"|"v6"})>
 *
 * A Kata runtime reads that option and mounts the image inside the guest; on the host, containerd
 * sees the `fuse.` type and runs `mount.fuse overlay <target> -o <options> -t nydus-overlayfs`,
 * which runs `nydus-overlayfs`, which drops the nydus options and mounts a plain overlay (runc
 * needs nothing else). `io.katacontainers.volume=` options are dropped the same way.
 *
 * Differences from upstream, on purpose: mount options travel in process arguments (mount.fuse,
 * the helper) and are printed by `ctr snapshots mounts`, so registry credentials are removed from
 * the config put in `extraoption` (a guest gets them another way).
 */
import * as fs from 'node:fs';
import type { Mount } from './snapshotter';

export const EXTRA_OPTION_KEY = 'extraoption=';
/** Kata's virtual volume option (upstream `KataVirtualVolumeOptionName`). */
export const KATA_VOLUME_KEY = 'io.katacontainers.volume=';
/** Upstream's mount source for these mounts (`KataVirtualVolumeDefaultSource`). */
export const NYDUS_OVERLAY_SOURCE = 'overlay';

/** The JSON inside `extraoption=` (upstream `ExtraOption`; the field names are the contract). */
export interface ExtraOption {
  source: string;
  config: string;
  snapshotdir: string;
  fs_version: 'v5' | 'v6';
}

const RAFS_V5_MAGIC = 0x52414653;
const RAFS_V5_VERSION = 0x500;
const RAFS_V6_MAGIC_OFFSET = 1024;
const RAFS_V6_MAGIC = 0xe0f5e1e2;
/** Upstream reads this much of the bootstrap to tell v5 from v6 (v6 superblock ends at 1408). */
const HEADER_BYTES = 4096;

/** "v5" or "v6" from the bootstrap's first bytes; throws naming the file when it is neither. */
export function detectFsVersion(bootstrap: string): 'v5' | 'v6' {
  const buf = Buffer.alloc(HEADER_BYTES);
  const fd = fs.openSync(bootstrap, 'r');
  let n: number;
  try {
    n = fs.readSync(fd, buf, 0, buf.length, 0);
  } finally {
    fs.closeSync(fd);
  }
  if (n >= 8 && buf.readUInt32LE(0) === RAFS_V5_MAGIC && buf.readUInt32LE(4) === RAFS_V5_VERSION) return 'v5';
  if (n >= RAFS_V6_MAGIC_OFFSET + 4 && buf.readUInt32LE(RAFS_V6_MAGIC_OFFSET) === RAFS_V6_MAGIC) return 'v6';
  throw new Error(`${bootstrap}: not a RAFS v5 or v6 bootstrap (unknown file system header)`);
}

/** Keys of nydusd backend configs that hold secrets (registry, OSS, S3). */
const SECRET_KEYS = new Set(['auth', 'registry_token', 'access_key_id', 'access_key_secret', 'secret_access_key', 'session_token', 'password']);

/** A deep copy of a nydusd config without credentials (and without Authorization headers). */
export function withoutSecrets(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(withoutSecrets);
  if (typeof v !== 'object' || v === null) return v;
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) {
    if (SECRET_KEYS.has(k) || k.toLowerCase() === 'authorization') continue;
    out[k] = withoutSecrets(x);
  }
  return out;
}

export function encodeExtraOption(o: ExtraOption): string {
  return EXTRA_OPTION_KEY + Buffer.from(JSON.stringify(o)).toString('base64');
}

/** The ExtraOption in one `extraoption=…` mount option; throws on anything else. */
export function decodeExtraOption(opt: string): ExtraOption {
  if (!opt.startsWith(EXTRA_OPTION_KEY)) throw new Error(`not an ${EXTRA_OPTION_KEY} option`);
  return JSON.parse(Buffer.from(opt.slice(EXTRA_OPTION_KEY.length), 'base64').toString('utf8')) as ExtraOption;
}

/** Whether a mount option is for the VM runtime only (the helper drops it before mounting). */
export function isNydusOnlyOption(opt: string): boolean {
  return opt.startsWith(EXTRA_OPTION_KEY) || opt.startsWith(KATA_VOLUME_KEY);
}

/**
 * The `fuse.<helper>` mount for an overlay over a rafs instance. `helper` is upstream's
 * `nydus_overlayfs_path`: a name looked up in PATH by mount.fuse, or an absolute path.
 */
export function nydusOverlayMount(overlayOptions: string[], extra: ExtraOption, helper: string): Mount {
  return { type: `fuse.${helper}`, source: NYDUS_OVERLAY_SOURCE, options: [...overlayOptions, encodeExtraOption(extra)] };
}

/**
 * What the `[snapshot]` keys ask for, with upstream's precedence: `enable_kata_volume` comes first,
 * and upstream then adds a Kata volume only for proxy-mode and tarfs images (otherwise a plain
 * overlay, even with `enable_nydus_overlayfs`). This snapshotter serves neither kind, so that key
 * means plain overlay mounts, and a warning says so.
 */
export function vmMountMode(s: { enableNydusOverlayfs: boolean; nydusOverlayfsPath: string; enableKataVolume: boolean }): { nydusOverlayfs?: { helper: string }; warning?: string } {
  if (s.enableKataVolume) {
    return { warning: 'enable_kata_volume: Kata volumes are made for proxy-mode and tarfs images only, which this snapshotter does not serve; rootfs mounts stay plain overlay' };
  }
  return s.enableNydusOverlayfs ? { nydusOverlayfs: { helper: s.nydusOverlayfsPath } } : {};
}
