/**
 * The FUSE face of a rafs instance, on nydusd's own FUSE session (src/fuse/). Read-only; the image
 * is immutable, so the kernel is told to keep entries (also negative ones), attributes, symlink
 * targets, directory listings and pages for a day: a second read of a file never reaches this
 * process.
 *
 * Node ids are the image's inode numbers, so hard links share one node and one inode number; the
 * root is node 1 (FUSE_ROOT_ID), and an inode that happens to carry number 1 takes the root's number
 * as its node id. Nodes the kernel has looked up are remembered, with their lookup count: FORGET
 * drops them at zero. A node id this process never handed out (the kernel got it from a previous
 * nydusd on the same connection, docs/nydusd.md "Failover") is found again from the image: inode
 * numbers are the same in every process that loads the bootstrap. For the same reason nothing is
 * looked up by file handle: a handle may come from the previous process.
 */
import { constants } from 'node:fs';
import type { Inode, InodeKind } from '../format/model';
import { RafsInstance } from './rafs';
import { ChunkFetchError } from '../fetch/pipeline';
import { Attr, DirEntry, Entry, errno, FuseError, FuseFs, FuseSession, SessionOptions, Statfs } from '../fuse/session';
import type { ReaderKind } from '../fuse/readers';
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

/**
 * How requests leave /dev/fuse (src/fuse/readers.ts): 'auto', two reads waiting in libuv's pool
 * while it has threads to spare (bin/_run sizes it for nydusd), the event loop's poll after that.
 * NYDUSD_FUSE_READERS=poll:1, pool:N or worker:N overrides it (for measuring).
 */
function readerChoice(): { kind: ReaderKind; count: number } {
  const m = /^(auto|poll|pool|worker):([1-9]\d?)$/.exec(process.env.NYDUSD_FUSE_READERS ?? '');
  if (process.env.NYDUSD_FUSE_READERS && !m) log.warn({ value: process.env.NYDUSD_FUSE_READERS }, 'NYDUSD_FUSE_READERS: expected auto:N, poll:1, pool:N or worker:N; using auto:2');
  return m ? { kind: m[1] as ReaderKind, count: Number(m[2]) } : { kind: 'auto', count: 2 };
}

/** A FUSE request not answered yet, as upstream's `GET /api/v1/metrics/inflight` lists it. */
export interface InflightOp {
  inode: number;
  opcode: number;
  /** This daemon's read counter (the session keeps the kernel's `unique` to itself). */
  unique: number;
  timestamp_secs: number;
}

/** FUSE_READ: the only operation answered asynchronously here (all others reply at once). */
const FUSE_READ = 15;
let requestCounter = 0;

export function attrOf(rafs: RafsInstance, inode: Inode): Attr {
  return {
    ino: rafs.inodeNumber(inode),
    size: inode.size,
    blocks: Math.ceil(inode.size / 512),
    mtime: inode.mtime,
    mtimensec: inode.mtimeNsec,
    mode: S_IF[inode.kind] | inode.mode,
    nlink: rafs.nlink(inode),
    uid: inode.uid,
    gid: inode.gid,
    rdev: inode.rdev,
    blksize: 4096,
  };
}

/**
 * A node the kernel holds: its inode, lookup count, the name it was found by (the image's own
 * string, no copy) and its parent, for `..` and for the path the metrics API reports.
 */
interface Node {
  inode: Inode;
  /** Its node id (the root's is 1). */
  id: number;
  nlookup: number;
  name: string;
  parent: number;
  /** Its path, built on the first READ and kept (the tree never changes under a mount). */
  path?: string;
}

/** A session for a whole supervised daemon (src/daemon/fuse-root.ts), with the settings of an instance's own. */
export function daemonSession(fs: FuseFs, mountpoint: string, onActivity: () => void): FuseSession {
  return new FuseSession(fs, { mountpoint, cacheTimeoutS: CACHE_TIMEOUT_S, readers: readerChoice(), onActivity, zeroMessageOpen: true });
}

export class FuseMount implements FuseFs {
  private session?: FuseSession;
  private readonly nodes = new Map<number, Node>();
  /** Open directories' listings by handle, with the node each belongs to. */
  private readonly dirs = new Map<number, { nodeid: number; list: readonly DirEntry[] }>();
  private nextFh = 1;
  /** The listing READDIR with no handle of ours used last (the tree never changes under a mount). */
  private lastListing?: { inode: Inode; list: readonly DirEntry[] };
  /** Every node by id, built on the first request for a node id not handed out here. */
  private byId?: Map<number, Node>;
  private readonly rootIno: number;
  /** Reads waiting for data (GET /api/v1/metrics/inflight). */
  readonly inflight = new Map<number, InflightOp>();

  constructor(
    public readonly rafs: RafsInstance,
    public readonly mountpoint: string,
    /** Called on every FUSE request (the daemon's idle collector watches for quiet). */
    private readonly onActivity: () => void = () => undefined,
    /** Session settings besides the defaults (tests mount without `ro` or pick readers). */
    private readonly sessionOptions: Pick<SessionOptions, 'mountOptions' | 'readers' | 'zeroMessageOpen'> = {},
  ) {
    const root = rafs.image.root;
    this.rootIno = rafs.inodeNumber(root);
    this.nodes.set(1, { inode: root, id: 1, nlookup: 1, name: '', parent: 1 });
  }

  /** The session (READ sizes and request counts in `session.stats`) while mounted. */
  get fuseSession(): FuseSession | undefined {
    return this.session;
  }

  /** Mounts and serves; `premounted`: a connection `premountFuse` made at this mountpoint with the default options. */
  async mount(premounted?: Promise<number>): Promise<void> {
    // As upstream's rafs: opens carry no state here, so the kernel need not ask for them.
    const s = new FuseSession(this, { mountpoint: this.mountpoint, cacheTimeoutS: CACHE_TIMEOUT_S, readers: readerChoice(), onActivity: this.onActivity, zeroMessageOpen: true, ...this.sessionOptions });
    await s.mount(premounted);
    this.session = s;
  }

  async unmount(): Promise<void> {
    const s = this.session;
    this.session = undefined;
    await s?.unmount();
  }

  private idOf(n: Inode): number {
    if (n === this.rafs.image.root) return 1;
    const ino = this.rafs.inodeNumber(n);
    return ino === 1 ? this.rootIno : ino;
  }

  /** The path of a node, from its parents (the kernel holds every ancestor of a node it holds). */
  private pathOf(n: Node): string {
    let p = '';
    for (let k = 0; k < 64 && n.name; k++) {
      p = `/${n.name}${p}`;
      const up = this.nodes.get(n.parent);
      if (!up) break;
      n = up;
    }
    return p || '/';
  }

  private node(nodeid: number): Node {
    const n = this.nodes.get(nodeid) ?? this.recovered(nodeid);
    if (!n) throw new FuseError(errno.ESTALE, `node ${nodeid} is not known`);
    return n;
  }

  /** A node the kernel holds from a previous process: taken from the image and remembered again. */
  private recovered(nodeid: number): Node | undefined {
    if (!this.byId) {
      this.byId = new Map();
      const stack: Node[] = [{ inode: this.rafs.image.root, id: 1, nlookup: 0, name: '', parent: 1 }];
      for (let k = 0; k < 50_000_000 && stack.length; k++) {
        const p = stack.pop() as Node;
        if (this.byId.has(p.id)) continue;
        this.byId.set(p.id, p);
        for (const [name, c] of p.inode.children ?? []) stack.push({ inode: c, id: this.idOf(c), nlookup: 0, name, parent: p.id });
      }
      log.info({ mountpoint: this.mountpoint, nodes: this.byId.size }, 'node ids of a previous nydusd resolved from the image');
    }
    const n = this.byId.get(nodeid);
    if (!n) return undefined;
    const again: Node = { ...n, nlookup: 1 };
    this.nodes.set(nodeid, again);
    return again;
  }

  lookup(parent: number, name: string): Entry | undefined {
    const p = this.node(parent);
    let id: number;
    let inode: Inode;
    if (name === '.' || name === '..') {
      id = name === '.' ? parent : p.parent;
      inode = this.node(id).inode;
    } else {
      if (p.inode.kind !== 'dir') throw new FuseError(errno.ENOTDIR);
      const c = p.inode.children?.get(name);
      if (!c) return undefined;
      inode = c;
      id = this.idOf(c);
    }
    let n = this.nodes.get(id);
    if (!n) {
      n = { inode, id, nlookup: 0, name, parent };
      this.nodes.set(id, n);
    }
    n.nlookup++;
    return { nodeid: id, attr: attrOf(this.rafs, inode) };
  }

  forget(nodeid: number, nlookup: number): void {
    const n = this.nodes.get(nodeid);
    if (!n || nodeid === 1) return;
    n.nlookup -= nlookup;
    if (n.nlookup <= 0) this.nodes.delete(nodeid);
  }

  getattr(nodeid: number): Attr {
    return attrOf(this.rafs, this.node(nodeid).inode);
  }

  readlink(nodeid: number): Buffer {
    const n = this.node(nodeid).inode;
    if (n.kind !== 'symlink') throw new FuseError(errno.EINVAL);
    return Buffer.from(n.target ?? '');
  }

  open(nodeid: number, flags: number): number {
    const n = this.node(nodeid);
    if ((flags & 3) !== 0) throw new FuseError(errno.EROFS);
    if (n.inode.kind === 'dir') throw new FuseError(errno.EISDIR);
    this.rafs.stats.opens++;
    // READ finds the file by node id; the handle carries nothing.
    return 0;
  }

  async read(nodeid: number, _fh: number, offset: number, size: number): Promise<Buffer[]> {
    const n = this.node(nodeid);
    const path = (n.path ??= this.pathOf(n));
    const id = ++requestCounter;
    this.inflight.set(id, { inode: this.rafs.inodeNumber(n.inode), opcode: FUSE_READ, unique: id, timestamp_secs: Math.floor(Date.now() / 1000) });
    try {
      return await this.rafs.read(n.inode, offset, size, { path });
    } catch (e) {
      const err = e as Error;
      log.error({ path, offset, length: size, err: err.message }, e instanceof ChunkFetchError ? 'read failed: chunk not verified' : 'read failed');
      throw new FuseError(errno.EIO);
    } finally {
      this.inflight.delete(id);
    }
  }

  release(): void {
    // Nothing is kept per open file.
  }

  opendir(nodeid: number): number {
    const fh = this.nextFh++;
    this.dirs.set(fh, { nodeid, list: this.listing(nodeid) });
    return fh;
  }

  private listing(nodeid: number): DirEntry[] {
    const n = this.node(nodeid);
    if (n.inode.kind !== 'dir') throw new FuseError(errno.ENOTDIR);
    const list: DirEntry[] = [
      { name: '.', ino: this.rafs.inodeNumber(n.inode), type: 4 },
      { name: '..', ino: this.rafs.inodeNumber(this.node(n.parent).inode), type: 4 },
    ];
    for (const [name, c] of n.inode.children ?? []) list.push({ name, ino: this.rafs.inodeNumber(c), type: S_IF[c.kind] >> 12 });
    return list;
  }

  readdir(nodeid: number, fh: number): readonly DirEntry[] {
    const d = this.dirs.get(fh);
    if (d?.nodeid === nodeid) return d.list;
    // Handle 0 (zero-message OPENDIR: the kernel pages through a directory in several READDIRs) or
    // one from a previous nydusd (its number may be in use here for another directory): the last
    // listing is kept for the next page.
    const inode = this.node(nodeid).inode;
    if (this.lastListing?.inode !== inode) this.lastListing = { inode, list: this.listing(nodeid) };
    return this.lastListing.list;
  }

  releasedir(_nodeid: number, fh: number): void {
    this.dirs.delete(fh);
  }

  statfs(): Statfs {
    return { blocks: 0, files: this.rafs.entryCount, bsize: 4096, namelen: 255 };
  }

  getxattr(nodeid: number, name: string): Buffer {
    const v = this.node(nodeid).inode.xattrs.get(name);
    if (!v) throw new FuseError(errno.ENODATA);
    return v;
  }

  listxattr(nodeid: number): Buffer {
    return Buffer.from([...this.node(nodeid).inode.xattrs.keys()].map((k) => `${k}\0`).join(''));
  }

  access(nodeid: number, mask: number): void {
    this.node(nodeid);
    if (mask & constants.W_OK) throw new FuseError(errno.EROFS);
  }
}
