/**
 * How nydusd gets chunk details that an upstream bootstrap leaves to the blobs (src/daemon/mount-image.ts),
 * with stand-in sources that serve the real upstream blob and count what they are asked: nothing is
 * fetched for an image whose chunk table has what the tree uses; an image without a chunk table
 * costs exactly the blob meta, the ToC and the digest section; bytes that fail the ToC digest from
 * one source are taken from the next; a source's failure is named in one line; blobs whose chunks
 * are not plain byte ranges (ZRAN, BATCH, ...) are refused at mount without a request.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BlobCacheManager } from '../src/cache/blob-cache';
import { loadMountImage } from '../src/daemon/mount-image';
import { RafsInstance } from '../src/daemon/rafs';
import { FetchMetrics } from '../src/fetch/metrics';
import { ChunkPipeline } from '../src/fetch/pipeline';
import type { BlobRange, ChunkSource } from '../src/fetch/source';
import { decodeBootstrap } from '../src/format/decode';
import { walk } from '../src/format/walk';
import { UPSTREAM_FIXTURES } from './helpers/fixtures';

const BOOT = fs.readFileSync(path.join(UPSTREAM_FIXTURES, 'rafs-v6-2.2.boot'));
const BLOB_ID = 'be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef';
const BLOB = fs.readFileSync(path.join(UPSTREAM_FIXTURES, 'blobs', BLOB_ID));
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'mount-image-'));
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));
let n = 0;

/** A source serving `blob` (optionally altered per range), recording every range asked. */
function source(name: string, blob: Buffer, alter?: (r: BlobRange, b: Buffer) => Buffer): ChunkSource & { asked: BlobRange[] } {
  const asked: BlobRange[] = [];
  return {
    name,
    asked,
    async read(r: BlobRange): Promise<Buffer> {
      asked.push(r);
      if (r.blobId !== BLOB_ID) throw new Error(`no blob ${r.blobId}`);
      const b = Buffer.from(blob.subarray(r.offset, r.offset + r.length));
      return alter ? alter(r, b) : b;
    },
  };
}

function bootFile(mutate: (b: Buffer) => void): string {
  const b = Buffer.from(BOOT);
  mutate(b);
  const file = path.join(work, `boot-${n++}`);
  fs.writeFileSync(file, b);
  return file;
}
const noChunkTable = (b: Buffer): void => {
  b.writeBigUInt64LE(0n, 1152 + 24);
  b.writeBigUInt64LE(0n, 1152 + 32);
};
// Field by field: an image opened on demand gives chunk rows that read from the bootstrap.
const chunksOf = (img: ReturnType<typeof decodeBootstrap>) =>
  [...walk(img)].flatMap(([p, i]) =>
    (i.chunks ?? []).map((c) => ({
      p, blobIndex: c.blobIndex, index: c.index, flags: c.flags, compressedOffset: c.compressedOffset, compressedSize: c.compressedSize,
      uncompressedOffset: c.uncompressedOffset, uncompressedSize: c.uncompressedSize, digest: c.digest.toString('hex'),
    })),
  );
const cacheDir = (): string => fs.mkdtempSync(path.join(work, 'cache-'));

test('a bootstrap whose chunk table has every chunk the tree uses: no source is asked', async () => {
  const s = source('origin', BLOB);
  const blobTable = Number(BOOT.readBigUInt64LE(1152 + 8));
  // The blob claims a third chunk no file uses (as a chunk dict or a merged lower layer does).
  const file = bootFile((b) => b.writeUInt32LE(3, blobTable + 72));
  const image = await loadMountImage(file, [s], cacheDir());
  expect(chunksOf(image)).toEqual(chunksOf(decodeBootstrap(BOOT)));
  expect(s.asked).toEqual([]);
});

test('without a chunk table: blob meta, ToC and blob.digest are fetched once each, and the chunks equal the table ones', async () => {
  const s = source('origin', BLOB);
  const image = await loadMountImage(bootFile(noChunkTable), [s], cacheDir());
  expect(chunksOf(image)).toEqual(chunksOf(decodeBootstrap(BOOT)));
  const blob = decodeBootstrap(BOOT).blobs[0];
  expect(s.asked.map((r) => [r.offset, r.length])).toEqual([
    [blob.ciOffset, blob.ciCompressedSize + 4096],
    [BLOB.length - blob.tocSize!, blob.tocSize],
    expect.any(Array),
  ]);
});

test('a ToC that does not match the bootstrap is taken from the next source; when none has it, one line names each', async () => {
  const blob = decodeBootstrap(BOOT).blobs[0];
  const tocAt = BLOB.length - blob.tocSize!;
  const flipToc = (r: BlobRange, b: Buffer): Buffer => {
    if (r.offset === tocAt) b[0] ^= 1;
    return b;
  };
  const bad = source('mirror:bad', BLOB, flipToc);
  const good = source('origin', BLOB);
  const image = await loadMountImage(bootFile(noChunkTable), [bad, good], cacheDir());
  expect(chunksOf(image)).toEqual(chunksOf(decodeBootstrap(BOOT)));
  expect(good.asked.map((r) => r.offset)).toContain(tocAt);

  const err = await loadMountImage(bootFile(noChunkTable), [source('mirror:bad', BLOB, flipToc), source('origin:bad', BLOB, flipToc)], cacheDir()).catch((e: Error) => e);
  expect(err).toBeInstanceOf(Error);
  const msg = (err as Error).message;
  expect(msg.split('\n')).toHaveLength(1);
  expect(msg).toMatch(new RegExp(`^ToC of blob ${BLOB_ID} \\(bytes ${tocAt}\\+${blob.tocSize}\\): mirror:bad: ToC sha256 [0-9a-f]{64} is not the bootstrap's blob_toc_digest ${blob.tocDigest}; origin:bad: ToC sha256 `));
});

test('a blob meta kept in the work dir is used instead of asking a source for it', async () => {
  const cache = cacheDir();
  await loadMountImage(bootFile(noChunkTable), [source('origin', BLOB)], cache);
  expect(fs.existsSync(path.join(cache, `${BLOB_ID}.blob.meta`))).toBe(true);
  const s = source('origin', BLOB);
  await loadMountImage(bootFile(noChunkTable), [s], cache);
  const blob = decodeBootstrap(BOOT).blobs[0];
  expect(s.asked.map((r) => r.offset)).not.toContain(blob.ciOffset);
  expect(s.asked).toHaveLength(2);
});

describe('blobs whose chunks are not plain byte ranges are refused at mount, before any source is asked', () => {
  const blobTable = Number(BOOT.readBigUInt64LE(1152 + 8));
  test.each([
    ['ZRAN 0x8', 0x8, 'ZRAN (an OCI gzip layer read in place through inflate contexts) is not supported'],
    ['BATCH 0x80', 0x80, 'BATCH (small chunks compressed together) is not supported'],
    ['ENCRYPTED 0x100', 0x100, 'ENCRYPTED blobs are not supported'],
    ['TARFS 0x40', 0x40, 'TARFS blobs are not supported'],
    ['EXTERNAL 0x800', 0x800, 'EXTERNAL (data in another storage backend) is not supported'],
  ])('%s', async (_name, bit, why) => {
    const s = source('origin', BLOB);
    const file = bootFile((b) => b.writeUInt32LE(b.readUInt32LE(blobTable + 84) | bit, blobTable + 84));
    const image = await loadMountImage(file, [s], cacheDir());
    const pipeline = new ChunkPipeline({ cache: new BlobCacheManager(cacheDir()), sources: [s], metrics: new FetchMetrics(), amplifyIo: 0 });
    expect(() => new RafsInstance(image, pipeline)).toThrow(new Error(`blob ${BLOB_ID} cannot be read: ${why}`));
    expect(s.asked).toEqual([]);
    await pipeline.cache.close();
  });

  test('a bootstrap without chunk table whose blob meta lives in a separate blob (SEPARATE): one line', async () => {
    const file = bootFile((b) => {
      noChunkTable(b);
      b.writeUInt32LE(b.readUInt32LE(blobTable + 84) | 0x10, blobTable + 84);
    });
    const s = source('origin', BLOB);
    await expect(loadMountImage(file, [s], cacheDir())).rejects.toThrow(new Error(`blob ${BLOB_ID} keeps its blob meta in a separate blob (SEPARATE), which is not read`));
    expect(s.asked).toEqual([]);
  });
});

test('sizes a bootstrap claims for the blob meta, the ToC or the digest section are bounded before any fetch', async () => {
  const blobTable = Number(BOOT.readBigUInt64LE(1152 + 8));
  const huge = bootFile((b) => {
    noChunkTable(b);
    b.writeBigUInt64LE(1n << 40n, blobTable + 120);
  });
  const s1 = source('origin', BLOB);
  await expect(loadMountImage(huge, [s1], cacheDir())).rejects.toThrow(`blob ${BLOB_ID}: blob meta of ${2 ** 40} bytes is too large`);
  expect(s1.asked).toEqual([]);

  const bigToc = bootFile((b) => {
    noChunkTable(b);
    b.writeUInt32LE(0x7fff_ffff, blobTable + 104);
  });
  const s2 = source('origin', BLOB);
  await expect(loadMountImage(bigToc, [s2], cacheDir())).rejects.toThrow(`blob ${BLOB_ID}: ToC of ${0x7fff_ffff} bytes in a blob of ${BLOB.length}`);
  expect(s2.asked.map((r) => r.length)).toEqual([decodeBootstrap(BOOT).blobs[0].ciCompressedSize + 4096]);
});
