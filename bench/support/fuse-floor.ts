/**
 * The FUSE transport floor for the read benchmark: a filesystem on nydusd's own FUSE session
 * (src/fuse/) with one file whose bytes sit in memory, answering each read with a slice and nothing
 * else (no image, no cache, no digest). Whatever a read through it costs beyond native `cat` is the
 * price of the kernel's FUSE path plus the session's hand-off to JavaScript, which nydusd pays too.
 * Usage: node fuse-floor.js SOURCE_FILE MOUNTPOINT [auto:N|poll:1|pool:N|worker:N] (default auto:2, as nydusd)
 * (prints "mounted", unmounts on SIGTERM).
 *
 * With `--blob-view NAME` instead of the reader argument it is the floor of kernel EROFS mode: the
 * file is called NAME and the session has the blob view's settings (src/daemon/blob-view.ts:
 * direct I/O, async direct reads, 1 MiB READs or more), so an EROFS mount over it with the file as
 * its device costs what nydusd's blob view would cost if every chunk were already at hand.
 */
import * as fs from 'node:fs';
import { Attr, DirEntry, Entry, errno, FuseError, FuseFs, FuseSession, Statfs } from '../../src/fuse/session';
import type { ReaderKind } from '../../src/fuse/readers';
import { blobViewSession } from '../../src/daemon/blob-view';

const [source, mountpoint, readerArg = 'auto:2', viewName] = process.argv.slice(2);
if (!source || !mountpoint || (readerArg === '--blob-view' && !viewName)) {
  process.stderr.write('usage: fuse-floor SOURCE_FILE MOUNTPOINT [auto:N|poll:1|pool:N|worker:N | --blob-view NAME]\n');
  process.exit(2);
}
const blobView = readerArg === '--blob-view';
const name = blobView ? viewName : 'data';
const [kind, n] = readerArg.split(':');
const data = fs.readFileSync(source);
const now = Math.floor(Date.now() / 1000);
// blksize as nydusd reports it (src/daemon/fuse.ts attrOf), so `cat` reads in the same sizes.
const attr = (ino: number, mode: number, size: number, nlink: number): Attr => ({ ino, mode, size, nlink, uid: 0, gid: 0, mtime: now, mtimensec: 0, rdev: 0, blksize: 4096, blocks: Math.ceil(size / 512) });
const root = attr(1, 0o40755, 4096, 2);
const file = attr(2, 0o100444, data.length, 1);
const enoent = () => new FuseError(errno.ENOENT);

const floor: FuseFs = {
  lookup: (parent: number, wanted: string): Entry | undefined => (parent === 1 && wanted === name ? { nodeid: 2, attr: file } : undefined),
  forget: () => undefined,
  getattr: (id: number) => (id === 1 ? root : file),
  readlink: () => {
    throw new FuseError(errno.EINVAL);
  },
  open: () => 1,
  read: async (_id: number, _fh: number, offset: number, size: number) => data.subarray(offset, Math.min(offset + size, data.length)),
  release: () => undefined,
  opendir: () => 1,
  readdir: (): DirEntry[] => [
    { name: '.', ino: 1, type: 4 },
    { name: '..', ino: 1, type: 4 },
    { name, ino: 2, type: 8 },
  ],
  releasedir: () => undefined,
  statfs: (): Statfs => ({ blocks: 0, files: 2, bsize: 4096, namelen: 255 }),
  getxattr: () => {
    throw new FuseError(errno.ENODATA);
  },
  listxattr: () => Buffer.alloc(0),
  access: (id: number) => {
    if (id > 2) throw enoent();
  },
};

// The same kernel-facing settings as nydusd's mounts (day-long caches, 1 MiB reads), or its blob view's.
const session = new FuseSession(
  floor,
  blobView ? { ...blobViewSession(), mountpoint } : { mountpoint, cacheTimeoutS: 86400, readers: { kind: kind as ReaderKind, count: Number(n ?? 1) } },
);
session.mount().then(
  () => process.stdout.write('mounted\n'),
  (e: Error) => {
    process.stderr.write(`fuse-floor: ${e.message}\n`);
    process.exit(1);
  },
);
process.on('SIGTERM', () => void session.unmount().then(() => process.exit(0)));
