/**
 * The FUSE face of a rafs instance, on fuse-native (libfuse 2, path based). Read-only; the image is
 * immutable, so the kernel is told to keep entries, attributes and pages for a day (`kernel_cache`,
 * long entry/attr timeouts): a second read of a file never reaches this process. Inode numbers are
 * the image's (`use_ino`), so hard links share one.
 */
import type Fuse from 'fuse-native';
import { constants } from 'node:os';
import type { Inode, InodeKind } from '../format/model';
import { RafsInstance } from './rafs';
import { ChunkFetchError } from '../fetch/pipeline';
import { logger } from '../util/log';

const log = logger('fuse');

const S_IF: Record<InodeKind, number> = {
  file: 0o100000,
  dir: 0o040000,
  symlink: 0o120000,
  chardev: 0o020000,
  blockdev: 0o060000,
  fifo: 0o010000,
  socket: 0o140000,
};

/** One day: the image never changes under a mount. */
const CACHE_TIMEOUT_S = 86400;
/** fuse-native answers ETIMEDOUT after this; sources bound their own attempts well below it. */
const OP_TIMEOUT_MS = 300_000;

type Cb<T = void> = (err: number, value?: T) => void;

/** fuse-native takes errors as negative errno values. */
const E = Object.fromEntries(
  (['ENOENT', 'ENOTDIR', 'EROFS', 'EIO', 'EINVAL'] as const).map((n) => [n, -constants.errno[n]]),
) as Record<'ENOENT' | 'ENOTDIR' | 'EROFS' | 'EIO' | 'EINVAL', number>;

let fuseNative: typeof Fuse | undefined;
/** Libraries fuse-native's addon links, and the Debian package of each. */
const SYSTEM_LIBS: Record<string, string> = { 'libfuse.so.2': 'libfuse2' };

/**
 * fuse-native, loaded on the first mount: its addon links libfuse.so.2, and `nydusd --help`, config
 * checks and an API-only start must work on a machine without it. A missing library is one line
 * naming it and the package that provides it.
 */
export function loadFuseNative(): typeof Fuse {
  if (fuseNative) return fuseNative;
  try {
    fuseNative = require('fuse-native') as typeof Fuse;
  } catch (e) {
    const first = (e as Error).message.split('\n')[0];
    // dlopen's words: "libfuse.so.2: cannot open shared object file: ...", "...: file too short"
    const m = /(lib[\w+-]+\.so[\w.]*): (.*)$/.exec(first);
    if (m) {
      const pkg = SYSTEM_LIBS[m[1]] ? `the Debian package ${SYSTEM_LIBS[m[1]]}` : 'the package that provides it';
      throw new Error(`FUSE transport unavailable: ${m[1]} cannot be loaded (${m[2]}); install ${pkg} (scripts/install-deps.sh does)`);
    }
    throw new Error(`FUSE transport unavailable: fuse-native failed to load: ${first}`);
  }
  return fuseNative;
}

/** A FUSE request not answered yet, as upstream's `GET /api/v1/metrics/inflight` lists it. */
export interface InflightOp {
  inode: number;
  opcode: number;
  /** This daemon's request counter (fuse-native does not expose the kernel's `unique`). */
  unique: number;
  timestamp_secs: number;
}

/** FUSE_READ: the only operation answered asynchronously here (all others reply at once). */
const FUSE_READ = 15;
let requestCounter = 0;

export interface StatLike {
  mode: number;
  uid: number;
  gid: number;
  size: number;
  nlink: number;
  ino: number;
  rdev: number;
  blksize: number;
  blocks: number;
  mtime: number;
  atime: number;
  ctime: number;
}

export function statOf(rafs: RafsInstance, inode: Inode): StatLike {
  const ms = inode.mtime * 1000 + Math.floor(inode.mtimeNsec / 1e6);
  return {
    mode: S_IF[inode.kind] | inode.mode,
    uid: inode.uid,
    gid: inode.gid,
    size: inode.size,
    nlink: rafs.nlink(inode),
    ino: rafs.inodeNumber(inode),
    rdev: inode.rdev,
    blksize: 4096,
    blocks: Math.ceil(inode.size / 512),
    mtime: ms,
    atime: ms,
    ctime: ms,
  };
}

export class FuseMount {
  private fuse?: Fuse;
  private readonly handles = new Map<number, Inode>();
  private nextFd = 1;
  /** Reads waiting for their data, by request number. */
  readonly inflight = new Map<number, InflightOp>();

  constructor(
    public readonly rafs: RafsInstance,
    public readonly mountpoint: string,
    /** Called on every FUSE operation (the daemon's idle collector watches for quiet). */
    private readonly onActivity: () => void = () => undefined,
  ) {}

  private ops(): Fuse.OPERATIONS {
    const ops = this.handlers();
    const onActivity = this.onActivity;
    for (const [name, op] of Object.entries(ops)) {
      // `arguments` passed straight through: no array is built per request on the read path.
      ops[name] = function (this: unknown) {
        onActivity();
        return op.apply(this, arguments as unknown as unknown[]);
      };
    }
    return ops;
  }

  private handlers(): Fuse.OPERATIONS {
    const rafs = this.rafs;
    const find = (p: string): Inode | undefined => rafs.lookup(p);
    return {
      getattr: (p: string, cb: Cb<StatLike>) => {
        const n = find(p);
        if (!n) return cb(E.ENOENT);
        cb(0, statOf(rafs, n));
      },
      readdir: (p: string, cb: (err: number, names?: string[]) => void) => {
        const n = find(p);
        if (!n) return cb(E.ENOENT);
        if (n.kind !== 'dir') return cb(E.ENOTDIR);
        cb(0, [...(n.children?.keys() ?? [])]);
      },
      open: (p: string, flags: number, cb: Cb<number>) => {
        const n = find(p);
        if (!n) return cb(E.ENOENT);
        if ((flags & 3) !== 0) return cb(E.EROFS);
        const fd = this.nextFd++;
        this.handles.set(fd, n);
        rafs.stats.opens++;
        cb(0, fd);
      },
      release: (_p: string, fd: number, cb: Cb) => {
        this.handles.delete(fd);
        cb(0);
      },
      read: (p: string, fd: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void) => {
        const n = this.handles.get(fd) ?? find(p);
        if (!n) return cb(E.ENOENT);
        const id = ++requestCounter;
        this.inflight.set(id, { inode: rafs.inodeNumber(n), opcode: FUSE_READ, unique: id, timestamp_secs: Math.floor(Date.now() / 1000) });
        rafs.read(n, pos, len, { path: p }).then(
          (data) => {
            this.inflight.delete(id);
            cb(data.copy(buf, 0, 0, Math.min(len, data.length)));
          },
          (e: Error) => {
            this.inflight.delete(id);
            log.error({ path: p, offset: pos, length: len, err: e.message }, e instanceof ChunkFetchError ? 'read failed: chunk not verified' : 'read failed');
            cb(E.EIO);
          },
        );
      },
      readlink: (p: string, cb: Cb<string>) => {
        const n = find(p);
        if (!n) return cb(E.ENOENT);
        if (n.kind !== 'symlink') return cb(E.EINVAL);
        cb(0, n.target ?? '');
      },
      getxattr: (p: string, name: string, _pos: number, cb: Cb<Buffer | null>) => {
        const n = find(p);
        if (!n) return cb(E.ENOENT);
        cb(0, n.xattrs.get(name) ?? null);
      },
      listxattr: (p: string, cb: Cb<string[]>) => {
        const n = find(p);
        if (!n) return cb(E.ENOENT);
        cb(0, [...n.xattrs.keys()]);
      },
      statfs: (_p: string, cb: Cb<object>) => {
        cb(0, { bsize: 4096, frsize: 4096, blocks: 0, bfree: 0, bavail: 0, files: rafs.entryCount, ffree: 0, favail: 0, fsid: 0, flag: 1, namemax: 255 });
      },
    } as unknown as Fuse.OPERATIONS;
  }

  mount(): Promise<void> {
    const FuseNative = loadFuseNative();
    const fuse = new FuseNative(this.mountpoint, this.ops(), {
      force: true,
      mkdir: true,
      allowOther: true,
      kernelCache: true,
      entryTimeout: CACHE_TIMEOUT_S,
      attrTimeout: CACHE_TIMEOUT_S,
      // fuse-native has no switches for these libfuse options; they ride along in the -o list.
      fsname: `nydus,ro,use_ino,readdir_ino,negative_timeout=${CACHE_TIMEOUT_S}`,
      subtype: 'rafs',
      timeout: OP_TIMEOUT_MS,
    } as Fuse.OPTIONS);
    return new Promise((resolve, reject) => {
      fuse.mount((err?: Error | null) => {
        if (err) return reject(new Error(`mount ${this.mountpoint}: ${err.message}`));
        this.fuse = fuse;
        resolve();
      });
    });
  }

  unmount(): Promise<void> {
    const fuse = this.fuse;
    this.fuse = undefined;
    if (!fuse) return Promise.resolve();
    return new Promise((resolve, reject) => {
      fuse.unmount((err?: Error | null) => (err ? reject(new Error(`unmount ${this.mountpoint}: ${err.message}`)) : resolve()));
    });
  }
}
