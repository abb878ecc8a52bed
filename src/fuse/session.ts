/**
 * A FUSE session over /dev/fuse for a read-only filesystem: mounts, negotiates INIT, decodes each
 * request (src/fuse/abi.ts), asks the filesystem (`FuseFs`, node-id based) and writes the reply.
 *
 * Contract:
 *  - `mount()` resolves once the kernel's INIT is answered; `mount(premountFuse(opts))` serves a
 *    connection mounted ahead (mount(8) runs while the caller gets its filesystem ready; until then
 *    the kernel holds the mount's requests), and `discardPremount` undoes one never served;
 *    `adopt(fd)` does the same on a
 *    connection another process mounted, and `adopt(fd, {negotiated, policy})` serves one a previous
 *    daemon already initialized (no INIT; FUSE_NOTIFY_RESEND per policy); `unmount()` detaches the
 *    mount, waits for the readers to see the connection end, and closes the descriptor (idempotent);
 *  - every request gets exactly one reply, except FORGET/BATCH_FORGET (none, by protocol) and a
 *    request already answered EINTR after an INTERRUPT (its late result is dropped);
 *  - operations that would write answer EROFS, unknown ones ENOSYS, a thrown `FuseError` its errno,
 *    anything else EIO (logged);
 *  - READ may take up to `maxPages` pages (1 MiB by default) when the kernel offers FUSE_MAX_PAGES;
 *    its answer may come in pieces (`ReadReply`), written to /dev/fuse with one writev, uncopied,
 *    from libuv's pool (the kernel's copy of the data then runs beside the event loop); the
 *    descriptor is closed only after such writes are done.
 */
import * as fs from 'node:fs';
import { constants } from 'node:os';
import {
  decode, encode, FUSE_KERNEL_MINOR_VERSION, FUSE_KERNEL_VERSION, FUSE_MIN_READ_BUFFER, Fopen, fuse_access_in, fuse_attr, fuse_attr_out,
  fuse_batch_forget_in, fuse_dirent, fuse_direntplus, fuse_entry_out, fuse_forget_in, fuse_forget_one, fuse_getxattr_in,
  fuse_getxattr_out, fuse_in_header, fuse_init_in, fuse_init_out, fuse_interrupt_in, fuse_open_in, fuse_open_out, fuse_out_header,
  fuse_read_in, fuse_release_in, fuse_statfs_out, FUSE_UNIQUE_RESEND, Init, Notify, Op, recAlign, Struct, WRITING_OPS,
} from './abi';
import { abortConnection, mountDevice, mountFuse, setReadAhead } from './device';
import { detach } from './unmount';
import { ReaderKind, Readers, startReaders } from './readers';
import { logger } from '../util/log';

const log = logger('fuse-session');

export const errno = constants.errno;

/** An answer of `-errno` for the request being served. */
export class FuseError extends Error {
  constructor(readonly errno: number, message?: string) {
    super(message ?? `errno ${errno}`);
  }
}

export interface Attr {
  ino: number;
  size: number;
  blocks: number;
  /** Seconds and nanoseconds. */
  mtime: number;
  mtimensec: number;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  rdev: number;
  blksize: number;
}

/** What LOOKUP finds: a node id the kernel now holds one more lookup of, and its attributes. */
export interface Entry {
  nodeid: number;
  attr: Attr;
  /** Entry cache time, seconds, when not the session's (a name that may come and go: 0). */
  entryTtl?: number;
}

/** A directory listing entry; `type` is the DT_* value (mode >> 12). */
export interface DirEntry {
  name: string;
  ino: number;
  type: number;
}

export interface Statfs {
  blocks: number;
  files: number;
  bsize: number;
  namelen: number;
}

/**
 * The bytes of a READ: one buffer, or pieces in file order (chunk slices) that the session writes
 * with one writev instead of copying them into one buffer first.
 */
export type ReadReply = Buffer | readonly Buffer[];

/** The filesystem behind a session. Errors are thrown as FuseError. */
export interface FuseFs {
  /** Child `name` of `parent` (also `.` and `..`); undefined caches a negative entry. Counts one lookup. */
  lookup(parent: number, name: string): Entry | undefined;
  forget(nodeid: number, nlookup: number): void;
  getattr(nodeid: number): Attr;
  readlink(nodeid: number): Buffer;
  /** Returns a file handle. */
  open(nodeid: number, flags: number): number;
  read(nodeid: number, fh: number, offset: number, size: number): Promise<ReadReply>;
  release(nodeid: number, fh: number): void;
  opendir(nodeid: number): number;
  /** The whole listing of an open directory, `.` and `..` first; READDIR offsets index it. */
  readdir(nodeid: number, fh: number): readonly DirEntry[];
  releasedir(nodeid: number, fh: number): void;
  statfs(): Statfs;
  /** The value of an xattr; throws ENODATA when absent. */
  getxattr(nodeid: number, name: string): Buffer;
  /** Names, each NUL-terminated. */
  listxattr(nodeid: number): Buffer;
  access(nodeid: number, mask: number): void;
}

/** Upstream's --failover-policy: what happens to requests a dead daemon read and never answered. */
export type FailoverPolicy = 'none' | 'resend' | 'flush';

export interface SessionOptions {
  mountpoint: string;
  source?: string;
  subtype?: string;
  /** Entry and attribute cache time given to the kernel, seconds. */
  cacheTimeoutS: number;
  /** Largest READ in pages (4 KiB); 256 = 1 MiB. */
  maxPages?: number;
  readers?: { kind: ReaderKind; count: number };
  /** `-o` options besides fd/rootmode/user_id/group_id (default: ro, allow_other, default_permissions). */
  mountOptions?: string[];
  /** Called for every request (the daemon's idle collector watches for quiet). */
  onActivity?: () => void;
  /** FOPEN_* flags of every OPEN reply (default KEEP_CACHE; the blob view asks DIRECT_IO). */
  openFlags?: number;
  /**
   * Upstream rafs's ZERO_MESSAGE_OPEN and ZERO_MESSAGE_OPENDIR: where the kernel offers it
   * (NO_OPEN_SUPPORT, NO_OPENDIR_SUPPORT), OPEN and OPENDIR are answered ENOSYS, after which the
   * kernel opens files and directories of this connection without asking (no OPEN, RELEASE,
   * OPENDIR or RELEASEDIR) and keeps their pages and listings as with KEEP_CACHE and CACHE_DIR;
   * FLUSH is answered ENOSYS too, which ends FLUSHes. Only for filesystems whose opens carry no
   * state: READ and READDIR then come with handle 0.
   */
  zeroMessageOpen?: boolean;
  /** INIT flags wanted besides the defaults (the blob view asks ASYNC_DIO: parallel direct reads). */
  extraInit?: number;
  /**
   * Leave INTERRUPTs unanswered: the kernel then waits for the real reply (fatal signals still end
   * the wait). The blob view sets it: the kernel's EROFS turns an EINTR from its device into EIO.
   */
  ignoreInterrupts?: boolean;
}

export interface Negotiated {
  major: number;
  minor: number;
  /** INIT flags the kernel offered (flags | flags2 << 32, as a bigint). */
  offered: bigint;
  /** Flags we accepted. */
  accepted: bigint;
  maxPages: number;
  maxReadahead: number;
}

const HDR = fuse_out_header.size;
const IN = fuse_in_header.size;
const MAX_WRITE = 4096;
/** Large enough for any request of a read-only mount (names, xattr names, batch forgets). */
const READ_BUF = FUSE_MIN_READ_BUFFER + 4 * MAX_WRITE;
const WANTED = Init.ASYNC_READ | Init.EXPORT_SUPPORT | Init.DO_READDIRPLUS | Init.READDIRPLUS_AUTO | Init.PARALLEL_DIROPS | Init.MAX_PAGES | Init.CACHE_SYMLINKS | Init.NO_OPENDIR_SUPPORT | Init.INIT_EXT;

export class FuseSession {
  private fd = -1;
  /** zeroMessageOpen in force for files / directories (the kernel offered it). */
  private zeroOpen = false;
  private zeroOpendir = false;
  private readers?: Readers;
  private initDone?: (n: Negotiated) => void;
  private dev?: string;
  private stopping?: Promise<void>;
  /** The connection ended: no more replies (the descriptor may already be closed and its number reused). */
  private ended = false;
  /** Uniques of READs being served; an INTERRUPT answers one early and removes it. */
  private readonly inFlight = new Set<bigint>();
  /** READ replies being written from libuv's pool; the descriptor stays open until they are done. */
  private writing = 0;
  private allWritten?: () => void;
  /** Failover policy flush: requests re-sent after a takeover are answered EIO. */
  private flushResent = false;
  negotiated?: Negotiated;
  /** Requests served, by opcode; READ sizes requested, by size; most READs in flight at once. */
  readonly stats = { requests: new Map<number, number>(), readSizes: new Map<number, number>(), maxInFlight: 0 };

  constructor(
    private readonly fs: FuseFs,
    private readonly opts: SessionOptions,
  ) {}

  get mountpoint(): string {
    return this.opts.mountpoint;
  }

  async mount(premounted?: Promise<number>): Promise<Negotiated> {
    return this.serve(await (premounted ?? premountFuse(this.opts)));
  }

  /**
   * Serves a connection another process mounted and handed over as descriptor `fd` (a supervisor,
   * docs/nydusd.md "Failover"). Without `takeover` the kernel's INIT is still to come and is
   * answered as in `mount()`. With it, a previous daemon already answered INIT: the session
   * takes its negotiated parameters and, per `takeover.policy`, has the kernel deliver again the
   * requests that daemon read and never answered (`resend`), fail them (`flush`) or leaves them
   * (`none`).
   */
  async adopt(fd: number, takeover?: { negotiated: Negotiated; policy: FailoverPolicy }): Promise<Negotiated> {
    if (!takeover) return this.serve(fd);
    this.fd = fd;
    this.dev = mountDevice(this.opts.mountpoint);
    this.negotiated = takeover.negotiated;
    this.flushResent = takeover.policy === 'flush';
    this.startReading();
    if (takeover.policy !== 'none') this.drainDeadDaemonRequests();
    return takeover.negotiated;
  }

  private startReading(): void {
    const { kind, count } = this.opts.readers ?? { kind: 'poll', count: 1 };
    this.readers = startReaders(kind, this.fd, count, READ_BUF, (req) => this.handle(req), (err) => {
      this.ended = true;
      if (err.code !== 'ENODEV') log.error({ mountpoint: this.opts.mountpoint, err: err.message }, 'FUSE connection ended');
    });
  }

  /**
   * FUSE_NOTIFY_RESEND (kernel 6.9+, FUSE_HAS_RESEND in INIT): the kernel moves every request it
   * handed out and got no answer for back to its queue, marked with FUSE_UNIQUE_RESEND. Under
   * `flush` the re-sent ones are answered EIO (upstream "flushes pending requests" through a fusectl
   * `flush` file mainline kernels lack; failing them is what is possible here).
   */
  private drainDeadDaemonRequests(): void {
    const h = Buffer.alloc(HDR);
    encode(fuse_out_header, h, 0, { len: HDR, error: Notify.RESEND, unique: 0n });
    try {
      fs.writeSync(this.fd, h);
      log.info({ mountpoint: this.opts.mountpoint, flush: this.flushResent }, 'FUSE_NOTIFY_RESEND sent: requests of the previous daemon come again');
    } catch (e) {
      const hasResend = ((this.negotiated?.offered ?? 0n) >> 32n) & BigInt(Init.HAS_RESEND2);
      log.error({ mountpoint: this.opts.mountpoint, err: (e as Error).message, kernelHasResend: hasResend !== 0n }, 'FUSE_NOTIFY_RESEND failed (kernel before 6.9?): requests the previous daemon read stay unanswered');
    }
  }

  private async serve(fd: number): Promise<Negotiated> {
    this.fd = fd;
    this.dev = mountDevice(this.opts.mountpoint);
    const init = new Promise<Negotiated>((resolve) => (this.initDone = resolve));
    this.startReading();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`mount ${this.opts.mountpoint}: the kernel sent no INIT within 10 s`)), 10_000)));
    try {
      const n = await Promise.race([init, timeout]);
      const kib = n.maxPages * 4;
      if (this.dev && !setReadAhead(this.dev, kib)) log.warn({ mountpoint: this.opts.mountpoint, dev: this.dev }, `could not set read_ahead_kb to ${kib}; sequential reads stay at 128 KiB per request`);
      return n;
    } catch (e) {
      await this.unmount();
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  unmount(): Promise<void> {
    this.stopping ??= this.stop();
    return this.stopping;
  }

  private async stop(): Promise<void> {
    if (this.fd < 0) return;
    const readers = this.readers;
    if (!(await detach(this.opts.mountpoint))) log.warn({ mountpoint: this.opts.mountpoint }, 'lazy unmount failed');
    // The readers see ENODEV once the kernel drops the superblock; a file still open on the
    // detached mount keeps it alive, so after a grace period the connection is aborted.
    const gone = readers ? await Promise.race([readers.ended.then(() => true), sleep(2000).then(() => false)]) : true;
    if (!gone && readers) {
      const aborted = this.dev !== undefined && (await abortConnection(this.dev));
      log.warn({ mountpoint: this.opts.mountpoint, aborted }, 'files still open on the unmounted FUSE mount; aborting its connection');
      if (aborted) await readers.ended;
    }
    if (this.writing > 0) await new Promise<void>((r) => (this.allWritten = r));
    readers?.close();
    this.fd = -1;
  }

  // -------------------------------------------------------------------------------------------

  private reply(unique: bigint, error: number, ...body: Buffer[]): void {
    if (this.ended || this.fd < 0) return;
    let len = HDR;
    for (const b of body) len += b.length;
    const h = Buffer.allocUnsafe(HDR);
    encode(fuse_out_header, h, 0, { len, error, unique });
    try {
      if (body.length === 0) fs.writeSync(this.fd, h);
      else fs.writevSync(this.fd, [h, ...body]);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // ENOENT: the kernel no longer waits for this request (interrupted); ENODEV: unmounted.
      if (code !== 'ENOENT' && code !== 'ENODEV') log.error({ unique: unique.toString(), err: (e as Error).message }, 'writing a FUSE reply failed');
    }
  }

  /**
   * A READ's data, written from libuv's pool: the kernel copies it into the reader's pages there,
   * not on the event loop. FUSE takes each reply whole, in any order.
   */
  private replyData(unique: bigint, body: readonly Buffer[]): void {
    if (this.ended || this.fd < 0) return;
    let len = HDR;
    for (const b of body) len += b.length;
    const h = Buffer.allocUnsafe(HDR);
    encode(fuse_out_header, h, 0, { len, error: 0, unique });
    this.writing++;
    fs.writev(this.fd, [h, ...body], (e) => {
      const code = e?.code;
      if (e && code !== 'ENOENT' && code !== 'ENODEV') log.error({ unique: unique.toString(), err: e.message }, 'writing a FUSE reply failed');
      if (--this.writing === 0) this.allWritten?.();
    });
  }

  private replyStruct(unique: bigint, s: Struct, v: Record<string, unknown>): void {
    const b = Buffer.alloc(s.size);
    encode(s, b, 0, v);
    this.reply(unique, 0, b);
  }

  private handle(req: Buffer): void {
    const h = decode(fuse_in_header, req, 0) as { len: number; opcode: number; unique: bigint; nodeid: number };
    const op = h.opcode;
    if (this.flushResent && h.unique & FUSE_UNIQUE_RESEND) return this.reply(h.unique, -errno.EIO);
    this.stats.requests.set(op, (this.stats.requests.get(op) ?? 0) + 1);
    this.opts.onActivity?.();
    try {
      this.dispatch(op, h.unique, h.nodeid, req.subarray(IN, h.len));
    } catch (e) {
      if (e instanceof FuseError) return this.reply(h.unique, -e.errno);
      log.error({ opcode: op, err: (e as Error).message }, 'FUSE request failed');
      this.reply(h.unique, -errno.EIO);
    }
  }

  private dispatch(op: number, unique: bigint, nodeid: number, arg: Buffer): void {
    const f = this.fs;
    const t = this.opts.cacheTimeoutS;
    switch (op) {
      case Op.INIT:
        return this.init(unique, arg);
      case Op.LOOKUP: {
        const e = f.lookup(nodeid, cstring(arg, 0));
        return this.replyStruct(unique, fuse_entry_out, entryOut(e, t));
      }
      case Op.FORGET:
        return f.forget(nodeid, decode(fuse_forget_in, arg).nlookup as number);
      case Op.BATCH_FORGET: {
        const n = decode(fuse_batch_forget_in, arg).count as number;
        for (let i = 0, at = fuse_batch_forget_in.size; i < n && at + fuse_forget_one.size <= arg.length; i++, at += fuse_forget_one.size) {
          const one = decode(fuse_forget_one, arg, at) as { nodeid: number; nlookup: number };
          f.forget(one.nodeid, one.nlookup);
        }
        return;
      }
      case Op.GETATTR:
        return this.replyStruct(unique, fuse_attr_out, { attr_valid: t, attr: attrOut(f.getattr(nodeid)) });
      case Op.READLINK:
        return this.reply(unique, 0, f.readlink(nodeid));
      case Op.OPEN: {
        if (this.zeroOpen) return this.reply(unique, -errno.ENOSYS);
        const fh = f.open(nodeid, decode(fuse_open_in, arg).flags as number);
        return this.replyStruct(unique, fuse_open_out, { fh, open_flags: this.opts.openFlags ?? Fopen.KEEP_CACHE });
      }
      case Op.READ:
        return this.read(unique, nodeid, arg);
      case Op.RELEASE:
        f.release(nodeid, decode(fuse_release_in, arg).fh as number);
        return this.reply(unique, 0);
      case Op.OPENDIR:
        if (this.zeroOpendir) return this.reply(unique, -errno.ENOSYS);
        // The listing never changes: the kernel may keep it (FOPEN_CACHE_DIR) across opens.
        return this.replyStruct(unique, fuse_open_out, { fh: f.opendir(nodeid), open_flags: Fopen.KEEP_CACHE | Fopen.CACHE_DIR });
      case Op.READDIR:
      case Op.READDIRPLUS:
        return this.readdir(unique, nodeid, arg, op === Op.READDIRPLUS);
      case Op.RELEASEDIR:
        f.releasedir(nodeid, decode(fuse_release_in, arg).fh as number);
        return this.reply(unique, 0);
      case Op.STATFS: {
        const s = f.statfs();
        return this.replyStruct(unique, fuse_statfs_out, { st: { blocks: s.blocks, files: s.files, bsize: s.bsize, frsize: s.bsize, namelen: s.namelen } });
      }
      case Op.GETXATTR: {
        const size = decode(fuse_getxattr_in, arg).size as number;
        return this.sized(unique, size, f.getxattr(nodeid, cstring(arg, fuse_getxattr_in.size)));
      }
      case Op.LISTXATTR:
        return this.sized(unique, decode(fuse_getxattr_in, arg).size as number, f.listxattr(nodeid));
      case Op.ACCESS:
        f.access(nodeid, decode(fuse_access_in, arg).mask as number);
        return this.reply(unique, 0);
      case Op.INTERRUPT:
        if (this.opts.ignoreInterrupts) return;
        return this.interrupt(unique, decode(fuse_interrupt_in, arg).unique as bigint);
      case Op.DESTROY:
        return this.reply(unique, 0);
      case Op.FLUSH:
        // Nothing is ever dirty: close(2) stays quiet either way; ENOSYS also ends the FLUSHes.
        return this.reply(unique, this.opts.zeroMessageOpen ? -errno.ENOSYS : 0);
      default:
        return this.reply(unique, -(WRITING_OPS.has(op) ? errno.EROFS : errno.ENOSYS));
    }
  }

  private init(unique: bigint, arg: Buffer): void {
    const i = decode(fuse_init_in, arg) as { major: number; minor: number; max_readahead: number; flags: number; flags2: number };
    if (i.major !== FUSE_KERNEL_VERSION) {
      // A newer major: answer ours and wait for the kernel's INIT in our major.
      log.warn({ kernel: `${i.major}.${i.minor}` }, 'kernel FUSE major version differs; answering ours');
      return this.replyStruct(unique, fuse_init_out, { major: FUSE_KERNEL_VERSION, minor: FUSE_KERNEL_MINOR_VERSION });
    }
    const flags2 = i.flags & Init.INIT_EXT ? i.flags2 : 0;
    const offered = BigInt(i.flags >>> 0) | (BigInt(flags2 >>> 0) << 32n);
    const flags = (i.flags & (WANTED | (this.opts.extraInit ?? 0))) >>> 0;
    const maxPages = flags & Init.MAX_PAGES ? (this.opts.maxPages ?? 256) : 32;
    const n: Negotiated = {
      major: FUSE_KERNEL_VERSION,
      minor: Math.min(i.minor, FUSE_KERNEL_MINOR_VERSION),
      offered,
      accepted: BigInt(flags),
      maxPages,
      maxReadahead: i.max_readahead,
    };
    this.replyStruct(unique, fuse_init_out, {
      major: FUSE_KERNEL_VERSION,
      minor: FUSE_KERNEL_MINOR_VERSION,
      max_readahead: i.max_readahead,
      flags,
      // Background (readahead) requests in flight and where the kernel starts throttling.
      max_background: 64,
      congestion_threshold: 48,
      max_write: MAX_WRITE,
      time_gran: 1,
      max_pages: maxPages,
    });
    this.negotiated = n;
    this.zeroOpen = !!this.opts.zeroMessageOpen && (i.flags & Init.NO_OPEN_SUPPORT) !== 0;
    this.zeroOpendir = !!this.opts.zeroMessageOpen && (i.flags & Init.NO_OPENDIR_SUPPORT) !== 0;
    log.debug({ mountpoint: this.opts.mountpoint, protocol: `${n.major}.${i.minor}`, maxPages, maxReadahead: i.max_readahead }, 'FUSE INIT');
    this.initDone?.(n);
  }

  private read(unique: bigint, nodeid: number, arg: Buffer): void {
    const r = decode(fuse_read_in, arg) as { fh: number; offset: number; size: number };
    this.stats.readSizes.set(r.size, (this.stats.readSizes.get(r.size) ?? 0) + 1);
    this.inFlight.add(unique);
    if (this.inFlight.size > this.stats.maxInFlight) this.stats.maxInFlight = this.inFlight.size;
    this.fs.read(nodeid, r.fh, r.offset, r.size).then(
      (data) => {
        if (!this.inFlight.delete(unique)) return;
        this.replyData(unique, clip(data, r.size));
      },
      (e: unknown) => {
        if (!this.inFlight.delete(unique)) return;
        this.reply(unique, -(e instanceof FuseError ? e.errno : errno.EIO));
      },
    );
  }

  private interrupt(unique: bigint, target: bigint): void {
    if (this.inFlight.delete(target)) return this.reply(target, -errno.EINTR);
    // Not (yet) seen by us: another reader may hold it. EAGAIN asks the kernel to send it again;
    // if the target was already answered, the kernel drops this.
    this.reply(unique, -errno.EAGAIN);
  }

  /** GETXATTR/LISTXATTR: size 0 asks for the length; a too-small buffer is ERANGE. */
  private sized(unique: bigint, size: number, value: Buffer): void {
    if (size === 0) return this.replyStruct(unique, fuse_getxattr_out, { size: value.length });
    if (value.length > size) return this.reply(unique, -errno.ERANGE);
    this.reply(unique, 0, value);
  }

  private readdir(unique: bigint, nodeid: number, arg: Buffer, plus: boolean): void {
    const r = decode(fuse_read_in, arg) as { fh: number; offset: number; size: number };
    const list = this.fs.readdir(nodeid, r.fh);
    const out = Buffer.alloc(r.size);
    const t = this.opts.cacheTimeoutS;
    let at = 0;
    for (let k = r.offset; k < list.length; k++) {
      const d = list[k];
      const nameLen = Buffer.byteLength(d.name);
      const head = plus ? fuse_direntplus.size : fuse_dirent.size;
      const rec = recAlign(head + nameLen);
      if (at + rec > out.length) break;
      const dirent = { ino: d.ino, off: k + 1, namelen: nameLen, type: d.type };
      if (plus) {
        // `.` and `..` carry no entry (node id 0): the kernel takes no lookup for them.
        const dot = d.name === '.' || d.name === '..';
        const e = dot ? undefined : this.fs.lookup(nodeid, d.name);
        encode(fuse_direntplus, out, at, { entry_out: entryOut(e, t), dirent });
      } else {
        encode(fuse_dirent, out, at, dirent);
      }
      out.write(d.name, at + head);
      at += rec;
    }
    this.reply(unique, 0, out.subarray(0, at));
  }
}

function entryOut(e: Entry | undefined, t: number): Record<string, unknown> {
  // A missing entry is node id 0 with a timeout: the kernel caches the negative lookup.
  if (!e) return { nodeid: 0, entry_valid: t };
  return { nodeid: e.nodeid, entry_valid: e.entryTtl ?? t, attr_valid: t, attr: attrOut(e.attr) };
}

/** fuse_attr from an Attr: the image keeps one time, so atime and ctime are mtime. */
function attrOut(a: Attr): Record<string, unknown> {
  return { ...a, atime: a.mtime, ctime: a.mtime, atimensec: a.mtimensec, ctimensec: a.mtimensec };
}

/** Pieces in one writev at most (the header takes one more); IOV_MAX is 1024 and libuv cuts beyond it. */
const MAX_PIECES = 512;

/** The first `size` bytes of a READ's answer, as the pieces to write. */
function clip(data: ReadReply, size: number): readonly Buffer[] {
  if (Buffer.isBuffer(data)) return [data.length > size ? data.subarray(0, size) : data];
  const out: Buffer[] = [];
  let left = size;
  for (const b of data) {
    if (left <= 0) break;
    out.push(b.length > left ? b.subarray(0, left) : b);
    left -= b.length;
  }
  return out.length > MAX_PIECES ? [Buffer.concat(out)] : out;
}

/** The NUL-terminated string at `at`. */
function cstring(b: Buffer, at: number): string {
  const end = b.indexOf(0, at);
  return b.toString('utf8', at, end < 0 ? b.length : end);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}

/** Mounts the connection `mount()` would, without serving it: resolves with its /dev/fuse descriptor. */
export function premountFuse(opts: Pick<SessionOptions, 'mountpoint' | 'source' | 'subtype' | 'mountOptions'>): Promise<number> {
  return mountFuse({
    mountpoint: opts.mountpoint,
    source: opts.source ?? 'nydus',
    subtype: opts.subtype ?? 'rafs',
    options: opts.mountOptions ?? ['ro', 'allow_other', 'default_permissions'],
  });
}

/** Undoes a `premountFuse` that will not be served: detaches the mount and closes its descriptor. */
export async function discardPremount(mountpoint: string, premounted: Promise<number>): Promise<void> {
  const fd = await premounted.catch(() => -1);
  if (fd < 0) return;
  if (!(await detach(mountpoint))) log.warn({ mountpoint }, 'lazy unmount of an unused FUSE mount failed');
  fs.closeSync(fd);
}
