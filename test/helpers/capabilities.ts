/**
 * What this machine can do for the tests, probed rather than assumed from the uid.
 *
 * Contract: a test or suite that needs a capability is declared with `describeWith`/`testWith`
 * and the list of capabilities it needs. When every one probes true it runs as usual; otherwise it
 * is skipped and its title gains `[skipped: needs X, Y]`, which scripts/test.sh lists under its
 * `N passed, N failed, N skipped` line. Probes run once per test file and never throw.
 *
 *   describeWith(['root', 'fuse'], 'nydusd over FUSE', () => { ... });
 *   testWith(['root', 'erofs', 'loop'], 'the kernel mounts it', () => { ... });
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';

export type Capability = 'root' | 'fuse' | 'erofs' | 'loop' | 'containerd' | 'netns' | 'go-containerd' | 'kubectl' | 'ceph';

function onPath(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

function openable(dev: string): boolean {
  try {
    fs.closeSync(fs.openSync(dev, fs.constants.O_RDWR));
    return true;
  } catch {
    return false;
  }
}

function erofsRegistered(): boolean {
  return /\terofs$/m.test(fs.readFileSync('/proc/filesystems', 'utf8'));
}

const PROBES: Record<Capability, () => boolean> = {
  root: () => typeof process.getuid === 'function' && process.getuid() === 0,
  // /dev/fuse opens read-write (nydusd speaks FUSE itself) and mount(8) is there to mount it
  fuse: () => openable('/dev/fuse') && onPath('mount'),
  // the kernel knows EROFS, loading the module when it is one (root only)
  erofs: () => erofsRegistered() || (spawnSync('modprobe', ['erofs'], { stdio: 'ignore' }).status === 0 && erofsRegistered()),
  loop: () => openable('/dev/loop-control') && onPath('losetup'),
  containerd: () => ['containerd', 'runc', 'ctr'].every(onPath),
  netns: () => onPath('ip') && onPath('unshare'),
  // Go and containerd's Go source (its snapshotter test suite), from Debian's packages
  'go-containerd': () => onPath('go') && fs.existsSync('/usr/share/gocode/src/github.com/containerd/containerd/snapshots/testsuite'),
  // kubectl (Debian's kubernetes-client, or any other) answers for its client version
  kubectl: () => spawnSync('kubectl', ['version', '--client'], { stdio: 'ignore', timeout: 30_000 }).status === 0,
  // Ceph's S3 gateway and what test/helpers/ceph.ts needs to start it (monitor, OSD, admin tools)
  ceph: () => ['ceph-mon', 'ceph-osd', 'radosgw', 'radosgw-admin', 'monmaptool', 'ceph'].every(onPath),
};

const probed = new Map<Capability, boolean>();

export function has(cap: Capability): boolean {
  if (!probed.has(cap)) {
    let ok = false;
    try {
      ok = PROBES[cap]();
    } catch {
      ok = false;
    }
    probed.set(cap, ok);
  }
  return probed.get(cap)!;
}

/** The capabilities of `caps` this machine lacks (empty: all there). */
export function missing(caps: readonly Capability[]): Capability[] {
  return caps.filter((c) => !has(c));
}

function skipTitle(title: string, lacking: Capability[]): string {
  return `${title} [skipped: needs ${lacking.join(', ')}]`;
}

export function describeWith(caps: readonly Capability[], title: string, fn: () => void): void {
  const lacking = missing(caps);
  if (lacking.length === 0) describe(title, fn);
  else describe.skip(skipTitle(title, lacking), fn);
}

export function testWith(caps: readonly Capability[], title: string, fn: jest.ProvidesCallback, timeout?: number): void {
  const lacking = missing(caps);
  if (lacking.length === 0) test(title, fn, timeout);
  else test.skip(skipTitle(title, lacking), fn, timeout);
}
