/**
 * Issue 7 acceptance 1-4 with in-process nodes on a private loopback DHT: each node has its own
 * cache and verifying fetcher ([peers, origin]); the one origin is rate-limited and counts bytes.
 */
import {
  buildFileSet, closeAll, Cluster, FileSet, keyPairs, makeNode, p2pConfig, RateLimitedOrigin, startDht, startNodes,
} from '../bench/p2p';
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
    // Files with identical chunks are fetched once per node: one node's bytes are the unique chunks.
    const unique = new Map(set.files.flatMap((f) => f.chunks.map((c) => [c.digest, c.length] as const)));
    const oneNode = [...unique.values()].reduce((a, b) => a + b, 0);
    expect(origin.bytesSent).toBeGreaterThanOrEqual(oneNode);
    expect(origin.bytesSent).toBeLessThanOrEqual(1.3 * oneNode);
    const m = nodes.map((n) => n.metrics.snapshot());
    expect(m.reduce((a, x) => a + x.bytesFromPeers, 0)).toBeGreaterThan(set.bytes);
    expect(m.reduce((a, x) => a + x.chunksServed, 0)).toBeGreaterThan(0);
    for (const x of m) expect(x.peers).toBe(3);
    expect(m.reduce((a, x) => a + x.failures.digest, 0)).toBe(0);
  });

  test('the owner of some chunks is killed mid-read: reads complete from the others or the origin', async () => {
    const cfg = p2pConfig(dht.bootstrap, { request_timeout_ms: 1000 });
    nodes = await startNodes(cfg, keyPairs(4, 'a2'));
    await Promise.all(nodes.map((n) => n.membership.waitForPeers(3, 20_000)));
    const origin = new RateLimitedOrigin(set.dir, 16 * 1024 * 1024);
    const tn = nodes.map((n) => makeNode(n, origin, set));
    const victim = nodes[3];
    const total = set.files.reduce((a, f) => a + f.chunks.length, 0);
    let killed: Promise<void> | undefined;
    let servedBeforeKill = 0;
    const reads = tn.slice(0, 3).map((t, i) => t.readAll(set, 4, i === 0 ? (n) => {
      if (n === Math.floor(total / 4) && !killed) {
        servedBeforeKill = victim.metrics.chunksServed;
        killed = victim.close();
      }
    } : undefined));
    const bad = await Promise.all(reads);
    await killed;
    expect(killed).toBeDefined();
    expect(servedBeforeKill).toBeGreaterThan(0);
    expect(bad).toEqual([[], [], []]);
    for (const n of nodes.slice(0, 3)) expect(n.metrics.peers).toBe(2);
  });

  test('an owner stuck on its upstream is given up after upstream_timeout_ms and the read falls back', async () => {
    const cfg = p2pConfig(dht.bootstrap, { request_timeout_ms: 300, upstream_timeout_ms: 600 });
    nodes = await startNodes(cfg, keyPairs(4, 'a2b'));
    await Promise.all(nodes.map((n) => n.membership.waitForPeers(3, 20_000)));
    const origin = new RateLimitedOrigin(set.dir, RATE);
    // Node 3 acknowledges requests (PENDING) and its upstream never answers.
    const tn = nodes.map((n, i) => makeNode(n, origin, set, i === 3 ? { upstreamOverride: () => new Promise<Buffer>(() => undefined) } : {}));
    const bad = await Promise.all(tn.slice(0, 3).map((t) => t.readAll(set, 4)));
    expect(bad).toEqual([[], [], []]);
    const timeouts = nodes.slice(0, 3).reduce((a, n) => a + n.metrics.failures.timeout, 0);
    expect(timeouts).toBeGreaterThan(0);
    expect(nodes[3].metrics.chunksServed).toBe(0);
  });

  test('a peer serving corrupted bytes is detected, banned, and its bytes never reach a reader', async () => {
    const cfg = p2pConfig(dht.bootstrap);
    nodes = await startNodes(cfg, keyPairs(4, 'a3'));
    await Promise.all(nodes.map((n) => n.membership.waitForPeers(3, 20_000)));
    const origin = new RateLimitedOrigin(set.dir, RATE);
    const corrupt = async (range: { blobId: string; offset: number; length: number }) => {
      const b = Buffer.from(await origin.read(range));
      b[b.length >> 1] ^= 0xff;
      return b;
    };
    const tn = nodes.map((n, i) => makeNode(n, origin, set, i === 3 ? { upstreamOverride: corrupt } : {}));
    const bad = await Promise.all(tn.slice(0, 3).map((t) => t.readAll(set, 4)));
    expect(bad).toEqual([[], [], []]);
    expect(nodes[3].metrics.chunksServed).toBeGreaterThan(0);
    const detected = nodes.slice(0, 3).reduce((a, n) => a + n.metrics.failures.digest, 0);
    expect(detected).toBeGreaterThan(0);
    for (const [i, n] of nodes.slice(0, 3).entries()) {
      if (n.metrics.failures.digest > 0) expect(n.source.bannedPeers()).toEqual([nodes[3].publicKey]);
      expect(tn[i].fetcher.digestFailures).toBe(n.metrics.failures.digest);
    }
  });

  test('a node outside the allowlist gets no connection and no chunks', async () => {
    const keys = keyPairs(4, 'a4');
    const allow = keys.slice(0, 3).map((k) => k.publicKey.toString('hex'));
    const members = await startNodes(p2pConfig(dht.bootstrap, { allow }), keys.slice(0, 3));
    nodes = members;
    await Promise.all(members.map((n) => n.membership.waitForPeers(2, 20_000)));
    // The outsider knows the secret and would accept anyone, but is in nobody's allowlist.
    const [outsider] = await startNodes(p2pConfig(dht.bootstrap), keys.slice(3));
    nodes = [...members, outsider];
    for (let i = 0; i < 3; i++) {
      await outsider.membership.refresh();
      await new Promise((r) => setTimeout(r, 300));
    }
    expect(outsider.membership.livePeers().size).toBe(0);
    expect(members.reduce((a, n) => a + n.metrics.refused, 0)).toBeGreaterThan(0);
    const origin = new RateLimitedOrigin(set.dir, RATE);
    const members_ = members.map((n) => makeNode(n, origin, set));
    const t = makeNode(outsider, origin, set);
    expect(await t.readAll(set, 4)).toEqual([]);
    expect(outsider.metrics.bytesFromPeers).toBe(0);
    expect(members.reduce((a, n) => a + n.metrics.chunksServed, 0)).toBe(0);
    expect(members_.every((m) => m.peer.metrics.peers === 2)).toBe(true);
  });
});
