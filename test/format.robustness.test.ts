/**
 * Robustness of decodeBootstrap: thousands of corrupted bootstraps (bit flips, truncations, random
 * values in superblock, inode, dirent and table fields) each end in a FormatError or a valid
 * image, within a per-case time bound (a hang guard, not a speed claim). The same bootstraps opened
 * on demand (openBootstrap, as nydusd mounts them) and walked whole give the same outcome: the same
 * tree, or a FormatError somewhere on the way.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { decodeBootstrap, openBootstrap } from '../src/format/decode';
import { encodeBootstrap } from '../src/format/encode';
import { walk } from '../src/format/walk';
import { ChunkInfo, FormatError, Inode, RafsImage, newInode } from '../src/format/model';
import { UPSTREAM_FIXTURES } from './helpers/fixtures';

/** Deterministic xorshift32 so a failing case can be replayed from its number. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 0x9e3779b9;
  return () => {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    return x / 0x1_0000_0000;
  };
}

function sampleImage(): RafsImage {
  const root = newInode('dir', 0o755, { mtime: 1000 });
  let index = 0;
  const chunk = (size: number): ChunkInfo => {
    const c: ChunkInfo = {
      digest: Buffer.alloc(32, index + 1), blobIndex: index % 2, index, flags: 0,
      compressedOffset: index * 8192, compressedSize: size, uncompressedOffset: index * 8192, uncompressedSize: size,
    };
    index++;
    return c;
  };
  const file = (size: number, extra: Partial<Inode> = {}): Inode => {
    const chunks: ChunkInfo[] = [];
    for (let o = 0; o < size; o += 4096) chunks.push(chunk(Math.min(4096, size - o)));
    return newInode('file', 0o644, { size, chunks, mtime: 1000, ...extra });
  };
  const shared = file(100);
  root.children!.set('a', file(5000, { xattrs: new Map([['user.x', Buffer.from('value')], ['security.y', Buffer.alloc(40, 1)]]) }));
  root.children!.set('b.pyc', file(10, { uid: 70000, mtime: 2000, mtimeNsec: 5 }));
  root.children!.set('hard', shared);
  root.children!.set('link', newInode('symlink', 0o777, { target: 'a', mtime: 1000 }));
  root.children!.set('dev', newInode('chardev', 0o600, { rdev: 0x0103, mtime: 1000 }));
  root.children!.set('fifo', newInode('fifo', 0o600, { mtime: 1000 }));
  const sub = newInode('dir', 0o700, { mtime: 1000 });
  root.children!.set('sub', sub);
  sub.children!.set('hard2', shared);
  const big = newInode('dir', 0o755, { mtime: 1000 });
  sub.children!.set('big', big);
  for (let i = 0; i < 400; i++) big.children!.set(`name-${i}-${'z'.repeat(i % 20)}`, i % 3 ? newInode('socket', 0o600, { mtime: 1000 }) : file(i % 7));
  const blob = (i: number) => ({
    blobId: String(i).repeat(64), compressor: 'none' as const, digester: 'sha256' as const, chunkSize: 4096, chunkCount: 0,
    compressedSize: 8192 * 1000, uncompressedSize: 8192 * 1000, features: 1, ciOffset: 0, ciCompressedSize: 0,
    ciUncompressedSize: 0, ciCompressor: 'none' as const,
  });
  return { root, blobs: [blob(1), blob(2)], chunkSize: 4096, digester: 'sha256', compressor: 'none', prefetch: ['/sub', '/a'] };
}

interface Region {
  start: number;
  end: number;
}

const FIELD_WIDTHS = [1, 2, 4, 8] as const;
const INODE_FIELDS = [0, 2, 4, 6, 8, 12, 16, 20, 24, 28, 32, 40, 44];

function mutate(base: Buffer, r: () => number, regions: Region[]): { buf: Buffer; what: string } {
  const pick = <T>(a: readonly T[]): T => a[Math.floor(r() * a.length)];
  const inRegion = (): number => {
    const g = pick(regions);
    return g.start + Math.floor(r() * Math.max(1, g.end - g.start));
  };
  const kind = Math.floor(r() * 6);
  const buf = Buffer.from(base);
  switch (kind) {
    case 0: { // random bit flips anywhere
      const n = 1 + Math.floor(r() * 16);
      for (let i = 0; i < n; i++) buf[Math.floor(r() * buf.length)] ^= 1 << Math.floor(r() * 8);
      return { buf, what: `${n} bit flips` };
    }
    case 1: { // bit flips inside structures
      const n = 1 + Math.floor(r() * 4);
      for (let i = 0; i < n; i++) buf[inRegion()] ^= 1 << Math.floor(r() * 8);
      return { buf, what: `${n} structured bit flips` };
    }
    case 2: { // truncation, often to a block multiple so it passes the size check
      const len = r() < 0.5 ? Math.floor(r() * base.length) : Math.floor(r() * (base.length / 4096)) * 4096;
      return { buf: buf.subarray(0, len), what: `truncated to ${len}` };
    }
    case 3: { // a random value in a random aligned field of a structure
      const w = pick(FIELD_WIDTHS);
      const off = Math.min(buf.length - 8, inRegion() & ~(w - 1));
      writeRandom(buf, off, w, r);
      return { buf, what: `u${w * 8} at ${off}` };
    }
    case 4: { // a random value in an inode field (32-byte slots)
      const g = regions[regions.length - 1];
      const slot = g.start + Math.floor((r() * (g.end - g.start)) / 32) * 32;
      const f = pick(INODE_FIELDS);
      const w = f % 8 === 0 ? pick([2, 4, 8] as const) : f % 4 === 0 ? pick([2, 4] as const) : 2;
      if (slot + f + w <= buf.length) writeRandom(buf, slot + f, w, r);
      return { buf, what: `inode field ${f} at slot ${slot}` };
    }
    default: { // a random value in a dirent-shaped field: nid (u64), nameoff (u16), type (u8)
      const g = regions[regions.length - 1];
      const block = g.start + Math.floor((r() * (g.end - g.start)) / 4096) * 4096;
      const d = block + Math.floor(r() * 40) * 12;
      const f = pick([0, 8, 10]);
      const w = f === 0 ? 8 : f === 8 ? 2 : 1;
      if (d + f + w <= buf.length) writeRandom(buf, d + f, w, r);
      return { buf, what: `dirent field ${f} at ${d}` };
    }
  }
}

function writeRandom(buf: Buffer, off: number, width: 1 | 2 | 4 | 8, r: () => number): void {
  const interesting = [0, 1, 0xff, 0x7fff, 0xffff, 0xffffffff, buf.length, buf.length / 32, 128, 4096];
  const v = r() < 0.5 ? interesting[Math.floor(r() * interesting.length)] : Math.floor(r() * 0x1_0000_0000);
  if (width === 1) buf.writeUInt8(v & 0xff, off);
  else if (width === 2) buf.writeUInt16LE(v & 0xffff, off);
  else if (width === 4) buf.writeUInt32LE(v >>> 0, off);
  else buf.writeBigUInt64LE(r() < 0.2 ? 0xffff_ffff_ffff_ffffn : BigInt(v), off);
}

/** Structures worth aiming at: superblocks + device table, blob/prefetch tables, chunk table, meta area. */
function regionsOf(boot: Buffer): Region[] {
  const ndev = boot.readUInt16LE(1024 + 86);
  const bt = Number(boot.readBigUInt64LE(1152 + 8));
  const btSize = boot.readUInt32LE(1152 + 16);
  const ct = Number(boot.readBigUInt64LE(1152 + 24));
  const ctSize = Number(boot.readBigUInt64LE(1152 + 32));
  const meta = boot.readUInt32LE(1024 + 40) * 4096;
  return [
    { start: 1024, end: 1408 + ndev * 128 },
    { start: bt, end: bt + btSize + 64 },
    { start: ct, end: ct + Math.max(ctSize, 80) },
    { start: meta + 4096, end: ct > meta ? ct : boot.length },
  ];
}

const PER_CASE_BOUND_MS = 5000;

/** What a whole walk of the image sees: every entry's fields and chunks, and the prefetch paths. */
function signature(img: RafsImage): string {
  const rows: unknown[] = [img.prefetch];
  for (const [p, n] of walk(img)) {
    const chunks = n.kind === 'file' ? (n.chunks ?? []).map((c) => [c.blobIndex, c.index, c.flags, c.compressedOffset, c.compressedSize, c.uncompressedOffset, c.uncompressedSize, c.digest.toString('hex')]) : [];
    rows.push([p, n.kind, n.mode, n.uid, n.gid, n.mtime, n.mtimeNsec, n.size, n.rdev, n.target, n.ino, [...n.xattrs].map(([k, v]) => k + v.toString('hex')), chunks]);
  }
  return JSON.stringify(rows);
}

/** The on-demand outcome: the signature of the whole tree, or 'FormatError' (anything else throws). */
function onDemandOutcome(buf: Buffer): string {
  try {
    return signature(openBootstrap(buf));
  } catch (e) {
    if (!(e instanceof FormatError)) throw e;
    expect(e.message).not.toMatch(/\n/);
    return 'FormatError';
  }
}

function fuzz(name: string, base: Buffer, cases: number, seed: number): void {
  test(`${name}: ${cases} corrupted bootstraps end in FormatError or a valid image`, () => {
    const regions = regionsOf(base);
    const r = rng(seed);
    let errors = 0;
    let valid = 0;
    let slowest = 0;
    for (let i = 0; i < cases; i++) {
      const { buf, what } = mutate(base, r, regions);
      const t0 = process.hrtime.bigint();
      let whole = 'FormatError';
      try {
        const img = decodeBootstrap(buf);
        whole = signature(img);
        // A decoded image must be a usable model: walkable and writable again.
        for (const entry of walk(img)) void entry;
        try {
          encodeBootstrap(img);
        } catch (e) {
          if (!(e instanceof FormatError)) throw e;
        }
        valid++;
      } catch (e) {
        if (!(e instanceof FormatError)) throw new Error(`case ${i} (${what}): ${(e as Error).stack}`);
        expect(e.message).not.toMatch(/\n/);
        errors++;
      }
      const lazy = onDemandOutcome(buf);
      if (lazy !== whole) throw new Error(`case ${i} (${what}): on demand ${lazy.slice(0, 200)}, whole ${whole.slice(0, 200)}`);
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      slowest = Math.max(slowest, ms);
      if (ms > PER_CASE_BOUND_MS) throw new Error(`case ${i} (${what}) took ${ms} ms`);
    }
    expect(errors + valid).toBe(cases);
    expect(errors).toBeGreaterThan(cases / 4);
    expect(slowest).toBeLessThanOrEqual(PER_CASE_BOUND_MS);
  });
}

describe('decodeBootstrap on corrupted input', () => {
  const ours = encodeBootstrap(sampleImage());
  const upstream = fs.readFileSync(path.join(UPSTREAM_FIXTURES, 'rafs-v6-2.2.boot'));

  test('the uncorrupted inputs decode', () => {
    expect(decodeBootstrap(ours).root.children!.size).toBe(7);
    expect(decodeBootstrap(upstream).root.children!.size).toBe(2);
  });

  test('classic malformations name the structure and offset', () => {
    expect(() => decodeBootstrap(Buffer.alloc(0))).toThrow(/bootstrap: size 0/);
    expect(() => decodeBootstrap(Buffer.alloc(8192))).toThrow(/superblock @1024: bad EROFS magic/);
    const v5 = fs.readFileSync(path.join(UPSTREAM_FIXTURES, 'v5', 'sha256-nocompress-repeatable'));
    // RAFS v5 is read (format.v5.test.ts); a v5 superblock of another version is named as such.
    expect(decodeBootstrap(v5).rafsVersion).toBe(5);
    const v4 = Buffer.from(v5);
    v4.writeUInt32LE(0x400, 4);
    expect(() => decodeBootstrap(v4)).toThrow(/^v5 superblock @4: version 0x400, only 0x500 is supported$/);
    // A first dirent whose name offset points past the directory names the dirent's byte offset.
    const img = decodeBootstrap(ours);
    expect(img.root.ino).toBe(1);
    const meta = ours.readUInt32LE(1024 + 40) * 4096;
    const rootInode = meta + 128 * 32;
    const bad = Buffer.from(ours);
    // The root is a compact inode without xattrs whose dirents are inline right after it.
    expect(bad.readUInt16LE(rootInode) >> 1).toBe(2);
    bad.writeUInt16LE(4000, rootInode + 32 + 8);
    expect(() => decodeBootstrap(bad)).toThrow(new RegExp(`^directory nid 128 block 0 dirent @${rootInode + 32}: bad first nameoff 4000`));
  });

  test('a directory cycle is detected, not followed', () => {
    const root = newInode('dir', 0o755);
    const d1 = newInode('dir', 0o755);
    root.children!.set('d1', d1);
    d1.children!.set('d2', newInode('dir', 0o755));
    const buf = encodeBootstrap({ root, blobs: [], chunkSize: 4096, digester: 'sha256', compressor: 'none', prefetch: [] });
    // d1's dirents are `.`(d1) `..`(root, nid 128) `d2`: point d2 back at the root.
    let patched = 0;
    for (let p = 4096; p + 36 <= buf.length; p += 4) {
      if (buf.readUInt16LE(p + 8) === 36 && buf.readBigUInt64LE(p) !== 128n && buf.readBigUInt64LE(p + 12) === 128n && buf.readUInt8(p + 34) === 2) {
        buf.writeBigUInt64LE(128n, p + 24);
        patched++;
      }
    }
    expect(patched).toBe(1);
    expect(() => decodeBootstrap(buf)).toThrow(/directory nid 128 reached twice \(cycle\)/);
  });

  fuzz('our bootstrap', ours, 1200, 1);
  fuzz('upstream 2.2 bootstrap', upstream, 400, 2);
});
