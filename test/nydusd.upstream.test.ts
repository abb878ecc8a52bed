/**
 * Acceptance 6: the RAFS v6 image written by upstream nydus-image 2.2 mounts with a localfs backend
 * and digest validation on; its tree matches what the kernel's EROFS driver shows for the same
 * bootstrap, and its files read (every chunk digest-verified on the way). The RAFS v5 images
 * upstream wrote serve the tree and content upstream recorded. A compressor nydusd cannot
 * decompress is refused at mount without touching any source.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { BlobCacheManager } from '../src/cache/blob-cache';
import { FetchMetrics } from '../src/fetch/metrics';
import { BlobChunks, ChunkFetchError, ChunkPipeline } from '../src/fetch/pipeline';
import { decodeBootstrap } from '../src/format/decode';
import type { Compressor } from '../src/format/model';
import { walk } from '../src/format/walk';
import { UPSTREAM_FIXTURES } from './helpers/fixtures';
import { forceUnmount, nydusdBin, NydusdHandle, startNydusd } from './helpers/nydusd';
import { Listed, readV5Result, treeJson } from './helpers/v5-result';
import { describeWith, testWith } from './helpers/capabilities';

const NEEDS = ['root', 'fuse'] as const;

interface Entry {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
}

function tree(root: string): Record<string, Entry> {
  const out: Record<string, Entry> = {};
  const visit = (rel: string) => {
    const st = fs.lstatSync(path.join(root, rel));
    const type = st.isDirectory() ? 'dir' : st.isFile() ? 'file' : st.isSymbolicLink() ? 'symlink' : 'other';
    out[rel || '/'] = { type, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, size: type === 'dir' ? 0 : st.size, mtime: Math.floor(st.mtimeMs / 1000) };
    if (st.isDirectory()) for (const n of fs.readdirSync(path.join(root, rel))) visit(path.join(rel, n));
  };
  visit('');
  return out;
}

describeWith(NEEDS, 'upstream RAFS v6 image (nydus 2.2) over localfs', () => {
  let tmp: string;
  let d: NydusdHandle | undefined;
  let kernelMnt: string;

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nydusd-upstream-'));
    kernelMnt = path.join(tmp, 'kernel');
    fs.mkdirSync(kernelMnt);
    d = await startNydusd({
      dir: path.join(tmp, 'd'),
      bootstrap: path.join(UPSTREAM_FIXTURES, 'rafs-v6-2.2.boot'),
      mountpoint: path.join(tmp, 'mnt'),
      config: {
        device: { backend: { type: 'localfs', config: { dir: path.join(UPSTREAM_FIXTURES, 'blobs') } }, cache: { type: 'blobcache', config: { work_dir: path.join(tmp, 'cache') } } },
        mode: 'direct',
        digest_validate: true,
      },
    });
  });

  afterAll(async () => {
    await d?.cleanup();
    forceUnmount(kernelMnt);
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  testWith(['erofs', 'loop'], 'the tree equals the kernel EROFS view of the same bootstrap', () => {
    execFileSync('mount', ['-t', 'erofs', '-o', 'loop,ro', path.join(UPSTREAM_FIXTURES, 'rafs-v6-2.2.boot'), kernelMnt]);
    try {
      const ours = tree(path.join(tmp, 'mnt'));
      const kernel = tree(kernelMnt);
      expect(Object.keys(ours).sort()).toEqual(['/', 'lib.rs', 'sync_io.rs']);
      expect(ours).toEqual(kernel);
    } finally {
      forceUnmount(kernelMnt);
    }
  });

  test('files read with digest validation; backend and cache metrics account for them', async () => {
    const lib = fs.readFileSync(path.join(tmp, 'mnt', 'lib.rs'), 'utf8');
    const sync = fs.readFileSync(path.join(tmp, 'mnt', 'sync_io.rs'), 'utf8');
    expect(lib.length).toBe(16931);
    expect(sync.length).toBe(13400);
    expect(lib.startsWith('// Copyright (C) 2020 Alibaba Cloud. All rights reserved.')).toBe(true);
    expect(lib).toContain('SPDX-License-Identifier: Apache-2.0');
    const backend = await d!.client.call<{ read_amount_total: number; digest_failures: number; read_errors: number }>('GET', '/api/v1/metrics/backend');
    expect(backend.read_amount_total).toBeGreaterThan(0);
    expect(backend.digest_failures).toBe(0);
    expect(backend.read_errors).toBe(0);
    const files = await d!.client.call<{ path: string }[]>('GET', '/api/v1/metrics/files');
    expect(files.map((f) => f.path).sort()).toEqual(['/lib.rs', '/sync_io.rs']);
  });
});

/**
 * The RAFS v5 images upstream nydus-image wrote, served over FUSE from a localfs backend with digest
 * validation on: the mounted tree equals the listing upstream recorded (`.result`), every file reads
 * back with the recorded md5 (lz4_block and uncompressed chunks, blake3 and sha256 digests), owners
 * follow EXPLICIT_UID_GID, and no chunk failed its digest.
 */
describeWith(NEEDS, 'upstream RAFS v5 images over localfs', () => {
  let tmp: string;
  let d: NydusdHandle | undefined;

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nydusd-upstream-v5-'));
    d = await startNydusd({ dir: path.join(tmp, 'd') });
  });

  afterAll(async () => {
    await d?.cleanup();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  const config = (name: string) => ({
    device: { backend: { type: 'localfs', config: { dir: path.join(UPSTREAM_FIXTURES, 'v5', 'blobs') } }, cache: { type: 'blobcache', config: { work_dir: path.join(tmp, `cache-${name}`) } } },
    mode: 'direct',
    digest_validate: true,
  });

  test.each([
    ['sha256-nocompress-repeatable', 'sha256-nocompress-repeatable.result', 0],
    ['blake3-lz4_block-non_repeatable', 'blake3-lz4_block-non_repeatable.result', 0],
    ['blake3-lz4_block-2020', 'blake3-lz4_block-non_repeatable.result', 1000],
  ])('%s: tree, owners and content', async (file, result, owner) => {
    const mnt = path.join(tmp, file);
    fs.mkdirSync(mnt);
    d!.mountpoints.add(mnt);
    await d!.client.mount(mnt, path.join(UPSTREAM_FIXTURES, 'v5', file), config(file));
    const want = readV5Result(path.join(UPSTREAM_FIXTURES, 'v5', result));
    const entries: Listed[] = [];
    const md5 = new Map<string, string>();
    const owners = new Set<string>();
    // Asynchronous reads: a long synchronous walk would keep this process from seeing the API
    // socket's keep-alive close, and the next request would hit a closed socket.
    const visit = async (rel: string): Promise<void> => {
      const st = await fs.promises.lstat(path.join(mnt, rel));
      owners.add(`${st.uid}:${st.gid}`);
      const kind = st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFile() ? 'file' : 'other';
      entries.push({ path: rel, kind, target: kind === 'symlink' ? await fs.promises.readlink(path.join(mnt, rel)) : undefined });
      if (kind === 'file') md5.set(`/${rel}`, createHash('md5').update(await fs.promises.readFile(path.join(mnt, rel))).digest('hex'));
      if (kind === 'dir') for (const n of await fs.promises.readdir(path.join(mnt, rel))) await visit(rel ? `${rel}/${n}` : n);
    };
    await visit('');
    expect(treeJson(entries)).toEqual(want.root);
    expect(Object.fromEntries(md5)).toEqual(Object.fromEntries(want.md5));
    // The 2022 images leave owners to the daemon (its euid/egid: root here); the 2020 one stores 1000.
    expect([...owners]).toEqual([`${owner}:${owner}`]);
    const a = fs.statSync(path.join(mnt, 'hardlink-test', 'foo'));
    expect(fs.statSync(path.join(mnt, 'normal-file-test', 'test.sh')).ino).toBe(a.ino);
    expect(a.nlink).toBe(3);
    const backend = await d!.client.call<{ read_amount_total: number; digest_failures: number; read_errors: number }>('GET', `/api/v1/metrics/backend?id=${encodeURIComponent(mnt)}`);
    expect(backend.read_amount_total).toBeGreaterThan(0);
    expect(backend.digest_failures).toBe(0);
    expect(backend.read_errors).toBe(0);
  });
});

/** Counts the HTTP requests a stand-in registry or mirror receives (it should receive none). */
async function countingServer(): Promise<{ url: string; host: string; hits: () => number; close: () => Promise<void> }> {
  let n = 0;
  const server = http.createServer((req, res) => {
    n++;
    res.statusCode = 404;
    res.end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return { url: `http://127.0.0.1:${port}`, host: `127.0.0.1:${port}`, hits: () => n, close: () => new Promise((r) => server.close(() => r())) };
}

/**
 * A compressor nydusd cannot decompress is refused at mount with one line naming it, and no source
 * is asked for a byte: no mirror can be marked down and no peer banned for our own limitation.
 */
describeWith(NEEDS, 'a blob compressor nydusd cannot decompress', () => {
  let tmp: string;
  let registry: Awaited<ReturnType<typeof countingServer>>;
  let mirror: Awaited<ReturnType<typeof countingServer>>;

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nydusd-codec-'));
    registry = await countingServer();
    mirror = await countingServer();
  });
  afterAll(async () => {
    await registry.close();
    await mirror.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  const config = () => ({
    device: {
      backend: { type: 'registry', config: { scheme: 'http', host: registry.host, repo: 'codec/test', timeout: 5, mirrors: [{ host: mirror.url }] } },
      cache: { type: 'blobcache', config: { work_dir: path.join(tmp, 'cache') } },
    },
    mode: 'direct',
    digest_validate: true,
  });

  /** Runs nydusd with --bootstrap; NODE_OPTIONS may preload a script into it. Bounded by 60 s. */
  const runNydusd = (bootstrap: string, nodeOptions?: string) => {
    const mnt = path.join(tmp, `mnt-${path.basename(bootstrap)}`);
    fs.mkdirSync(mnt, { recursive: true });
    const cfg = path.join(tmp, 'config.json');
    fs.writeFileSync(cfg, JSON.stringify(config()));
    const r = spawnSync(nydusdBin(), ['--config', cfg, '--bootstrap', bootstrap, '--mountpoint', mnt, '--apisock', path.join(tmp, 'api.sock')], {
      encoding: 'utf8',
      timeout: 60_000,
      env: { ...process.env, ...(nodeOptions ? { NODE_OPTIONS: nodeOptions } : {}) },
    });
    forceUnmount(mnt);
    return r;
  };

  test('an unknown compression algorithm in the blob table: one line at mount, no source asked', () => {
    const buf = fs.readFileSync(path.join(UPSTREAM_FIXTURES, 'rafs-v6-2.2.boot'));
    const blobTable = Number(buf.readBigUInt64LE(1152 + 8));
    buf.writeUInt32LE(9, blobTable + 76);
    const bad = path.join(tmp, 'unknown-compressor.boot');
    fs.writeFileSync(bad, buf);
    const r = runNydusd(bad);
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split('\n')).toEqual([`nydusd: error: ${bad}: blob table entry 0 @4096 +76: unknown compression algorithm 9`]);
    expect([registry.hits(), mirror.hits()]).toEqual([0, 0]);
  });

  test('lz4_block without its decoder (lz4-napi made unloadable): one line at mount, no source asked', () => {
    const hide = path.join(tmp, 'hide-lz4.js');
    // Simulates an installation without the lz4-napi package: resolving it fails like a missing module.
    fs.writeFileSync(
      hide,
      `const M = require('module'); const orig = M._resolveFilename;
       M._resolveFilename = function (req, ...rest) { if (req === 'lz4-napi') { const e = new Error("Cannot find module 'lz4-napi'"); e.code = 'MODULE_NOT_FOUND'; throw e; } return orig.call(this, req, ...rest); };`,
    );
    const boot = path.join(UPSTREAM_FIXTURES, 'v5', 'blake3-lz4_block-2020');
    const r = runNydusd(boot, `--require ${hide}`);
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split('\n')).toEqual([
      `nydusd: error: ${boot}: blob d7b86b1e74e316fe945741d1a9fa1b271459fe41481e304977659e0c6ecf56ac uses compressor lz4_block, which cannot be read: the lz4-napi package is not installed or does not load (Cannot find module 'lz4-napi')`,
    ]);
    expect([registry.hits(), mirror.hits()]).toEqual([0, 0]);
  });

  test('the pipeline never asks a source for a blob it could not decompress, and blames none', async () => {
    const src = { name: 'mirror:stand-in', reads: 0, rejections: 0, read: async () => { src.reads++; return Buffer.alloc(0); }, rejected: () => { src.rejections++; } };
    const metrics = new FetchMetrics();
    const p = new ChunkPipeline({ cache: new BlobCacheManager(path.join(tmp, 'pcache')), sources: [src], metrics, amplifyIo: 0 });
    const image = decodeBootstrap(fs.readFileSync(path.join(UPSTREAM_FIXTURES, 'rafs-v6-2.2.boot')));
    const blob = { ...image.blobs[0], compressor: 'brotli' as Compressor };
    const chunks = [...walk(image)].flatMap(([, i]) => i.chunks ?? []);
    const bc = BlobChunks.fromChunks(blob, chunks);
    const err = await p.read(bc, [chunks[0]]).catch((e: Error) => e);
    expect(err).toBeInstanceOf(ChunkFetchError);
    expect((err as ChunkFetchError).digestMismatch).toBe(false);
    expect((err as Error).message).toBe(`blob ${blob.blobId} chunk ${chunks[0].index}: unknown compressor "brotli"`);
    expect([src.reads, src.rejections, metrics.snapshot()['mirror:stand-in']?.digestFailures ?? 0]).toEqual([0, 0, 0]);
    await p.cache.close();
  });
});
