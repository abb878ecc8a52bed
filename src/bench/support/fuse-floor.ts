/**
 * The FUSE transport floor for the read benchmark: a fuse-native filesystem with one file whose
 * bytes sit in memory, answering each read with a single copy and nothing else (no lookup tables,
 * no cache, no digest). Whatever a read through it costs beyond native `cat` is the price of the
 * kernel's FUSE path plus fuse-native's hand-off to JavaScript, which nydusd pays too.
 * Usage: node fuse-floor.js SOURCE_FILE MOUNTPOINT (prints "mounted", unmounts on SIGTERM).
 */
import * as fs from 'node:fs';
import Fuse from 'fuse-native';

const [source, mountpoint] = process.argv.slice(2);
if (!source || !mountpoint) {
  process.stderr.write('usage: fuse-floor SOURCE_FILE MOUNTPOINT\n');
  process.exit(2);
}
const data = fs.readFileSync(source);
const name = '/data';
const now = new Date();
// blksize as nydusd reports it (src/daemon/fuse.ts statOf), so `cat` reads in the same sizes.
const attr = (mode: number, size: number, nlink: number) => ({ mode, size, nlink, uid: 0, gid: 0, mtime: now, atime: now, ctime: now, blksize: 4096 });
type Cb = (err: number, value?: unknown) => void;

const ops = {
  getattr: (p: string, cb: Cb) => (p === '/' ? cb(0, attr(0o40755, 4096, 2)) : p === name ? cb(0, attr(0o100444, data.length, 1)) : cb(Fuse.ENOENT)),
  readdir: (_p: string, cb: Cb) => cb(0, [name.slice(1)]),
  open: (_p: string, _flags: number, cb: Cb) => cb(0, 1),
  release: (_p: string, _fd: number, cb: Cb) => cb(0),
  read: (_p: string, _fd: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void) => cb(data.copy(buf, 0, pos, Math.min(pos + len, data.length))),
};

// The same kernel-facing options as nydusd's mounts (kernel_cache, long timeouts).
const fuse = new Fuse(mountpoint, ops as unknown as Fuse.OPERATIONS, { force: true, mkdir: true, kernelCache: true, entryTimeout: 86400, attrTimeout: 86400 } as Fuse.OPTIONS);
fuse.mount((err?: Error | null) => {
  if (err) {
    process.stderr.write(`fuse-floor: mount ${mountpoint}: ${err.message}\n`);
    process.exit(1);
  }
  process.stdout.write('mounted\n');
});
process.on('SIGTERM', () => fuse.unmount(() => process.exit(0)));
