/**
 * The chunk pipeline and blob cache against a real blob file on disk (localfs source): lazy reads,
 * merging and amplification, in-flight dedup, digest verification with fallback to the next source,
 * poison, cache reuse across a "restart", corruption of a cached chunk, the chunk map layout.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BlobCacheManager } from '../src/cache/blob-cache';
import { MAP_HEADER_SIZE, MAP_MAGIC, MAP_MAGIC2, PersistentChunkMap } from '../src/cache/chunk-map';
import { LocalFsSource } from '../src/fetch/localfs';
import { FetchMetrics } from '../src/fetch/metrics';
import { BlobChunks, ChunkFetchError, ChunkPipeline } from '../src/fetch/pipeline';
import { BlobRange, ChunkSource, ReadContext, SourceUnavailableError } from '../src/fetch/source';
import { ChunkProblem, openChunk } from '../src/format/digest';
import { makeTestBlob, TestBlob } from './helpers/nydusd';

/** Passes reads through and remembers them. */
class Recording implements ChunkSource {
  ranges: BlobRange[] = [];
  rejectedRanges: BlobRange[] = [];
  constructor(
    readonly name: string,
    private readonly inner: ChunkSource,
    private readonly mutate?: (r: BlobRange, b: Buffer) => Buffer,
  ) {}
  async read(r: BlobRange, ctx?: ReadContext): Promise<Buffer> {
    this.ranges.push(r);
    const b = await this.inner.read(r, ctx);
    return this.mutate ? this.mutate(r, Buffer.from(b)) : b;
  }
  rejected(r: BlobRange): void {
    this.rejectedRanges.push(r);
  }
  close(): Promise<void> {
    return this.inner.close?.() ?? Promise.resolve();
  }
}

class Down implements ChunkSource {
  readonly name = 'down';
  calls = 0;
  async read(): Promise<Buffer> {
    this.calls++;
    throw new SourceUnavailableError('down', 'test source is down');
  }
}

const CHUNK = 64 * 1024;
let tmp: string;
let tb: TestBlob;
let blobDir: string;
let bc: BlobChunks;

function chunkData(i: number): Buffer {
  // Mixed content so zstd has work to do but chunks differ.
  const b = Buffer.alloc(CHUNK);
  for (let k = 0; k < CHUNK; k += 4) b.writeUInt32LE((i * 2654435761 + (k >> 6)) >>> 0, k);
  return b;
}

const opened: ChunkSource[] = [];

function setup(workName: string, sources: ChunkSource[], amplifyIo = 0, validateCache = false) {
  opened.push(...sources);
  const cache = new BlobCacheManager(path.join(tmp, workName));
  const metrics = new FetchMetrics();
  const p = new ChunkPipeline({ cache, sources, metrics, amplifyIo, validateCache });
  return { cache, metrics, p };
}

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nydusd-pipeline-'));
  tb = makeTestBlob(Array.from({ length: 32 }, (_, i) => chunkData(i)));
  blobDir = path.join(tmp, 'blobs');
  fs.mkdirSync(blobDir);
  fs.writeFileSync(path.join(blobDir, tb.blob.blobId), tb.bytes);
  bc = BlobChunks.fromChunks(tb.blob, tb.chunks);
});

afterEach(async () => {
  for (const s of opened.splice(0)) await s.close?.();
});

afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

test('BlobChunks: rows in index and offset order are taken as given; others are sorted by compressed offset, a chunk listed twice once', () => {
  const inOrder = tb.chunks.slice(0, 4);
  expect(BlobChunks.fromChunks(tb.blob, inOrder).ordered).toBe(inOrder);
  const [a, b, c] = tb.chunks;
  const shuffled = BlobChunks.fromChunks(tb.blob, [c, a, b, a]);
  expect(shuffled.ordered).toEqual([a, b, c]);
  expect([a, b, c].map((x) => shuffled.position(x))).toEqual([0, 1, 2]);
});

test('a read fetches only the chunks it needs, verifies and caches them; the next read is a cache hit', async () => {
  const src = new Recording('origin', new LocalFsSource({ dir: blobDir }));
  const { p, metrics, cache } = setup('w1', [src]);
  const [a, b] = await p.read(bc, [tb.chunks[3], tb.chunks[4]]);
  expect(a.equals(chunkData(3))).toBe(true);
  expect(b.equals(chunkData(4))).toBe(true);
  // Neighbours merge into one Range request covering exactly the two chunks.
  expect(src.ranges).toEqual([{ blobId: tb.blob.blobId, offset: tb.chunks[3].compressedOffset, length: tb.chunks[3].compressedSize + tb.chunks[4].compressedSize }]);
  expect(metrics.snapshot().origin.bytes).toBe(tb.chunks[3].compressedSize + tb.chunks[4].compressedSize);
  const [again] = await p.read(bc, [tb.chunks[3]]);
  expect(again.equals(chunkData(3))).toBe(true);
  expect(src.ranges).toHaveLength(1);
  expect(cache.stats.hits).toBe(1);
  expect(cache.stats.misses).toBe(2);
  await cache.close();
});

test('the pipeline clocks decompression and verification of fetched chunks, not of cache hits', async () => {
  const { p, cache } = setup('wclock', [new LocalFsSource({ dir: blobDir })]);
  await p.read(bc, tb.chunks.slice(0, 8));
  const after = { ...p.clock };
  expect(after.decompressMs).toBeGreaterThan(0);
  expect(after.verifyMs).toBeGreaterThan(0);
  await p.read(bc, tb.chunks.slice(0, 8));
  expect(p.clock).toEqual(after);
  await cache.close();
});

test('openChunk: the one check every reader uses names a bad decompression apart from a digest mismatch', () => {
  const c = tb.chunks[2];
  const stored = tb.bytes.subarray(c.compressedOffset, c.compressedOffset + c.compressedSize);
  const good = openChunk(tb.blob, c, stored);
  expect(Buffer.isBuffer(good) && good.equals(chunkData(2))).toBe(true);
  const garbage = openChunk(tb.blob, c, Buffer.alloc(c.compressedSize, 7));
  expect(garbage).toBeInstanceOf(ChunkProblem);
  expect((garbage as ChunkProblem).kind).toBe('decompress');
  // The bytes of another chunk decompress to the right size but are not this chunk.
  const other = tb.chunks[5];
  const wrong = openChunk(tb.blob, { ...c, compressedSize: other.compressedSize }, tb.bytes.subarray(other.compressedOffset, other.compressedOffset + other.compressedSize));
  expect(wrong).toEqual(new ChunkProblem('digest', 'sha256 digest mismatch'));
});

test('amplification extends a read with following uncached chunks up to amplify_io', async () => {
  const src = new Recording('origin', new LocalFsSource({ dir: blobDir }));
  const { p, cache } = setup('w2', [src], 256 * 1024);
  await p.read(bc, [tb.chunks[0]]);
  expect(src.ranges).toHaveLength(1);
  const r = src.ranges[0];
  expect(r.offset).toBe(0);
  expect(r.length).toBeLessThanOrEqual(256 * 1024);
  // The amplified chunks are now cached: reading them sends nothing.
  const covered = tb.chunks.filter((c) => c.compressedOffset + c.compressedSize <= r.length);
  expect(covered.length).toBeGreaterThan(1);
  const got = await p.read(bc, covered);
  got.forEach((g, i) => expect(g.equals(chunkData(covered[i].index))).toBe(true));
  expect(src.ranges).toHaveLength(1);
  await cache.close();
});

test('concurrent reads of one chunk fetch it once', async () => {
  const src = new Recording('origin', new LocalFsSource({ dir: blobDir }));
  const { p, cache } = setup('w3', [src]);
  const all = await Promise.all(Array.from({ length: 8 }, () => p.read(bc, [tb.chunks[7]])));
  for (const [d] of all) expect(d.equals(chunkData(7))).toBe(true);
  expect(src.ranges).toHaveLength(1);
  await cache.close();
});

test('wrong bytes from a source count a digest failure, call rejected(), and the next source serves', async () => {
  const local = new LocalFsSource({ dir: blobDir });
  const bad = new Recording('mirror:bad', local, (_r, b) => {
    b[10] ^= 0xff;
    return b;
  });
  const down = new Down();
  const good = new Recording('origin', local);
  const { p, metrics, cache } = setup('w4', [down, bad, good]);
  const [d] = await p.read(bc, [tb.chunks[5]]);
  expect(d.equals(chunkData(5))).toBe(true);
  expect(down.calls).toBe(1);
  expect(bad.rejectedRanges).toHaveLength(1);
  const s = metrics.snapshot();
  expect(s['mirror:bad'].digestFailures).toBe(1);
  expect(s.origin.digestFailures).toBe(0);
  expect(s.down.unavailable).toBe(1);
  expect(s.down.errors).toBe(0);
  await cache.close();
});

test('poison: when every source lies the read fails with EIO, nothing is cached, other chunks read fine', async () => {
  const local = new LocalFsSource({ dir: blobDir });
  const target = tb.chunks[9];
  const poison = new Recording('origin', local, (r, b) => {
    const off = target.compressedOffset - r.offset;
    if (off >= 0 && off < b.length) b[off + 8] ^= 0x55;
    return b;
  });
  const { p, metrics, cache } = setup('w5', [poison], 1 << 20);
  const err = await p.read(bc, [target]).then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(ChunkFetchError);
  expect((err as ChunkFetchError).digestMismatch).toBe(true);
  expect((err as ChunkFetchError).code).toBe('EIO');
  expect(metrics.snapshot().origin.digestFailures).toBe(1);
  const cf = await cache.get(tb.blob);
  expect(cf.isReady(target)).toBe(false);
  const [other] = await p.read(bc, [tb.chunks[12]]);
  expect(other.equals(chunkData(12))).toBe(true);
  await cache.close();
});

test('the cache survives a restart (zero source bytes) and a corrupted cached chunk is refetched, not served', async () => {
  const work = 'w6';
  {
    const src = new Recording('origin', new LocalFsSource({ dir: blobDir }));
    const { p, cache } = setup(work, [src]);
    await p.read(bc, [tb.chunks[1], tb.chunks[2], tb.chunks[20]]);
    await cache.close();
  }
  {
    const src = new Recording('origin', new LocalFsSource({ dir: blobDir }));
    const { p, metrics, cache } = setup(work, [src]);
    const got = await p.read(bc, [tb.chunks[1], tb.chunks[2], tb.chunks[20]]);
    got.forEach((g, i) => expect(g.equals(chunkData([1, 2, 20][i]))).toBe(true));
    expect(src.ranges).toHaveLength(0);
    expect(metrics.snapshot().origin).toBeUndefined();
    await cache.close();
  }
  // Flip bytes of chunk 20 inside the cache file.
  const dataFile = path.join(tmp, work, `${tb.blob.blobId}.blob.data`);
  const fd = fs.openSync(dataFile, 'r+');
  fs.writeSync(fd, Buffer.from('garbage!'), 0, 8, tb.chunks[20].uncompressedOffset + 100);
  fs.closeSync(fd);
  {
    const src = new Recording('origin', new LocalFsSource({ dir: blobDir }));
    const { p, cache } = setup(work, [src]);
    const [d] = await p.read(bc, [tb.chunks[20]]);
    expect(d.equals(chunkData(20))).toBe(true);
    expect(src.ranges).toEqual([{ blobId: tb.blob.blobId, offset: tb.chunks[20].compressedOffset, length: tb.chunks[20].compressedSize }]);
    expect(cache.stats.corrupt).toBe(1);
    // The repaired chunk is on disk again (readers get bytes before the cache write; flush waits for it).
    await cache.flush();
    const onDisk = Buffer.alloc(CHUNK);
    const rfd = fs.openSync(dataFile, 'r');
    fs.readSync(rfd, onDisk, 0, CHUNK, tb.chunks[20].uncompressedOffset);
    fs.closeSync(rfd);
    expect(onDisk.equals(chunkData(20))).toBe(true);
    await cache.close();
  }
});

test('after a restart, concurrent reads of one cached chunk read and check it once, then read only their spans', async () => {
  const work = 'w6b';
  {
    const { p, cache } = setup(work, [new LocalFsSource({ dir: blobDir })]);
    await p.read(bc, [tb.chunks[5]]);
    await cache.close();
  }
  const src = new Recording('origin', new LocalFsSource({ dir: blobDir }));
  const { p, cache } = setup(work, [src]);
  const cf = await cache.get(tb.blob);
  const reads: [number, number][] = [];
  const inner = cf.read.bind(cf);
  cf.read = (c, from = 0, to = c.uncompressedSize) => (reads.push([from, to]), inner(c, from, to));
  const c = tb.chunks[5];
  const spans = [
    { from: 0, to: 4096 },
    { from: 4096, to: CHUNK },
    { from: 100, to: 200 },
  ];
  const got = await Promise.all(spans.map((sp) => p.read(bc, [c], {}, [sp])));
  got.forEach(([b], i) => expect(b.equals(chunkData(5).subarray(spans[i].from, spans[i].to))).toBe(true));
  // One whole-chunk read for the check, shared by the three.
  expect(reads).toEqual([[0, CHUNK]]);
  const [later] = await p.read(bc, [c], {}, [{ from: 10, to: 20 }]);
  expect(later.equals(chunkData(5).subarray(10, 20))).toBe(true);
  expect(reads).toEqual([[0, CHUNK], [10, 20]]);
  expect(src.ranges).toHaveLength(0);
  await cache.close();
});

test('setSources swaps the source list for later reads', async () => {
  const a = new Recording('a', new LocalFsSource({ dir: blobDir }));
  const b = new Recording('b', new LocalFsSource({ dir: blobDir }));
  const { p, cache } = setup('w7', [a]);
  await p.read(bc, [tb.chunks[0]]);
  p.setSources([b]);
  await p.read(bc, [tb.chunks[30]]);
  expect(a.ranges).toHaveLength(1);
  expect(b.ranges).toHaveLength(1);
  expect(p.sources().map((s) => s.name)).toEqual(['b']);
  await cache.close();
});

test('no source at all is an EIO error naming the chunk, not a hang', async () => {
  const { p, cache } = setup('w8', []);
  await expect(p.read(bc, [tb.chunks[2]])).rejects.toThrow(/chunk 2: no source could serve it/);
  await cache.close();
});

test('chunk map: nydusd layout, MSB-first bits, persisted immediately, rebuilt when damaged', () => {
  const f = path.join(tmp, 'map.chunk_map');
  const m = PersistentChunkMap.open(f, 20);
  m.setReady(0);
  m.setReady(9);
  const raw = fs.readFileSync(f);
  expect(raw.length).toBe(MAP_HEADER_SIZE + 3);
  expect(raw.readUInt32LE(0)).toBe(MAP_MAGIC);
  expect(raw.readUInt32LE(4)).toBe(1);
  expect(raw.readUInt32LE(8)).toBe(MAP_MAGIC2);
  expect(raw[MAP_HEADER_SIZE]).toBe(0x80);
  expect(raw[MAP_HEADER_SIZE + 1]).toBe(0x40);
  m.close();
  const again = PersistentChunkMap.open(f, 20);
  expect(again.isReady(0) && again.isReady(9) && !again.isReady(1)).toBe(true);
  expect(again.readyCount()).toBe(2);
  again.close();
  // A map of a different size (another blob layout) starts empty rather than lying.
  const other = PersistentChunkMap.open(f, 100);
  expect(other.readyCount()).toBe(0);
  other.close();
});
