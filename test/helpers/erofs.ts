/**
 * Test helpers around the kernel's EROFS: run fsck.erofs on a bootstrap with its blob devices,
 * loop-mount a bootstrap with every blob as a device, and snapshot/compare directory trees.
 *
 *   const m = mountRafs(bootstrapPath, [blobPath]);       // needs root
 *   try { expect(compareTrees(snapshotTree(srcDir), snapshotTree(m.dir))).toEqual([]); }
 *   finally { m.unmount(); }
 *
 * Blobs must be uncompressed (`--compressor none`) and a multiple of 512 bytes long (a loop device
 * drops a shorter tail); `padBlob` pads a blob file to 4 KiB in place.
 */
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

/** Result of fsck.erofs: ok when it exited 0; output is stdout+stderr for the failure message. */
export function fsckErofs(bootstrap: string, blobs: string[], timeoutMs = 300_000): { ok: boolean; output: string } {
  const args = [...blobs.map((b) => `--device=${b}`), bootstrap];
  const r = spawnSync('fsck.erofs', args, { encoding: 'utf8', timeout: timeoutMs });
  return { ok: r.status === 0, output: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? String(r.error) : ''}` };
}

export interface Mounted {
  /** The mountpoint (a fresh temp dir). */
  dir: string;
  /** Loop devices attached for the blobs and the bootstrap. */
  loops: string[];
  /** Unmounts, detaches the loop devices and removes the mountpoint; safe to call twice. */
  unmount(): void;
}

function attachLoop(file: string): string {
  return execFileSync('losetup', ['--find', '--show', '--read-only', file], { encoding: 'utf8', timeout: 30_000 }).trim();
}

function detachLoop(dev: string): void {
  spawnSync('losetup', ['-d', dev], { timeout: 30_000 });
}

/**
 * Mounts `bootstrap` read-only with the kernel's EROFS, each blob attached to a loop device and
 * passed as `-o device=` in blob-table order. Throws (after cleaning up) if the mount fails.
 * With no blobs it mounts the bootstrap alone (file data is then unreadable, metadata is not).
 */
export function mountRafs(bootstrap: string, blobs: string[]): Mounted {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rafs-mnt-'));
  const loops: string[] = [];
  let mounted = false;
  const unmount = (): void => {
    if (mounted) {
      spawnSync('umount', [dir], { timeout: 60_000 });
      mounted = false;
    }
    for (const l of loops.splice(0)) detachLoop(l);
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (const b of blobs) loops.push(attachLoop(b));
    const boot = attachLoop(bootstrap);
    loops.push(boot);
    const opts = ['ro', ...loops.slice(0, blobs.length).map((l) => `device=${l}`)].join(',');
    const r = spawnSync('mount', ['-t', 'erofs', '-o', opts, boot, dir], { encoding: 'utf8', timeout: 60_000 });
    if (r.status !== 0) {
      const dmesg = spawnSync('dmesg', [], { encoding: 'utf8' }).stdout?.split('\n').filter((l) => /erofs/i.test(l)).slice(-5).join('\n');
      throw new Error(`mount -t erofs failed: ${r.stderr?.trim()} ${dmesg ?? ''}`);
    }
    mounted = true;
  } catch (e) {
    unmount();
    throw e;
  }
  return { dir, loops, unmount };
}

/** Pads a file with zeros to a multiple of 4096 bytes (what a loop device can expose whole). */
export function padBlob(file: string): void {
  const size = fs.statSync(file).size;
  const padded = Math.ceil(size / 4096) * 4096;
  if (padded !== size) fs.truncateSync(file, padded);
}

export interface EntryInfo {
  type: 'file' | 'dir' | 'symlink' | 'chardev' | 'blockdev' | 'fifo' | 'socket';
  /** Permission bits incl. setuid/setgid/sticky. */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** `seconds.nanoseconds` (a string: nanoseconds since the epoch exceed 2^53) */
  mtime: string;
  rdev: number;
  target?: string;
  /** name -> hex value */
  xattrs: Record<string, string>;
  /** sha256 hex of the content (regular files), or of sampled ranges for files over the limit */
  sha256?: string;
  /** Every path sharing this (non-directory) inode, sorted; absent when nlink is 1. */
  links?: string[];
}

export type TreeSnapshot = Map<string, EntryInfo>;

const SNAPSHOT_PY = String.raw`
import os, sys, stat, json, hashlib
root, limit = sys.argv[1], int(sys.argv[2])
out, inodes = {}, {}
def digest(p, size):
    h = hashlib.sha256()
    with open(p, 'rb') as f:
        if size <= limit:
            while True:
                b = f.read(1 << 20)
                if not b: break
                h.update(b)
        else:
            # sampled: 1 MiB at 16 evenly spaced offsets plus the last MiB
            for i in range(17):
                off = size - (1 << 20) if i == 16 else (size // 16) * i
                f.seek(max(0, off)); h.update(f.read(1 << 20))
    return h.hexdigest()
def visit(rel, p):
    st = os.lstat(p)
    m = st.st_mode
    t = ('dir' if stat.S_ISDIR(m) else 'file' if stat.S_ISREG(m) else 'symlink' if stat.S_ISLNK(m) else
         'chardev' if stat.S_ISCHR(m) else 'blockdev' if stat.S_ISBLK(m) else 'fifo' if stat.S_ISFIFO(m) else 'socket')
    e = {'type': t, 'mode': stat.S_IMODE(m), 'uid': st.st_uid, 'gid': st.st_gid, 'size': st.st_size,
         'mtime': '%d.%09d' % divmod(st.st_mtime_ns, 10**9), 'rdev': st.st_rdev, 'xattrs': {}}
    try:
        for n in sorted(os.listxattr(p, follow_symlinks=False)):
            e['xattrs'][n] = os.getxattr(p, n, follow_symlinks=False).hex()
    except OSError:
        pass
    if t == 'symlink': e['target'] = os.readlink(p)
    if t == 'file' and limit >= 0: e['sha256'] = digest(p, st.st_size)
    if t != 'dir' and st.st_nlink > 1: inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
    out[rel] = e
    if t == 'dir':
        for n in sorted(os.listdir(p)):
            visit(rel.rstrip('/') + '/' + n, os.path.join(p, n))
visit('/', root)
for paths in inodes.values():
    for q in paths: out[q]['links'] = sorted(paths)
json.dump(out, sys.stdout)
`;

/**
 * Reads a whole tree: type, mode, owner, size, mtime (ns), rdev, link target, xattrs, content
 * digest and hard-link groups, keyed by absolute path inside the tree (`/` is the root).
 * Files larger than `contentLimit` bytes are digested by samples so huge sparse files stay cheap;
 * a negative limit skips contents (for a bootstrap mounted without its blobs).
 */
export function snapshotTree(root: string, contentLimit = 256 << 20): TreeSnapshot {
  const json = execFileSync('python3', ['-c', SNAPSHOT_PY, root, String(contentLimit)], {
    encoding: 'utf8',
    maxBuffer: 1 << 30,
    timeout: 20 * 60_000,
  });
  return new Map(Object.entries(JSON.parse(json) as Record<string, EntryInfo>));
}

/**
 * `snapshotTree` without blocking this process: for trees whose bytes come through a server that
 * runs in this process (a test registry's recording front feeding nydusd).
 */
export async function snapshotTreeAsync(root: string, contentLimit = 256 << 20): Promise<TreeSnapshot> {
  const { stdout } = await promisify(execFile)('python3', ['-c', SNAPSHOT_PY, root, String(contentLimit)], {
    encoding: 'utf8',
    maxBuffer: 1 << 30,
    timeout: 20 * 60_000,
  });
  return new Map(Object.entries(JSON.parse(stdout) as Record<string, EntryInfo>));
}

export interface CompareOptions {
  /** Compare mtimes (seconds and nanoseconds); off by default. */
  mtime?: boolean;
  /** Paths to leave out of the comparison (on both sides). */
  ignore?: (path: string) => boolean;
}

/**
 * Differences between two snapshots as readable lines; [] when equal. Directory sizes are not
 * compared (they depend on the filesystem), everything else in EntryInfo is.
 */
export function compareTrees(expected: TreeSnapshot, actual: TreeSnapshot, opts: CompareOptions = {}): string[] {
  const diffs: string[] = [];
  const skip = opts.ignore ?? (() => false);
  for (const [p, e] of expected) {
    if (skip(p)) continue;
    const a = actual.get(p);
    if (!a) {
      diffs.push(`${p}: missing`);
      continue;
    }
    const fields: Array<keyof EntryInfo> = ['type', 'mode', 'uid', 'gid', 'target', 'sha256'];
    if (e.type !== 'dir') fields.push('size');
    if (e.type === 'chardev' || e.type === 'blockdev') fields.push('rdev');
    if (opts.mtime) fields.push('mtime');
    for (const f of fields) {
      if (e[f] !== a[f]) diffs.push(`${p}: ${f} ${JSON.stringify(e[f])} != ${JSON.stringify(a[f])}`);
    }
    if (JSON.stringify(e.xattrs) !== JSON.stringify(a.xattrs)) diffs.push(`${p}: xattrs ${JSON.stringify(e.xattrs)} != ${JSON.stringify(a.xattrs)}`);
    const el = (e.links ?? []).filter((x) => !skip(x));
    const al = (a.links ?? []).filter((x) => !skip(x));
    if (JSON.stringify(el) !== JSON.stringify(al)) diffs.push(`${p}: hard links ${JSON.stringify(el)} != ${JSON.stringify(al)}`);
  }
  for (const p of actual.keys()) if (!skip(p) && !expected.has(p)) diffs.push(`${p}: unexpected`);
  return diffs;
}
