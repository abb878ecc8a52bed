/**
 * openBootstrap (the tree decoded on demand, what nydusd mounts) against decodeBootstrap (the whole
 * tree at once): the same tree, entry by entry, for the Debian fixture built by our nydus-image, the
 * upstream-built fixture and a hand-built image with hard links, xattrs and a prefetch table; stored
 * link counts equal the ones the whole tree gives; once every directory has been listed the tree no
 * longer reads the bootstrap (its bytes zeroed, files' chunk rows and the prefetch paths unchanged);
 * laziness shown by a corrupted directory that only fails when it is listed; chunk table rows out
 * of key order or given twice.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { decodeBootstrap, openBootstrap } from '../src/format/decode';
import { encodeBootstrap } from '../src/format/encode';
import { walk } from '../src/format/walk';
import * as L from '../src/format/layout';
import { ChunkInfo, FormatError, Inode, RafsImage, newInode } from '../src/format/model';
import { debianRootfsTar, REPO_ROOT, UPSTREAM_FIXTURES } from './helpers/fixtures';

jest.setTimeout(5 * 60_000);

const plainChunk = (c: ChunkInfo) => ({
  blobIndex: c.blobIndex, index: c.index, flags: c.flags, compressedOffset: c.compressedOffset, compressedSize: c.compressedSize,
  uncompressedOffset: c.uncompressedOffset, uncompressedSize: c.uncompressedSize, digest: c.digest.toString('hex'),
});

/** Every entry's fields, field by field (on-demand nodes are classes, chunk rows read from the buffer). */
function entries(img: RafsImage) {
  return [...walk(img)].map(([p, n]) => ({
    p, kind: n.kind, mode: n.mode, uid: n.uid, gid: n.gid, mtime: n.mtime, mtimeNsec: n.mtimeNsec, size: n.size, rdev: n.rdev,
    target: n.target, ino: n.ino, xattrs: [...n.xattrs].map(([k, v]) => [k, v.toString('hex')]),
    chunks: n.kind === 'file' ? (n.chunks ?? []).map(plainChunk) : undefined,
  }));
}

/** Link counts as the whole tree gives them: names of a non-directory, 2 + subdirectories of a directory. */
function linkCounts(img: RafsImage): Map<number, number> {
  const out = new Map<number, number>();
  for (const [, n] of walk(img)) {
    if (n.kind === 'dir') out.set(n.ino!, 2 + [...n.children!.values()].filter((c) => c.kind === 'dir').length);
    else out.set(n.ino!, (out.get(n.ino!) ?? 0) + 1);
  }
  return out;
}

function expectSameImage(boot: Buffer): void {
  const whole = decodeBootstrap(boot);
  const bytes = Buffer.from(boot);
  const lazy = openBootstrap(bytes);
  const want = entries(whole);
  expect(entries(lazy)).toEqual(want);
  expect(lazy.blobs).toEqual(whole.blobs);
  const nlink = linkCounts(whole);
  const wrong = [...walk(lazy)].filter(([, n]) => n.nlink !== nlink.get(n.ino!)).map(([p, n]) => `${p}: ${n.nlink}, whole tree ${nlink.get(n.ino!)}`);
  expect(wrong).toEqual([]);
  // Every directory is listed now: what a mounted image still needs was copied out of the bootstrap.
  bytes.fill(0);
  expect(entries(lazy)).toEqual(want);
  expect(lazy.prefetch).toEqual(whole.prefetch);
  // The prefetch paths read first, before any directory was listed.
  expect(openBootstrap(boot).prefetch).toEqual(whole.prefetch);
}

function sampleImage(): RafsImage {
  const root = newInode('dir', 0o755, { mtime: 1000 });
  let index = 0;
  const file = (size: number): Inode => {
    const chunks: ChunkInfo[] = [];
    for (let o = 0; o < size; o += 4096, index++) {
      const n = Math.min(4096, size - o);
      chunks.push({ digest: Buffer.alloc(32, index + 1), blobIndex: 0, index, flags: 0, compressedOffset: index * 4096, compressedSize: n, uncompressedOffset: index * 4096, uncompressedSize: n });
    }
    return newInode('file', 0o644, { size, chunks, mtime: 1000 });
  };
  const shared = file(100);
  root.children!.set('a', Object.assign(file(9000), { xattrs: new Map([['user.x', Buffer.from('value')]]) }));
  root.children!.set('hard', shared);
  root.children!.set('link', newInode('symlink', 0o777, { target: 'a', mtime: 1000 }));
  const sub = newInode('dir', 0o700, { mtime: 1000 });
  root.children!.set('sub', sub);
  sub.children!.set('hard2', shared);
  const deep = newInode('dir', 0o755, { mtime: 1000 });
  sub.children!.set('deep', deep);
  for (let i = 0; i < 300; i++) deep.children!.set(`n${i}`, i % 2 ? file(10) : newInode('fifo', 0o600, { mtime: 1000 }));
  const blob = {
    blobId: '1'.repeat(64), compressor: 'none' as const, digester: 'sha256' as const, chunkSize: 4096, chunkCount: index,
    compressedSize: 4096 * index, uncompressedSize: 4096 * index, features: 1, ciOffset: 0, ciCompressedSize: 0, ciUncompressedSize: 0, ciCompressor: 'none' as const,
  };
  return { root, blobs: [blob], chunkSize: 4096, digester: 'sha256', compressor: 'none', prefetch: ['/sub/deep', '/a'] };
}

test('a hand-built image (hard links, xattrs, symlink, prefetch table): the same tree, hard links one object, stored link counts', () => {
  const boot = encodeBootstrap(sampleImage());
  expectSameImage(boot);
  const lazy = openBootstrap(boot);
  expect(lazy.root.children!.get('hard')).toBe(lazy.root.children!.get('sub')!.children!.get('hard2'));
  expect(lazy.root.children!.get('hard')!.nlink).toBe(2);
  expect(lazy.inodeCount).toBe(new Set([...walk(decodeBootstrap(boot))].map(([, n]) => n.ino)).size);
});

test('the upstream-built v6 fixture: the same tree', () => {
  expectSameImage(fs.readFileSync(path.join(UPSTREAM_FIXTURES, 'rafs-v6-2.2.boot')));
});

test('the Debian fixture built by our nydus-image: the same tree', () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'on-demand-'));
  try {
    const boot = path.join(work, 'debian.boot');
    execFileSync(path.join(REPO_ROOT, 'bin', 'nydus-image'), ['create', '-t', 'tar-rafs', '-B', boot, '-D', path.join(work, 'blobs'), debianRootfsTar()], { stdio: 'ignore' });
    expectSameImage(fs.readFileSync(boot));
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
});

test('a corrupted directory fails only when it is listed, with the message the whole decode gives', () => {
  const boot = encodeBootstrap(sampleImage());
  const whole = decodeBootstrap(boot);
  // The `..` entry of /sub/deep made to point at the root instead of /sub.
  const deepNid = findDirNid(boot, '/sub/deep');
  const bad = Buffer.from(boot);
  const dotdot = direntOf(bad, deepNid, '..');
  bad.writeBigUInt64LE(BigInt(bad.readUInt16LE(1024 + 14)), dotdot);
  let wholeError = '';
  try {
    decodeBootstrap(bad);
  } catch (e) {
    expect(e).toBeInstanceOf(FormatError);
    wholeError = (e as Error).message;
  }
  expect(wholeError).toMatch(/\.\. points to nid/);
  const lazy = openBootstrap(bad);
  const sub = lazy.root.children!.get('sub')!;
  expect([...sub.children!.keys()].sort()).toEqual(['deep', 'hard2']);
  const deep = sub.children!.get('deep')!;
  expect(deep.kind).toBe('dir');
  expect(() => deep.children).toThrow(FormatError);
  expect(() => deep.children).toThrow(wholeError);
});

test('the prefetch table read by nid: the listed files without listing their directories; undefined when it names a directory', () => {
  const img = sampleImage();
  expect(openBootstrap(encodeBootstrap(img)).prefetchFiles()).toBeUndefined();
  const boot = encodeBootstrap({ ...img, prefetch: ['/sub/deep/n1', '/a'] });
  const whole = decodeBootstrap(boot);
  const want = ['/sub/deep/n1', '/a'].map((p) => [...walk(whole)].find(([q]) => q === p)![1].chunks!.map(plainChunk));
  // /sub/deep made unlistable (its `..` points at the root): a walk to name n1 would fail there.
  const bad = Buffer.from(boot);
  bad.writeBigUInt64LE(BigInt(bad.readUInt16LE(1024 + 14)), direntOf(bad, findDirNid(boot, '/sub/deep'), '..'));
  const files = openBootstrap(bad).prefetchFiles()!;
  expect(files.map((f) => f.chunks!.map(plainChunk))).toEqual(want);
  expect(() => openBootstrap(bad).prefetch).toThrow(FormatError);
});

test('a file the prefetch table read by nid is the object its directory lists later: one row per file', () => {
  const lazy = openBootstrap(encodeBootstrap({ ...sampleImage(), prefetch: ['/sub/deep/n1', '/a'] }));
  const [n1, a] = lazy.prefetchFiles()!;
  const root = lazy.root.children!;
  const sub = root.get('sub')!.children!;
  const deep = sub.get('deep')!.children!;
  expect(root.get('a')).toBe(a);
  expect(deep.get('n1')).toBe(n1);
  // Every file these three listings reached holds one row, the two read early included.
  const reached = new Set([...root.values(), ...sub.values(), ...deep.values()].filter((n) => n.kind === 'file'));
  expect(lazy.fileRows).toBe(reached.size);
});

test('a chunk info table out of key order, or with a chunk twice: found by key, a differing second row named', () => {
  const boot = encodeBootstrap(sampleImage());
  const off = Number(boot.readBigUInt64LE(L.EXT_SB_OFFSET + L.EXT.chunkTableOffset));
  const row = (i: number) => off + i * L.CHUNK_INFO_SIZE;
  // Rows 0 and 2 swapped: nothing else changes.
  const swapped = Buffer.from(boot);
  boot.copy(swapped, row(0), row(2), row(3));
  boot.copy(swapped, row(2), row(0), row(1));
  expect(entries(openBootstrap(swapped))).toEqual(entries(decodeBootstrap(boot)));
  expectSameImage(swapped);
  // Row 3 a copy of row 0: chunk 3 is then missing, found when a file using it is read.
  const twice = Buffer.from(boot);
  boot.copy(twice, row(3), row(0), row(1));
  const lazy = openBootstrap(twice);
  const missing = [...walk(lazy)].filter(([, n]) => {
    try {
      n.chunks;
      return false;
    } catch (e) {
      return e instanceof FormatError && /chunk 3 of blob 0 missing from the chunk table/.test(e.message);
    }
  });
  expect(missing).toHaveLength(1);
  // ...and a copy that differs (its compressed size): both decoders name that row.
  twice.writeUInt32LE(twice.readUInt32LE(row(3) + L.CHUNK.compressedSize) - 1, row(3) + L.CHUNK.compressedSize);
  expect(() => openBootstrap(twice)).toThrow(`chunk info @${row(3)}: two different rows for chunk 0 of blob 0`);
  expect(() => decodeBootstrap(twice)).toThrow(`chunk info @${row(3)}: two different rows for chunk 0 of blob 0`);
});

/** The nid of the directory at `p`, from the dirents (ino is not the nid). */
function findDirNid(boot: Buffer, p: string): number {
  let nid = boot.readUInt16LE(1024 + 14);
  for (const name of p.split('/').filter(Boolean)) nid = Number(boot.readBigUInt64LE(direntOf(boot, nid, name)));
  return nid;
}

/** Byte offset of the dirent called `name` in directory `nid` (one-block directories: enough here). */
function direntOf(boot: Buffer, nid: number, name: string): number {
  const meta = boot.readUInt32LE(1024 + 40) * 4096;
  const off = meta + nid * 32;
  const extended = (boot.readUInt16LE(off) & 1) === 1;
  const layout = (boot.readUInt16LE(off) >> 1) & 7;
  const size = extended ? Number(boot.readBigUInt64LE(off + 8)) : boot.readUInt32LE(off + 8);
  const icount = boot.readUInt16LE(off + 2);
  const xsize = icount ? 12 + (icount - 1) * 4 : 0;
  // Flat plain: data at i_u blocks; flat inline (layout 2): the tail right after the inode and xattrs.
  const data = layout === 2 && size <= 4096 ? off + (extended ? 64 : 32) + xsize : boot.readUInt32LE(off + 16) * 4096;
  const first = boot.readUInt16LE(data + 8);
  const n = first / 12;
  for (let i = 0; i < n; i++) {
    const d = data + i * 12;
    const start = boot.readUInt16LE(d + 8);
    const end = i + 1 < n ? boot.readUInt16LE(d + 12 + 8) : Math.min(size, 4096);
    let e = end;
    while (e > start && boot[data + e - 1] === 0) e--;
    if (boot.toString('utf8', data + start, data + e) === name) return d;
  }
  throw new Error(`no dirent ${name} in directory nid ${nid}`);
}
