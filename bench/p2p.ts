/**
 * Benchmark of issue 7 (acceptance 5), and the in-process cluster it shares with test/p2p.*.
 *
 * Bench (`node dist-bench/bench/p2p.js`): four nodes, each with nydusd's read path (ChunkPipeline + blob
 * cache over [peer source, origin], zstd chunks, digest verification), read the same files of the
 * Debian fixture at the same time through one rate-limited origin, with and without the swarm.
 *
 * Test cluster: a "blob" of raw chunks named by sha256, the same rate-limited origin, and nodes with
 * a small verifying fetcher standing in for the pipeline:
 *
 *   reader -> node cache -> fetcher: [peer source, origin], every chunk sha256-checked,
 *             bad bytes -> source.rejected(range), next source
 *
 * Either way the reader's side, not the peer source, decides what is good.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import createTestnet from 'hyperdht/testnet';
import HyperDHT, { KeyPair } from 'hyperdht';
import type { BlobRange, ChunkSource, ReadContext } from '../src/fetch/source';
import { BlobCacheManager } from '../src/cache/blob-cache';
import { FetchMetrics } from '../src/fetch/metrics';
import { BlobChunks, ChunkPipeline } from '../src/fetch/pipeline';
import { compressChunk } from '../src/format/codec';
import { chunkDigest } from '../src/format/digest';
import { BlobInfo, CHUNK_COMPRESSED, ChunkInfo } from '../src/format/model';
import { closeAllHubs, p2pMetrics, peerSourceFor } from '../src/p2p/hub';
import { setLogLevel } from '../src/util/log';
import { parseP2PConfig, P2PConfig } from '../src/p2p/config';
import { PeerNode, PeerNodeOptions } from '../src/p2p/node';
import type { UpstreamFetch } from '../src/p2p/server';

export interface Chunk { digest: string; offset: number; length: number }
export interface FileEntry { rel: string; size: number; chunks: Chunk[] }
export interface FileSet { dir: string; blobId: string; blobPath: string; files: FileEntry[]; bytes: number; root: string }

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Cuts up to `maxBytes` of regular files under `root/sub` into chunks of one blob in a temp dir. */
export function buildFileSet(root: string, sub: string, maxBytes: number, chunkSize: number): FileSet {
  const files: FileEntry[] = [];
  const parts: Buffer[] = [];
  let offset = 0;
  const walk = (rel: string) => {
    for (const name of fs.readdirSync(path.join(root, rel)).sort()) {
      if (offset >= maxBytes) return;
      const r = path.join(rel, name);
      const st = fs.lstatSync(path.join(root, r));
      if (st.isDirectory()) walk(r);
      else if (st.isFile() && st.size > 0) {
        const data = fs.readFileSync(path.join(root, r));
        const chunks: Chunk[] = [];
        for (let o = 0; o < data.length; o += chunkSize) {
          const c = data.subarray(o, o + chunkSize);
          chunks.push({ digest: sha256(c), offset, length: c.length });
          parts.push(c);
          offset += c.length;
        }
        files.push({ rel: r, size: data.length, chunks });
      }
    }
  };
  walk(sub);
  const blob = Buffer.concat(parts);
  const blobId = sha256(blob);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p2p-origin-'));
  const blobPath = path.join(dir, blobId);
  fs.writeFileSync(blobPath, blob);
  return { dir, blobId, blobPath, files, bytes: offset, root };
}

/** The origin: serves ranges of blob files from a directory, at most `bytesPerSec` for all callers. */
export class RateLimitedOrigin implements ChunkSource {
  readonly name = 'origin';
  bytesSent = 0;
  private nextFree = 0;

  constructor(private readonly dir: string, private readonly bytesPerSec: number) {}

  async read(range: BlobRange): Promise<Buffer> {
    const fd = await fs.promises.open(path.join(this.dir, range.blobId), 'r');
    try {
      const buf = Buffer.alloc(range.length);
      const { bytesRead } = await fd.read(buf, 0, range.length, range.offset);
      if (bytesRead !== range.length) throw new Error(`origin: short read ${bytesRead}/${range.length}`);
      // One shared link: each answer occupies it for length/rate seconds after the previous one.
      const now = Date.now();
      this.nextFree = Math.max(now, this.nextFree) + (range.length / this.bytesPerSec) * 1000;
      await new Promise((r) => setTimeout(r, this.nextFree - now));
      this.bytesSent += range.length;
      return buf;
    } finally {
      await fd.close();
    }
  }
}

/** Tries sources in order and returns only bytes whose every chunk matched its sha256. */
export class VerifyingFetcher {
  digestFailures = 0;
  constructor(public sources: ChunkSource[], private readonly chunksAt: Map<number, Chunk>) {}

  async fetch(range: BlobRange, ctx: ReadContext = {}): Promise<Buffer> {
    const errors: string[] = [];
    for (const s of this.sources) {
      let bytes: Buffer;
      try {
        bytes = await s.read(range, ctx);
      } catch (e) {
        errors.push((e as Error).message);
        continue;
      }
      if (this.verify(range, bytes)) return bytes;
      this.digestFailures++;
      s.rejected?.(range);
      errors.push(`${s.name}: digest mismatch`);
    }
    throw new Error(`no source delivered ${range.offset}+${range.length}: ${errors.join('; ')}`);
  }

  private verify(range: BlobRange, bytes: Buffer): boolean {
    if (bytes.length !== range.length) return false;
    for (let o = 0; o < range.length;) {
      const c = this.chunksAt.get(range.offset + o);
      if (!c || o + c.length > range.length) return false;
      if (sha256(bytes.subarray(o, o + c.length)) !== c.digest) return false;
      o += c.length;
    }
    return true;
  }
}

export interface Reader {
  fetcher: VerifyingFetcher;
  cache: Map<string, Buffer>;
  /** Reads every file through cache and fetcher; returns the files whose bytes differ from disk. */
  readAll(set: FileSet, concurrency: number, onChunk?: (n: number) => void): Promise<string[]>;
}

export interface TestNode extends Reader {
  peer: PeerNode;
}

export function chunkIndex(set: FileSet): Map<number, Chunk> {
  const m = new Map<number, Chunk>();
  for (const f of set.files) for (const c of f.chunks) m.set(c.offset, c);
  return m;
}

/** A node's read path without the swarm: cache (by chunk digest, in-flight dedup) over `sources`. */
export function makeReader(set: FileSet, sources: ChunkSource[]): Reader {
  const fetcher = new VerifyingFetcher(sources, chunkIndex(set));
  const cache = new Map<string, Buffer>();
  const inflight = new Map<string, Promise<Buffer>>();
  const getChunk = (c: Chunk): Promise<Buffer> => {
    const hit = cache.get(c.digest);
    if (hit) return Promise.resolve(hit);
    let p = inflight.get(c.digest);
    if (!p) {
      p = fetcher.fetch({ blobId: set.blobId, offset: c.offset, length: c.length }, { chunkDigests: [c.digest] })
        .then((b) => (cache.set(c.digest, b), b))
        .finally(() => inflight.delete(c.digest));
      inflight.set(c.digest, p);
    }
    return p;
  };
  return {
    fetcher, cache,
    async readAll(fset: FileSet, concurrency: number, onChunk?: (n: number) => void) {
      const bad: string[] = [];
      let next = 0;
      let done = 0;
      const worker = async () => {
        while (next < fset.files.length) {
          const f = fset.files[next++];
          const parts = await Promise.all(f.chunks.map(async (c) => {
            const b = await getChunk(c);
            onChunk?.(++done);
            return b;
          }));
          if (!Buffer.concat(parts).equals(fs.readFileSync(path.join(fset.root, f.rel)))) bad.push(f.rel);
        }
      };
      await Promise.all(Array.from({ length: concurrency }, worker));
      return bad;
    },
  };
}

/** A swarm node: reads go [peer source, origin]; as an owner it fetches from the origin only. */
export function makeNode(peer: PeerNode, origin: ChunkSource, set: FileSet, opts: { upstreamOverride?: UpstreamFetch } = {}): TestNode {
  const upstream = new VerifyingFetcher([origin], chunkIndex(set));
  peer.setUpstream(opts.upstreamOverride ?? ((range, ctx) => upstream.fetch(range, ctx)));
  return { peer, ...makeReader(set, [peer.source, origin]) };
}

export interface Cluster {
  bootstrap: string[];
  destroy(): Promise<void>;
}

/** A private DHT on loopback (hyperdht's testnet): never the public bootstrap nodes. */
export async function startDht(): Promise<Cluster> {
  const tn = await createTestnet(3, { host: '127.0.0.1' });
  return { bootstrap: tn.bootstrap.map((b) => `${b.host}:${b.port}`), destroy: () => tn.destroy() };
}

export function keyPairs(n: number, salt: string): KeyPair[] {
  return Array.from({ length: n }, (_, i) => HyperDHT.keyPair(createHash('sha256').update(`${salt}/${i}`).digest()));
}

export function p2pConfig(bootstrap: string[], extra: Record<string, unknown> = {}): P2PConfig {
  const cfg = parseP2PConfig({
    enable: true, cluster_secret: 'test-cluster-secret-0123456789', bootstrap, host: '127.0.0.1',
    request_timeout_ms: 2000, ...extra,
  }, 'test');
  if (!cfg) throw new Error('p2p config unexpectedly disabled');
  return cfg;
}

export async function startNodes(
  cfg: P2PConfig, keys: KeyPair[], opts: Omit<PeerNodeOptions, 'keyPair'> = {},
): Promise<PeerNode[]> {
  const nodes: PeerNode[] = [];
  for (const kp of keys) nodes.push(await PeerNode.start(cfg, { ...opts, keyPair: kp }));
  return nodes;
}

export async function closeAll(nodes: (PeerNode | undefined)[]): Promise<void> {
  await Promise.allSettled(nodes.map((n) => n?.close()));
}

/** A zstd-compressed nydus blob of real files, with its chunk table (what a bootstrap would carry). */
export interface NydusBlob { dir: string; bc: BlobChunks; files: { abs: string; chunks: ChunkInfo[] }[]; compressedBytes: number }

export function buildNydusBlob(root: string, maxBytes: number, chunkSize: number): NydusBlob {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p2p-nydus-blob-'));
  const parts: Buffer[] = [];
  const all: ChunkInfo[] = [];
  const files: NydusBlob['files'] = [];
  let coff = 0;
  let uoff = 0;
  const walk = (d: string) => {
    for (const name of fs.readdirSync(d).sort()) {
      if (uoff >= maxBytes) return;
      const p = path.join(d, name);
      const st = fs.lstatSync(p);
      if (st.isDirectory()) walk(p);
      else if (st.isFile() && st.size > 0) {
        const data = fs.readFileSync(p);
        const chunks: ChunkInfo[] = [];
        for (let o = 0; o < data.length; o += chunkSize) {
          const raw = data.subarray(o, o + chunkSize);
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
  const data = Buffer.concat(parts);
  const blobId = chunkDigest('sha256', data).toString('hex');
  fs.writeFileSync(path.join(dir, blobId), data);
  const blob: BlobInfo = {
    blobId, compressor: 'zstd', digester: 'sha256', chunkSize, chunkCount: all.length, compressedSize: coff,
    uncompressedSize: uoff, features: 0, ciOffset: 0, ciCompressedSize: 0, ciUncompressedSize: 0, ciCompressor: 'none',
  };
  return { dir, bc: BlobChunks.fromChunks(blob, all), files, compressedBytes: coff };
}

/** Reads every file of `img` through `pipeline`; returns the files whose bytes differ from disk. */
export async function readBlobFiles(pipeline: ChunkPipeline, img: NydusBlob, concurrency: number): Promise<string[]> {
  const bad: string[] = [];
  let next = 0;
  const worker = async () => {
    while (next < img.files.length) {
      const f = img.files[next++];
      const data = Buffer.concat(await pipeline.read(img.bc, f.chunks));
      if (!data.equals(fs.readFileSync(f.abs))) bad.push(f.abs);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return bad;
}

const AMPLIFY_IO = 1 << 20; // nydusd's default amplify_io

/** One bench run: `nodes` pipelines read `img` at once through one origin; with `dht` they form a swarm. */
async function runOnce(img: NydusBlob, nodes: number, rate: number, dht?: Cluster) {
  const origin = new RateLimitedOrigin(img.dir, rate);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'p2p-bench-'));
  const caches: BlobCacheManager[] = [];
  try {
    const pipelines = await Promise.all(Array.from({ length: nodes }, async (_, i) => {
      const sources: ChunkSource[] = [origin];
      if (dht) {
        const peer = peerSourceFor(p2pConfig(dht.bootstrap, { key_file: path.join(work, `n${i}`, 'p2p.key'), cluster_secret: `bench-${path.basename(work)}` }));
        peer.attach([img.bc], () => sources);
        sources.unshift(peer);
        if (!(await peer.hub.started)) throw new Error('bench: a swarm node failed to start');
        await peer.hub.node?.membership.waitForPeers(nodes - 1, 30_000);
      }
      const cache = new BlobCacheManager(path.join(work, `n${i}`, 'cache'));
      caches.push(cache);
      return new ChunkPipeline({ cache, sources, metrics: new FetchMetrics(), amplifyIo: AMPLIFY_IO });
    }));
    const t0 = process.hrtime.bigint();
    const bad = (await Promise.all(pipelines.map((p) => readBlobFiles(p, img, 8)))).flat();
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    if (bad.length) throw new Error(`bench: ${bad.length} files read wrong, e.g. ${bad[0]}`);
    // Bytes that really came from another node (the peer source also carries a node's own owner fetches).
    const peerBytes = p2pMetrics().reduce((a, m) => a + m.bytesFromPeers, 0);
    return { seconds, originBytes: origin.bytesSent, peerBytes };
  } finally {
    await closeAllHubs();
    await Promise.allSettled(caches.map((c) => c.close()));
    fs.rmSync(work, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  setLogLevel(process.env.NYDUS_LOG_LEVEL ?? 'warn');
  const root = path.join(process.env.NYDUS_FIXTURES ?? '/var/tmp/nydus-ts-fixtures', 'debian-rootfs', 'usr/lib/python3.11');
  if (!fs.existsSync(root)) throw new Error(`${root}: Debian fixture missing; run: bash scripts/fixtures.sh debian`);
  const NODES = 4;
  const RATE = 8 * 1024 * 1024;
  const CHUNK = 1024 * 1024;
  const img = buildNydusBlob(root, 24 * 1024 * 1024, CHUNK);
  const dht = await startDht();
  try {
    const mib = (b: number) => (b / 1048576).toFixed(1);
    const base = await runOnce(img, NODES, RATE);
    const swarm = await runOnce(img, NODES, RATE, dht);
    const one = img.compressedBytes;
    const md = [
      '## P2P: four nodes read one image through a rate-limited origin',
      '',
      `${NODES} nodes in one process, each with nydusd's read path (ChunkPipeline with amplify_io 1 MiB, its own blob ` +
        `cache, zstd chunks, digest verification), read the same ${img.files.length} files (/usr/lib/python3.11 of the ` +
        `Debian fixture: ${mib(img.bc.blob.uncompressedSize)} MiB, ${mib(one)} MiB compressed in ${CHUNK / 1048576} MiB chunks) ` +
        `at the same time, 8 files in flight per node, through one origin limited to ${RATE / 1048576} MiB/s. With P2P the ` +
        'nodes form a swarm over hyperdht on a loopback DHT; each chunk has one owner (rendezvous hashing) that fetches it from the ' +
        'origin once and serves the others.',
      '',
      "| run | total time (s) | origin bytes (MiB) | origin bytes / one node's | read from other nodes (MiB) |",
      '|---|---|---|---|---|',
      `| without P2P | ${base.seconds.toFixed(2)} | ${mib(base.originBytes)} | ${(base.originBytes / one).toFixed(2)} | 0 |`,
      `| with P2P | ${swarm.seconds.toFixed(2)} | ${mib(swarm.originBytes)} | ${(swarm.originBytes / one).toFixed(2)} | ${mib(swarm.peerBytes)} |`,
      '',
      `With P2P / without: total time **${(swarm.seconds / base.seconds).toFixed(2)}x**, origin bytes ` +
        `**${(swarm.originBytes / base.originBytes).toFixed(2)}x**. All four nodes run in one process on a shared ` +
        `${os.cpus().length}-core machine, so the swarm's encryption and hashing compete with the readers for CPU.`,
      '',
    ].join('\n');
    fs.mkdirSync('bench-out', { recursive: true });
    fs.writeFileSync(path.join('bench-out', 'p2p.md'), md);
    process.stdout.write(md);
  } finally {
    await dht.destroy();
    fs.rmSync(img.dir, { recursive: true, force: true });
  }
}

if (require.main === module) {
  main().catch((e: Error) => {
    process.stderr.write(`bench p2p: error: ${e.message}\n`);
    process.exit(1);
  });
}
