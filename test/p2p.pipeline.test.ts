/**
 * The swarm under the real fetch pipeline and blob cache, as nydusd wires it: per node a
 * ChunkPipeline over [peer (hub source), origin] with its own BlobCacheManager, a zstd blob of real
 * files with sha256 chunk digests, one origin that counts the bytes it sends.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BlobCacheManager } from '../src/cache/blob-cache';
import { ChunkPipeline } from '../src/fetch/pipeline';
import { FetchMetrics } from '../src/fetch/metrics';
import { closeAllHubs, InstancePeerSource, peerSourceFor } from '../src/p2p/hub';
import { PeerNode } from '../src/p2p/node';
import {
  buildNydusBlob, closeAll, Cluster, keyPairs, NydusBlob, p2pConfig, RateLimitedOrigin, readBlobFiles, startDht,
} from '../bench/p2p';
import { setLogLevel } from '../src/util/log';
import { debianRootfsDir } from './helpers/fixtures';

setLogLevel(process.env.NYDUS_LOG_LEVEL ?? 'warn');

const CHUNK = 256 * 1024;

let dht: Cluster;
let img: NydusBlob;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'p2p-pipe-nodes-'));

beforeAll(async () => {
  img = buildNydusBlob(path.join(debianRootfsDir(), 'usr/lib/python3.11'), 5 * 1024 * 1024, CHUNK);
  dht = await startDht();
});

afterAll(async () => {
  await closeAllHubs();
  await dht?.destroy();
  fs.rmSync(tmp, { recursive: true, force: true });
  if (img) fs.rmSync(img.dir, { recursive: true, force: true });
});

interface Node { peer: InstancePeerSource; pipeline: ChunkPipeline; metrics: FetchMetrics; cache: BlobCacheManager }

/** `amplifyIo` defaults to nydusd's 1 MiB; 0 gives one range per file read (many ranges, many owners). */
async function startNode(name: string, origin: RateLimitedOrigin, extra: Record<string, unknown> = {}, amplifyIo = 1 << 20): Promise<Node> {
  const peer = peerSourceFor(p2pConfig(dht.bootstrap, { key_file: path.join(tmp, name, 'p2p.key'), ...extra }));
  const sources = [peer, origin];
  peer.attach([img.bc], () => sources);
  const metrics = new FetchMetrics();
  const cache = new BlobCacheManager(path.join(tmp, name, 'cache'));
  const pipeline = new ChunkPipeline({ cache, sources, metrics, amplifyIo });
  expect(await peer.hub.started).toBeDefined();
  return { peer, pipeline, metrics, cache };
}

const readTree = (n: Node) => readBlobFiles(n.pipeline, img, 4);

test('four pipelines with blob caches: the origin sends each chunk about once, every tree is correct', async () => {
  const origin = new RateLimitedOrigin(img.dir, 64 * 1024 * 1024);
  const nodes = await Promise.all(['n1', 'n2', 'n3', 'n4'].map((n) => startNode(n, origin)));
  await Promise.all(nodes.map(async (n) => n.peer.hub.node?.membership.waitForPeers(3, 20_000)));
  const bad = await Promise.all(nodes.map(readTree));
  expect(bad).toEqual([[], [], [], []]);
  expect(origin.bytesSent).toBeGreaterThanOrEqual(img.compressedBytes);
  expect(origin.bytesSent).toBeLessThanOrEqual(1.3 * img.compressedBytes);
  // Each node gets the chunks other nodes own from them: about three quarters of the image each.
  const fromPeers = nodes.reduce((a, n) => a + (n.peer.metrics()?.bytesFromPeers ?? 0), 0);
  expect(fromPeers).toBeGreaterThan(img.compressedBytes);
  for (const n of nodes) expect(n.metrics.snapshot().peer?.digestFailures ?? 0).toBe(0);
  await Promise.all(nodes.map((n) => n.cache.close()));
});

test('bytes from a corrupting peer are refused by the pipeline, counted, and never cached or read', async () => {
  const origin = new RateLimitedOrigin(img.dir, 64 * 1024 * 1024);
  // Without amplification every file is its own range, so the corrupting node owns some for sure.
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
    const nodes = await Promise.all(['m1', 'm2', 'm3'].map((n) => startNode(n, origin, { cluster_secret: 'second-cluster-secret-abcdef' }, 0)));
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
