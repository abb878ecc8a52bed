/**
 * The swarm under the real fetch pipeline and blob cache, as nydusd wires it: per node a
 * ChunkPipeline over [peer (hub source), origin] with its own BlobCacheManager, a zstd blob of real
 * files with sha256 chunk digests, one origin that counts the bytes it sends.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BlobCacheManager } from '../src/cache/blob-cache';
import { BlobChunks, ChunkPipeline } from '../src/fetch/pipeline';
import { FetchMetrics } from '../src/fetch/metrics';
import { compressChunk } from '../src/format/codec';
import { chunkDigest } from '../src/format/digest';
import { BlobInfo, CHUNK_COMPRESSED, ChunkInfo } from '../src/format/model';
import { closeAllHubs, InstancePeerSource, peerSourceFor } from '../src/p2p/hub';
import { PeerNode } from '../src/p2p/node';
import { closeAll, Cluster, keyPairs, p2pConfig, RateLimitedOrigin, startDht } from '../src/bench/p2p';
import { setLogLevel } from '../src/util/log';
import { debianRootfsDir } from './helpers/fixtures';

setLogLevel(process.env.NYDUS_LOG_LEVEL ?? 'warn');

const CHUNK = 256 * 1024;

interface Image { dir: string; bc: BlobChunks; files: { abs: string; chunks: ChunkInfo[] }[]; uniqueCompressed: number }

/** A zstd blob of the files under `root`, up to `max` bytes, with its chunk table. */
function buildImage(root: string, max: number): Image {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p2p-pipe-'));
  const parts: Buffer[] = [];
  const all: ChunkInfo[] = [];
  const files: Image['files'] = [];
  let coff = 0;
  let uoff = 0;
  const walk = (d: string) => {
    for (const name of fs.readdirSync(d).sort()) {
      if (uoff >= max) return;
      const p = path.join(d, name);
      const st = fs.lstatSync(p);
      if (st.isDirectory()) walk(p);
      else if (st.isFile() && st.size > 0) {
        const data = fs.readFileSync(p);
        const chunks: ChunkInfo[] = [];
        for (let o = 0; o < data.length; o += CHUNK) {
          const raw = data.subarray(o, o + CHUNK);
          const z = compressChunk('zstd', raw);
          const c: ChunkInfo = {
            digest: chunkDigest('sha256', raw), blobIndex: 0, index: all.length, flags: z.compressed ? CHUNK_COMPRESSED : 0,
            compressedOffset: coff, compressedSize: z.data.length, uncompressedOffset: uoff, uncompressedSize: raw.length,
          };
          parts.push(z.data);
          coff += z.data.length;
          uoff += Math.ceil(raw.length / 4096) * 4096;
          all.push(c);
          chunks.push(c);
        }
        files.push({ abs: p, chunks });
      }
    }
  };
  walk(root);
  const blobData = Buffer.concat(parts);
  const blobId = chunkDigest('sha256', blobData).toString('hex');
  fs.writeFileSync(path.join(dir, blobId), blobData);
  const blob: BlobInfo = {
    blobId, compressor: 'zstd', digester: 'sha256', chunkSize: CHUNK, chunkCount: all.length, compressedSize: coff,
    uncompressedSize: uoff, features: 0, ciOffset: 0, ciCompressedSize: 0, ciUncompressedSize: 0, ciCompressor: 'none',
  };
  return { dir, bc: BlobChunks.fromChunks(blob, all), files, uniqueCompressed: coff };
}

let dht: Cluster;
let img: Image;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'p2p-pipe-nodes-'));

beforeAll(async () => {
  img = buildImage(path.join(debianRootfsDir(), 'usr/lib/python3.11'), 5 * 1024 * 1024);
  dht = await startDht();
});

afterAll(async () => {
  await closeAllHubs();
  await dht?.destroy();
  fs.rmSync(tmp, { recursive: true, force: true });
  if (img) fs.rmSync(img.dir, { recursive: true, force: true });
});

interface Node { peer: InstancePeerSource; pipeline: ChunkPipeline; metrics: FetchMetrics; cache: BlobCacheManager }

async function startNode(name: string, origin: RateLimitedOrigin, extra: Record<string, unknown> = {}): Promise<Node> {
  const peer = peerSourceFor(p2pConfig(dht.bootstrap, { key_file: path.join(tmp, name, 'p2p.key'), ...extra }));
  const sources = [peer, origin];
  peer.attach([img.bc], () => sources);
  const metrics = new FetchMetrics();
  const cache = new BlobCacheManager(path.join(tmp, name, 'cache'));
  const pipeline = new ChunkPipeline({ cache, sources, metrics, amplifyIo: 0 });
  expect(await peer.hub.started).toBeDefined();
  return { peer, pipeline, metrics, cache };
}

async function readTree(n: Node): Promise<string[]> {
  const bad: string[] = [];
  let next = 0;
  const worker = async () => {
    while (next < img.files.length) {
      const f = img.files[next++];
      const data = Buffer.concat(await n.pipeline.read(img.bc, f.chunks));
      if (!data.equals(fs.readFileSync(f.abs))) bad.push(f.abs);
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
  return bad;
}

test('four pipelines with blob caches: the origin sends each chunk about once, every tree is correct', async () => {
  const origin = new RateLimitedOrigin(img.dir, 64 * 1024 * 1024);
  const nodes = await Promise.all(['n1', 'n2', 'n3', 'n4'].map((n) => startNode(n, origin)));
  await Promise.all(nodes.map(async (n) => n.peer.hub.node?.membership.waitForPeers(3, 20_000)));
  const bad = await Promise.all(nodes.map(readTree));
  expect(bad).toEqual([[], [], [], []]);
  expect(origin.bytesSent).toBeGreaterThanOrEqual(img.uniqueCompressed);
  expect(origin.bytesSent).toBeLessThanOrEqual(1.3 * img.uniqueCompressed);
  const fromPeers = nodes.reduce((a, n) => a + (n.metrics.snapshot().peer?.bytes ?? 0), 0);
  expect(fromPeers).toBeGreaterThan(img.uniqueCompressed);
  for (const n of nodes) expect(n.metrics.snapshot().peer?.digestFailures ?? 0).toBe(0);
  await Promise.all(nodes.map((n) => n.cache.close()));
});

test('bytes from a corrupting peer are refused by the pipeline, counted, and never cached or read', async () => {
  const origin = new RateLimitedOrigin(img.dir, 64 * 1024 * 1024);
  const cfg = p2pConfig(dht.bootstrap, { cluster_secret: 'second-cluster-secret-abcdef' });
  let evil: PeerNode | undefined;
  try {
    evil = await PeerNode.start(cfg, {
      keyPair: keyPairs(1, 'evil')[0],
      upstream: async (range) => {
        const b = Buffer.from(await origin.read(range));
        b[0] ^= 0x55;
        return b;
      },
    });
    const nodes = await Promise.all(['m1', 'm2', 'm3'].map((n) => startNode(n, origin, { cluster_secret: 'second-cluster-secret-abcdef' })));
    await Promise.all(nodes.map(async (n) => n.peer.hub.node?.membership.waitForPeers(3, 20_000)));
    const bad = await Promise.all(nodes.map(readTree));
    expect(bad).toEqual([[], [], []]);
    expect(evil.metrics.chunksServed).toBeGreaterThan(0);
    const refused = nodes.reduce((a, n) => a + (n.metrics.snapshot().peer?.digestFailures ?? 0), 0);
    const counted = nodes.reduce((a, n) => a + (n.peer.metrics()?.failures.digest ?? 0), 0);
    // The pipeline counts bad chunks, the peer source the refused ranges (one or more chunks each).
    expect(counted).toBeGreaterThan(0);
    expect(refused).toBeGreaterThanOrEqual(counted);
    for (const n of nodes) {
      const m = n.peer.metrics();
      if ((m?.failures.digest ?? 0) > 0) expect(n.peer.hub.node?.source.bannedPeers()).toEqual([evil.publicKey]);
    }
    await Promise.all(nodes.map((n) => n.cache.close()));
  } finally {
    await closeAll([evil]);
  }
});
