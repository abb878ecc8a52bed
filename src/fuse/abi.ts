/**
 * The FUSE wire protocol as this daemon speaks it: the kernel's include/uapi/linux/fuse.h written
 * as one list of structures, plus the opcodes, flags and notify codes nydusd uses. Everything is
 * little-endian (x86-64 and arm64 hosts) with the kernel's natural alignment; each structure below
 * is laid out field by field in declaration order, exactly as the C header declares it, and
 * test/fuse.abi.test.ts compares every size and offset with the installed header compiled by gcc.
 *
 * Protocol 7.40 is the newest we need (FUSE_NOTIFY_RESEND, FUSE_HAS_RESEND, the 7.40 init_out);
 * the kernel answers with min(its minor, ours). Nothing past 7.40 changes a structure used here.
 *
 * Contract: `decode(S, buf, off)` returns an object with one property per field of S (u64 as a
 * number, except `unique`-like `u64n` fields as bigint); `encode(S, buf, off, value)` writes every
 * field (missing ones as 0) and returns the offset after the structure.
 */

export const FUSE_KERNEL_VERSION = 7;
export const FUSE_KERNEL_MINOR_VERSION = 40;
export const FUSE_ROOT_ID = 1;
/** The smallest read buffer the kernel accepts for /dev/fuse. */
export const FUSE_MIN_READ_BUFFER = 8192;

type Scalar = 'u16' | 'u32' | 'i32' | 'u64' | 'i64' | 'u64n';
type FieldType = Scalar | Struct | { array: 'u16' | 'u32'; n: number };

export interface Struct {
  name: string;
  size: number;
  fields: { name: string; type: FieldType; offset: number }[];
}

const SCALAR_SIZE: Record<Scalar, number> = { u16: 2, u32: 4, i32: 4, u64: 8, i64: 8, u64n: 8 };

function sizeOf(t: FieldType): number {
  if (typeof t === 'string') return SCALAR_SIZE[t];
  if ('array' in t) return SCALAR_SIZE[t.array] * t.n;
  return t.size;
}

function alignOf(t: FieldType): number {
  if (typeof t === 'string') return SCALAR_SIZE[t];
  if ('array' in t) return SCALAR_SIZE[t.array];
  return Math.max(...t.fields.map((f) => alignOf(f.type)));
}

/** Lays out a C structure: each field at the next multiple of its alignment, the total padded. */
function struct(name: string, decl: [string, FieldType][]): Struct {
  let off = 0;
  const fields = decl.map(([n, type]) => {
    const a = alignOf(type);
    off = Math.ceil(off / a) * a;
    const f = { name: n, type, offset: off };
    off += sizeOf(type);
    return f;
  });
  const s: Struct = { name, size: 0, fields };
  const a = fields.length ? alignOf(s) : 1;
  s.size = Math.ceil(off / a) * a;
  return s;
}

// ---------------------------------------------------------------------------------------------
// The structures (include/uapi/linux/fuse.h). Names are the kernel's.
// ---------------------------------------------------------------------------------------------

/** Attributes of an inode, as in a stat; times in seconds plus nanoseconds. */
export const fuse_attr = struct('fuse_attr', [
  ['ino', 'u64'], ['size', 'u64'], ['blocks', 'u64'], ['atime', 'u64'], ['mtime', 'u64'], ['ctime', 'u64'],
  ['atimensec', 'u32'], ['mtimensec', 'u32'], ['ctimensec', 'u32'], ['mode', 'u32'], ['nlink', 'u32'],
  ['uid', 'u32'], ['gid', 'u32'], ['rdev', 'u32'], ['blksize', 'u32'], ['flags', 'u32'],
]);

/** STATFS reply body. */
export const fuse_kstatfs = struct('fuse_kstatfs', [
  ['blocks', 'u64'], ['bfree', 'u64'], ['bavail', 'u64'], ['files', 'u64'], ['ffree', 'u64'],
  ['bsize', 'u32'], ['namelen', 'u32'], ['frsize', 'u32'], ['padding', 'u32'], ['spare', { array: 'u32', n: 6 }],
]);

/** Header of every request read from /dev/fuse; `len` counts the whole request. */
export const fuse_in_header = struct('fuse_in_header', [
  ['len', 'u32'], ['opcode', 'u32'], ['unique', 'u64n'], ['nodeid', 'u64'],
  ['uid', 'u32'], ['gid', 'u32'], ['pid', 'u32'], ['total_extlen', 'u16'], ['padding', 'u16'],
]);

/** Header of every reply written to /dev/fuse; `error` is 0 or a negative errno. A notification has unique 0 and the notify code in `error`. */
export const fuse_out_header = struct('fuse_out_header', [['len', 'u32'], ['error', 'i32'], ['unique', 'u64n']]);

/** INIT request (7.36+: flags2 holds flag bits 32..63 when FUSE_INIT_EXT is set). */
export const fuse_init_in = struct('fuse_init_in', [
  ['major', 'u32'], ['minor', 'u32'], ['max_readahead', 'u32'], ['flags', 'u32'], ['flags2', 'u32'], ['unused', { array: 'u32', n: 11 }],
]);

/** INIT reply (7.40 layout: max_stack_depth; 7.43 adds request_timeout in what was unused). */
export const fuse_init_out = struct('fuse_init_out', [
  ['major', 'u32'], ['minor', 'u32'], ['max_readahead', 'u32'], ['flags', 'u32'],
  ['max_background', 'u16'], ['congestion_threshold', 'u16'], ['max_write', 'u32'], ['time_gran', 'u32'],
  ['max_pages', 'u16'], ['map_alignment', 'u16'], ['flags2', 'u32'], ['max_stack_depth', 'u32'],
  ['request_timeout', 'u16'], ['unused', { array: 'u16', n: 11 }],
]);

/** LOOKUP (and READDIRPLUS) reply: a node id the kernel now holds one lookup of, and cache times. Node id 0 caches a negative entry. */
export const fuse_entry_out = struct('fuse_entry_out', [
  ['nodeid', 'u64'], ['generation', 'u64'], ['entry_valid', 'u64'], ['attr_valid', 'u64'],
  ['entry_valid_nsec', 'u32'], ['attr_valid_nsec', 'u32'], ['attr', fuse_attr],
]);

/** FORGET request: drop `nlookup` lookups of the request's node id (no reply). */
export const fuse_forget_in = struct('fuse_forget_in', [['nlookup', 'u64']]);
/** One entry of BATCH_FORGET. */
export const fuse_forget_one = struct('fuse_forget_one', [['nodeid', 'u64'], ['nlookup', 'u64']]);
/** BATCH_FORGET request: `count` fuse_forget_one follow (no reply). */
export const fuse_batch_forget_in = struct('fuse_batch_forget_in', [['count', 'u32'], ['dummy', 'u32']]);

export const fuse_getattr_in = struct('fuse_getattr_in', [['getattr_flags', 'u32'], ['dummy', 'u32'], ['fh', 'u64']]);
/** GETATTR reply. */
export const fuse_attr_out = struct('fuse_attr_out', [['attr_valid', 'u64'], ['attr_valid_nsec', 'u32'], ['dummy', 'u32'], ['attr', fuse_attr]]);

/** OPEN and OPENDIR request: open(2) flags. */
export const fuse_open_in = struct('fuse_open_in', [['flags', 'u32'], ['open_flags', 'u32']]);
/** OPEN and OPENDIR reply: our handle and FOPEN_* flags (7.40: backing_id for passthrough). */
export const fuse_open_out = struct('fuse_open_out', [['fh', 'u64'], ['open_flags', 'u32'], ['backing_id', 'i32']]);

/** RELEASE and RELEASEDIR request. */
export const fuse_release_in = struct('fuse_release_in', [['fh', 'u64'], ['flags', 'u32'], ['release_flags', 'u32'], ['lock_owner', 'u64']]);

/** READ and READDIR(PLUS) request: `size` bytes at `offset` (a directory offset is ours: the index of the next entry). */
export const fuse_read_in = struct('fuse_read_in', [
  ['fh', 'u64'], ['offset', 'u64'], ['size', 'u32'], ['read_flags', 'u32'], ['lock_owner', 'u64'], ['flags', 'u32'], ['padding', 'u32'],
]);

/** GETXATTR and LISTXATTR request (GETXATTR's name follows, NUL-terminated); size 0 asks for the size. */
export const fuse_getxattr_in = struct('fuse_getxattr_in', [['size', 'u32'], ['padding', 'u32']]);
/** GETXATTR/LISTXATTR reply when the request's size was 0. */
export const fuse_getxattr_out = struct('fuse_getxattr_out', [['size', 'u32'], ['padding', 'u32']]);

/** ACCESS request: R_OK/W_OK/X_OK bits. */
export const fuse_access_in = struct('fuse_access_in', [['mask', 'u32'], ['padding', 'u32']]);

/** INTERRUPT request: the unique of the request to abandon. */
export const fuse_interrupt_in = struct('fuse_interrupt_in', [['unique', 'u64n']]);

/** STATFS reply. */
export const fuse_statfs_out = struct('fuse_statfs_out', [['st', fuse_kstatfs]]);

/** One READDIR record; the name follows, and the record is padded to 8 bytes. `off` is the offset of the next record. */
export const fuse_dirent = struct('fuse_dirent', [['ino', 'u64'], ['off', 'u64'], ['namelen', 'u32'], ['type', 'u32']]);
/** One READDIRPLUS record: an entry (a lookup the kernel now holds, unless nodeid is 0) then a dirent. */
export const fuse_direntplus = struct('fuse_direntplus', [['entry_out', fuse_entry_out], ['dirent', fuse_dirent]]);

// ---------------------------------------------------------------------------------------------
// Opcodes, flags and codes
// ---------------------------------------------------------------------------------------------

export const Op = {
  LOOKUP: 1, FORGET: 2, GETATTR: 3, SETATTR: 4, READLINK: 5, SYMLINK: 6, MKNOD: 8, MKDIR: 9, UNLINK: 10,
  RMDIR: 11, RENAME: 12, LINK: 13, OPEN: 14, READ: 15, WRITE: 16, STATFS: 17, RELEASE: 18, FSYNC: 20,
  SETXATTR: 21, GETXATTR: 22, LISTXATTR: 23, REMOVEXATTR: 24, FLUSH: 25, INIT: 26, OPENDIR: 27,
  READDIR: 28, RELEASEDIR: 29, FSYNCDIR: 30, GETLK: 31, SETLK: 32, SETLKW: 33, ACCESS: 34, CREATE: 35,
  INTERRUPT: 36, BMAP: 37, DESTROY: 38, IOCTL: 39, POLL: 40, NOTIFY_REPLY: 41, BATCH_FORGET: 42,
  FALLOCATE: 43, READDIRPLUS: 44, RENAME2: 45, LSEEK: 46, COPY_FILE_RANGE: 47, SETUPMAPPING: 48,
  REMOVEMAPPING: 49, SYNCFS: 50, TMPFILE: 51, STATX: 52,
} as const;

/** Opcodes that would change the filesystem: answered EROFS. */
export const WRITING_OPS: ReadonlySet<number> = new Set([
  Op.SETATTR, Op.SYMLINK, Op.MKNOD, Op.MKDIR, Op.UNLINK, Op.RMDIR, Op.RENAME, Op.LINK, Op.WRITE, Op.SETXATTR,
  Op.REMOVEXATTR, Op.CREATE, Op.FALLOCATE, Op.RENAME2, Op.COPY_FILE_RANGE, Op.TMPFILE,
]);

/** INIT flags (bits 32..63 travel in flags2, shifted down by 32). */
export const Init = {
  ASYNC_READ: 1 << 0,
  EXPORT_SUPPORT: 1 << 4,
  BIG_WRITES: 1 << 5,
  DO_READDIRPLUS: 1 << 13,
  READDIRPLUS_AUTO: 1 << 14,
  ASYNC_DIO: 1 << 15,
  /** The kernel takes ENOSYS to OPEN as "no OPEN/RELEASE needed on this connection". */
  NO_OPEN_SUPPORT: 1 << 17,
  PARALLEL_DIROPS: 1 << 18,
  ABORT_ERROR: 1 << 21,
  MAX_PAGES: 1 << 22,
  CACHE_SYMLINKS: 1 << 23,
  NO_OPENDIR_SUPPORT: 1 << 24,
  INIT_EXT: 1 << 30,
  /** flags2 bit: the kernel can resend pending requests (FUSE_HAS_RESEND, 1 << 39). */
  HAS_RESEND2: 1 << (39 - 32),
} as const;

/** open_flags of fuse_open_out. */
export const Fopen = { DIRECT_IO: 1 << 0, KEEP_CACHE: 1 << 1, CACHE_DIR: 1 << 3 } as const;

export const Notify = { RESEND: 7 } as const;

/** Set in fuse_in_header.unique of a request the kernel re-sent after FUSE_NOTIFY_RESEND. */
export const FUSE_UNIQUE_RESEND = 1n << 63n;

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

export interface Decoded {
  [field: string]: number | bigint | number[] | Decoded;
}

export function decode(s: Struct, buf: Buffer, off = 0): Decoded {
  const out: Decoded = {};
  for (const f of s.fields) {
    const at = off + f.offset;
    const t = f.type;
    if (typeof t === 'string') out[f.name] = readScalar(t, buf, at);
    else if ('array' in t) out[f.name] = Array.from({ length: t.n }, (_, i) => readScalar(t.array, buf, at + i * SCALAR_SIZE[t.array]) as number);
    else out[f.name] = decode(t, buf, at);
  }
  return out;
}

export function encode(s: Struct, buf: Buffer, off: number, v: Record<string, unknown>): number {
  for (const f of s.fields) {
    const at = off + f.offset;
    const t = f.type;
    const x = v[f.name];
    if (typeof t === 'string') writeScalar(t, buf, at, (x as number | bigint | undefined) ?? 0);
    else if ('array' in t) for (let i = 0; i < t.n; i++) writeScalar(t.array, buf, at + i * SCALAR_SIZE[t.array], (x as number[] | undefined)?.[i] ?? 0);
    else encode(t, buf, at, (x as Record<string, unknown> | undefined) ?? {});
  }
  return off + s.size;
}

function readScalar(t: Scalar, b: Buffer, at: number): number | bigint {
  switch (t) {
    case 'u16':
      return b.readUInt16LE(at);
    case 'u32':
      return b.readUInt32LE(at);
    case 'i32':
      return b.readInt32LE(at);
    case 'u64':
      return b.readUInt32LE(at) + b.readUInt32LE(at + 4) * 2 ** 32;
    case 'i64':
      return Number(b.readBigInt64LE(at));
    case 'u64n':
      return b.readBigUInt64LE(at);
  }
}

function writeScalar(t: Scalar, b: Buffer, at: number, x: number | bigint): void {
  switch (t) {
    case 'u16':
      b.writeUInt16LE(Number(x), at);
      return;
    case 'u32':
      b.writeUInt32LE(Number(x) >>> 0, at);
      return;
    case 'i32':
      b.writeInt32LE(Number(x), at);
      return;
    case 'u64': {
      const n = Number(x);
      b.writeUInt32LE(n % 2 ** 32, at);
      b.writeUInt32LE(Math.floor(n / 2 ** 32), at + 4);
      return;
    }
    case 'i64':
      b.writeBigInt64LE(BigInt(x), at);
      return;
    case 'u64n':
      b.writeBigUInt64LE(BigInt(x), at);
      return;
  }
}

/** Records in READDIR replies are padded to 8 bytes (FUSE_REC_ALIGN). */
export function recAlign(n: number): number {
  return (n + 7) & ~7;
}
