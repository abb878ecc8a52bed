/**
 * Issue 18, blob order: as upstream's builder (builder/src/core/prefetch.rs + layout.rs), the data
 * of the prefetch list's files comes first in the blob, contiguous and in list order, for tar and
 * directory sources;
 * the image still checks (every chunk against the blob meta) and reads back equal to its source
 * (unpack, and the kernel's EROFS mount for an uncompressed blob).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { checkBootstrap, createLayer, unpackToTar } from '../src/builder';
import type { CreateResult } from '../src/builder';
import { entries } from '../src/builder/check';
import type { ChunkInfo } from '../src/format/model';
import { everyKindEntries, gnuExtract, writeTar } from './helpers/tars';
import { compareTrees, mountRafs, padBlob, snapshotTree } from './helpers/erofs';
import { testWith } from './helpers/capabilities';

jest.setTimeout(5 * 60_000);
const CHUNK = 0x10000;
// Directories of the crafted tar with multi-chunk files, hard links and small files. (A hot file
// whose data an earlier cold file already stored, or a hard link read first under a cold name,
// keeps the chunks where they are: dedup wins over order.)
// The list is not in tar order: /etc comes first in the tar, last in the list.
const HOT = ['/home/user', '/xattr', '/etc'];
const rankOf = (p: string) => HOT.findIndex((h) => p === h || p.startsWith(`${h}/`));

let work: string;
let srcTar: string;
let srcDir: string;
beforeAll(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'builder-prefetch-'));
  srcTar = path.join(work, 'src.tar');
  await writeTar(srcTar, everyKindEntries(CHUNK));
  srcDir = path.join(work, 'src');
  gnuExtract(srcTar, srcDir);
});
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

async function build(name: string, source: 'tar' | 'dir', opts: { prefetch?: string[]; compressor?: 'zstd' | 'none' } = {}): Promise<CreateResult & { blobDir: string; boot: string }> {
  const blobDir = path.join(work, `${name}-blobs`);
  const boot = path.join(work, `${name}.boot`);
  const res = await createLayer({
    source: source === 'tar' ? { kind: 'tar', stream: fs.createReadStream(srcTar), gzip: false } : { kind: 'dir', path: srcDir },
    bootstrapPath: boot,
    blobDir,
    chunkSize: CHUNK,
    compressor: opts.compressor ?? 'zstd',
    prefetchFiles: opts.prefetch,
    buildTime: 0,
  });
  return { ...res, blobDir, boot };
}

/** The blob's own chunks, split by whether a hot file references them, in blob order. */
function layout(res: CreateResult): { hot: ChunkInfo[]; cold: ChunkInfo[]; rank: Map<ChunkInfo, number> } {
  const rank = new Map<ChunkInfo, number>();
  const all = new Set<ChunkInfo>();
  for (const [p, inode] of entries(res.image.root)) {
    for (const c of inode.chunks ?? []) {
      all.add(c);
      if (rankOf(p) >= 0) rank.set(c, rankOf(p));
    }
  }
  const byOffset = (a: ChunkInfo, b: ChunkInfo) => a.compressedOffset - b.compressedOffset;
  return { hot: [...rank.keys()].sort(byOffset), cold: [...all].filter((c) => !rank.has(c)).sort(byOffset), rank };
}

function expectHotFirst(res: CreateResult, aligned: boolean): void {
  const { hot, cold, rank } = layout(res);
  expect(hot.length).toBeGreaterThan(4);
  expect(cold.length).toBeGreaterThan(4);
  // Contiguous from offset 0: each hot chunk starts where the one before ended (4 KiB aligned without compression).
  let end = 0;
  for (const c of hot) {
    expect(c.compressedOffset).toBe(end);
    end = aligned ? Math.ceil((c.compressedOffset + c.compressedSize) / 4096) * 4096 : c.compressedOffset + c.compressedSize;
  }
  expect(res.prefetchSize).toBe(end);
  // In list order: every rank's chunks before the next rank's.
  const ranks = hot.map((c) => rank.get(c)!);
  expect(ranks).toEqual([...ranks].sort((a, b) => a - b));
  expect(new Set(ranks)).toEqual(new Set([0, 1, 2]));
  expect(cold[0].compressedOffset).toBeGreaterThanOrEqual(end);
  // Chunk indexes follow blob order (the blob meta and digest arrays are indexed by them).
  const ordered = [...hot, ...cold];
  expect(ordered.map((c) => c.index)).toEqual(ordered.map((_, i) => i));
  expect(ordered.map((c) => c.uncompressedOffset)).toEqual([...ordered.map((c) => c.uncompressedOffset)].sort((a, b) => a - b));
}

async function expectReadsEqual(res: CreateResult & { blobDir: string; boot: string }, name: string): Promise<void> {
  const report = await checkBootstrap(res.boot, res.blobDir);
  expect(report.verifiedChunks).toBe(report.chunks);
  const out = path.join(work, `${name}.out.tar`);
  const stream = fs.createWriteStream(out);
  const closed = new Promise((r) => stream.on('close', r));
  await unpackToTar(res.image, res.blobDir, stream);
  await closed;
  gnuExtract(out, path.join(work, `${name}.got`));
  expect(compareTrees(snapshotTree(srcDir), snapshotTree(path.join(work, `${name}.got`)))).toEqual([]);
}

testWith(['root'], 'tar source, zstd: the prefetch files are first and contiguous; check and unpack pass', async () => {
  const res = await build('tar-zstd', 'tar', { prefetch: HOT });
  expectHotFirst(res, false);
  expect(res.image.prefetch).toEqual(HOT);
  await expectReadsEqual(res, 'tar-zstd');
});

testWith(['root'], 'directory source, zstd: the same order', async () => {
  const res = await build('dir-zstd', 'dir', { prefetch: HOT });
  expectHotFirst(res, false);
  await expectReadsEqual(res, 'dir-zstd');
});

testWith(['root', 'erofs', 'loop'], 'tar source, no compression: hot region 4 KiB aligned; the kernel mounts it and reads equal', async () => {
  const res = await build('tar-none', 'tar', { prefetch: HOT, compressor: 'none' });
  expectHotFirst(res, true);
  const report = await checkBootstrap(res.boot, res.blobDir);
  expect(report.verifiedChunks).toBe(report.chunks);
  padBlob(res.blobPath!);
  const m = mountRafs(res.boot, [res.blobPath!]);
  try {
    expect(compareTrees(snapshotTree(srcDir), snapshotTree(m.dir))).toEqual([]);
  } finally {
    m.unmount();
  }
});

test('no reordering without patterns or with "/": the blob is the one built without a list', async () => {
  const plain = await build('plain', 'tar');
  const all = await build('all', 'tar', { prefetch: ['/'] });
  expect(plain.prefetchSize).toBe(0);
  expect(all.prefetchSize).toBe(0);
  expect(all.blobId).toBe(plain.blobId);
  const hot = await build('hot', 'tar', { prefetch: HOT });
  expect(hot.blobId).not.toBe(plain.blobId);
  // Same chunks, same sizes, another order: only the order changed.
  expect(hot.dataSize).toBe(plain.dataSize);
  expect(fs.readdirSync(hot.blobDir).filter((f) => f.endsWith('.cold') || f.endsWith('.hot'))).toEqual([]);
});
