/**
 * Tree snapshots for builder tests: everything acceptance compares (type, mode, owner, size,
 * content digest, link target, rdev, xattrs, hard-link grouping) for every path under a root, so
 * two trees (a kernel mount and a reference extraction) can be compared with one toEqual.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export interface NodeSnapshot {
  type: string;
  mode: string;
  owner: string;
  size?: number;
  sha256?: string;
  target?: string;
  rdev?: string;
  xattrs?: Record<string, string>;
  /** For multiply-linked non-directories: the first path (sorted order) of the group. */
  linkGroup?: string;
}

/** `maxHashBytes`: files larger than this get no content digest (huge sparse test files). */
export function snapshotTree(root: string, opts: { skipRootAttrs?: boolean; maxHashBytes?: number } = {}): Record<string, NodeSnapshot> {
  const xattrs = readXattrs(root);
  const out: Record<string, NodeSnapshot> = {};
  const groups = new Map<string, string>();
  const visit = (rel: string): void => {
    const abs = rel === '/' ? root : path.join(root, rel);
    const st = fs.lstatSync(abs, { bigint: true });
    const mode = Number(st.mode);
    const snap: NodeSnapshot = { type: typeOf(mode), mode: (mode & 0o7777).toString(8), owner: `${st.uid}:${st.gid}` };
    if (st.isFile()) {
      snap.size = Number(st.size);
      if (st.size <= BigInt(opts.maxHashBytes ?? Number.MAX_SAFE_INTEGER)) snap.sha256 = hashFile(abs);
    }
    if (st.isSymbolicLink()) snap.target = fs.readlinkSync(abs);
    if (st.isCharacterDevice() || st.isBlockDevice()) snap.rdev = st.rdev.toString(16);
    const x = xattrs.get(rel);
    if (x && Object.keys(x).length) snap.xattrs = x;
    if (!st.isDirectory() && st.nlink > 1n) {
      const key = `${st.dev}:${st.ino}`;
      if (!groups.has(key)) groups.set(key, rel);
      snap.linkGroup = groups.get(key);
    }
    if (rel === '/' && opts.skipRootAttrs) out[rel] = { type: snap.type, mode: '-', owner: '-' };
    else out[rel] = snap;
    if (st.isDirectory()) {
      for (const name of fs.readdirSync(abs).sort()) visit(rel === '/' ? `/${name}` : `${rel}/${name}`);
    }
  };
  visit('/');
  return out;
}

function typeOf(mode: number): string {
  switch (mode & 0o170000) {
    case 0o100000: return 'file';
    case 0o040000: return 'dir';
    case 0o120000: return 'symlink';
    case 0o020000: return 'chardev';
    case 0o060000: return 'blockdev';
    case 0o010000: return 'fifo';
    case 0o140000: return 'socket';
    default: return `unknown:${mode.toString(8)}`;
  }
}

function hashFile(file: string): string {
  const h = createHash('sha256');
  const fd = fs.openSync(file, 'r');
  const buf = Buffer.allocUnsafe(1 << 20);
  try {
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
    }
  } finally {
    fs.closeSync(fd);
  }
  return h.digest('hex');
}

/** rel path -> xattrs (hex values), via one getfattr run. */
function readXattrs(root: string): Map<string, Record<string, string>> {
  const res = spawnSync('getfattr', ['-R', '-P', '-h', '-d', '-m', '-', '-e', 'hex', '--absolute-names', root], { maxBuffer: 1 << 28 });
  if (res.error) throw res.error;
  const out = new Map<string, Record<string, string>>();
  let cur: Record<string, string> | null = null;
  const abs = path.resolve(root);
  for (const line of res.stdout.toString('latin1').split('\n')) {
    if (line.startsWith('# file: ')) {
      const p = unescape(line.slice(8));
      const rel = p === abs ? '/' : p.slice(abs.length);
      cur = {};
      out.set(rel, cur);
    } else if (cur && line.includes('=')) {
      const i = line.indexOf('=');
      cur[line.slice(0, i)] = line.slice(i + 1);
    }
  }
  return out;
}

function unescape(s: string): string {
  const bytes: number[] = [];
  for (let i = 0; i < s.length; i++) {
    if (s[i] === '\\' && /^[0-7]{3}$/.test(s.slice(i + 1, i + 4))) {
      bytes.push(parseInt(s.slice(i + 1, i + 4), 8));
      i += 3;
    } else if (s[i] === '\\' && s[i + 1] === '\\') {
      bytes.push(0x5c);
      i++;
    } else bytes.push(s.charCodeAt(i) & 0xff);
  }
  return Buffer.from(bytes).toString('utf8');
}

/** A mounted image: the bootstrap through a loop device, every blob as a read-only loop device. */
export interface KernelMount {
  dir: string;
  release(): void;
}

export function mountErofs(bootstrap: string, blobs: string[]): KernelMount {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nydus-mnt-'));
  const loops: string[] = [];
  let mounted = false;
  const release = (): void => {
    if (mounted) spawnSync('umount', [dir]);
    mounted = false;
    for (const l of loops.splice(0)) spawnSync('losetup', ['-d', l]);
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (const b of blobs) loops.push(execFileSync('losetup', ['-f', '--show', '-r', b]).toString().trim());
    const opts = ['ro', 'loop', ...loops.map((l) => `device=${l}`)].join(',');
    execFileSync('mount', ['-t', 'erofs', '-o', opts, bootstrap, dir], { stdio: ['ignore', 'ignore', 'pipe'] });
    mounted = true;
  } catch (err) {
    release();
    throw err;
  }
  return { dir, release };
}

/** Runs fsck.erofs with the blobs as devices; returns its exit status and output. */
export function fsckErofs(bootstrap: string, blobs: string[]): { status: number | null; output: string } {
  const res = spawnSync('fsck.erofs', [...blobs.map((b) => `--device=${b}`), bootstrap], { encoding: 'utf8' });
  return { status: res.status, output: `${res.stdout}${res.stderr}` };
}

/** Extracts a tar with GNU tar as root does (owners, modes, devices, xattrs, sparse files). */
export function gnuExtract(tarFile: string, into: string): void {
  fs.mkdirSync(into, { recursive: true });
  execFileSync('tar', ['--xattrs', "--xattrs-include=*", '--numeric-owner', '--same-owner', '-xpf', tarFile, '-C', into], { stdio: ['ignore', 'ignore', 'pipe'] });
}
