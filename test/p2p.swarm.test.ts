/**
 * Issue 7 acceptance 1-4 with in-process nodes on a private loopback DHT: each node has its own
 * cache and verifying fetcher ([peers, origin]); the one origin is rate-limited and counts bytes.
 */
import {
  buildFileSet, closeAll, Cluster, FileSet, keyPairs, makeNode, p2pConfig, RateLimitedOrigin, startDht, startNodes,
} from '../src/bench/p2p-cluster';
import { debianRootfsDir } from './helpers/fixtures';
import * as fs from 'node:fs';
import type { PeerNode } from '../src/p2p/node';
import { setLogLevel } from '../src/util/log';

setLogLevel(process.env.NYDUS_LOG_LEVEL ?? 'warn');

const CHUNK = 128 * 1024;
const RATE = 64 * 1024 * 1024;

let dht: Cluster;
let set: FileSet;

beforeAll(async () => {
  set = buildFileSet(debianRootfsDir(), 'usr/lib/python3.11', 6 * 1024 * 1024, CHUNK);
  dht = await startDht();
});

afterAll(async () => {
  await dht?.destroy();
  if (set) fs.rmSync(set.dir, { recursive: true, force: true });
});

describe('p2p swarm', () => {
  let nodes: PeerNode[] = [];
  afterEach(async () => {
    await closeAll(nodes);
    nodes = [];
  });

  test('four nodes read the same file set: origin sends each chunk about once, every tree is correct', async () => {
    const cfg = p2pConfig(dht.bootstrap);
    nodes = await startNodes(cfg, keyPairs(4, 'a1'));
    await Promise.all(nodes.map((n) => n.membership.waitForPeers(3, 20_000)));
    const origin = new RateLimitedOrigin(set.dir, RATE);
    const tn = nodes.map((n) => makeNode(n, origin, set));
    const bad = await Promise.all(tn.map((t) => t.readAll(set, 4)));
    expect(bad).toEqual([[], [], [], []]);
    expect(set.bytes).toBeGreaterThan(1024 * 1024);
    expect(origin.bytesSent).toBeLessThanOrEqual(1.3 * set.bytes);
    expect(origin.bytesSent).toBeGreaterThanOrEqual(set.bytes);
    const m = nodes.map((n) => n.metrics.snapshot());
    expect(m.reduce((a, x) => a + x.bytesFromPeers, 0)).toBeGreaterThan(set.bytes);
    expect(m.reduce((a, x) => a + x.chunksServed, 0)).toBeGreaterThan(0);
    for (const x of m) expect(x.peers).toBe(3);
    expect(m.reduce((a, x) => a + x.failures.digest, 0)).toBe(0);
  });
});
