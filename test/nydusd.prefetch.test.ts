/**
 * Issue 18, prefetch from an access pattern, against a real docker-registry and a real nydusd on
 * FUSE. The Debian image is built by `nydus-image create --prefetch-files` with a workload's file
 * list (python's email, http, json, collections and asyncio packages: about 1% of the image), so
 * those files' chunks are the head of the blob.
 *
 *   - with fs_prefetch on, prefetch starts at mount, before any read, with threads_count requests in
 *     flight at once, each a merged range of at most merging_size;
 *   - an on-demand read of a chunk being prefetched joins the request in flight: no byte of the
 *     blob is requested twice, and the registry serves exactly the hot region;
 *   - laziness: the workload reads ~1% of the image and the registry serves the prefetch region
 *     plus at most one amplified read, no more;
 *   - recording: `nydusctl prefetch-list` turns a trial run's reads into the list, in read order.
 *
 * The front holds blob GETs until the test lets them go (no timing assumption for "in flight").
 * Loop before trusting a change: for i in $(seq 20); do npx jest --runInBand test/nydusd.prefetch.test.ts || break; done
 */
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { decodeBootstrap } from '../src/format/decode';
import { lookup } from '../src/format/walk';
import type { ChunkInfo, Inode, RafsImage } from '../src/format/model';
import { debianRootfsDir, debianRootfsTar, REPO_ROOT } from './helpers/fixtures';
import { nydusdBin, NydusdHandle, startNydusd } from './helpers/nydusd';
import { pushBlobFile, startRegistry, TestRegistry } from './helpers/registry';
import { describeWith } from './helpers/capabilities';

const NEEDS = ['root', 'fuse'] as const;
const REPO = 'nydus/prefetch';
const WORKLOAD = ['email', 'http', 'json', 'collections', 'asyncio'].map((d) => `/usr/lib/python3.11/${d}`);
const THREADS = 4;
const MERGE = 128 << 10;
const AMPLIFY = 128 << 10;

interface Get {
  start: number;
  end: number;
}

/** A loopback front to the registry that records blob Range GETs and can hold them until released. */
async function gateFront(target: URL) {
  const agent = new http.Agent({ keepAlive: true });
  const gets: Get[] = [];
  let held: Array<() => void> = [];
  let holding = false;
  let inFlight = 0;
  let maxInFlight = 0;
  const server = http.createServer((req, res) => {
    const isBlob = req.method === 'GET' && /\/blobs\/sha256:/.test(req.url ?? '');
    const m = /bytes=(\d+)-(\d+)/.exec(req.headers.range ?? '');
    if (isBlob && m) gets.push({ start: Number(m[1]), end: Number(m[2]) + 1 });
    const pass = () => {
      const up = http.request({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers, agent }, (ur) => {
        res.writeHead(ur.statusCode ?? 502, ur.headers);
        ur.pipe(res);
        ur.on('end', () => isBlob && inFlight--);
      });
      up.on('error', () => res.destroy());
      req.pipe(up);
    };
    if (isBlob) maxInFlight = Math.max(maxInFlight, ++inFlight);
    if (isBlob && holding) held.push(pass);
    else pass();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    host: `127.0.0.1:${(server.address() as { port: number }).port}`,
    gets,
    get held() {
      return held.length;
    },
    get maxInFlight() {
      return maxInFlight;
    },
    hold() {
      holding = true;
    },
    release() {
      holding = false;
      const go = held;
      held = [];
      for (const f of go) f();
    },
    reset() {
      gets.length = 0;
      maxInFlight = inFlight;
    },
    close: () =>
      new Promise<void>((r) => {
        holding = false;
        for (const f of held.splice(0)) f();
        agent.destroy();
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 30_000): Promise<void> {
  for (const end = Date.now() + ms; Date.now() < end; ) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** Bytes covered by the union of the ranges. */
function unionBytes(gets: Get[]): number {
  const s = [...gets].sort((a, b) => a.start - b.start);
  let total = 0;
  let end = -1;
  for (const g of s) {
    if (g.start >= end) total += g.end - g.start;
    else if (g.end > end) total += g.end - end;
    end = Math.max(end, g.end);
  }
  return total;
}

function filesUnder(n: Inode, p: string, out: Array<[string, Inode]> = []): Array<[string, Inode]> {
  if (n.kind === 'file') out.push([p, n]);
  for (const [name, c] of n.children ?? []) filesUnder(c, `${p}/${name}`, out);
  return out;
}

describeWith(NEEDS, 'nydusd prefetch from a recorded file list (registry backend, Debian image)', () => {
  let tmp: string;
  let reg: TestRegistry;
  let front: Awaited<ReturnType<typeof gateFront>>;
  let image: RafsImage;
  let boot: string;
  let hotChunks: ChunkInfo[];
  let hotEnd: number;
  let workloadFiles: Array<[string, Inode]>;
  const daemons: NydusdHandle[] = [];

  /** The daemon config of test `name`: the registry through the front, a cache of its own. */
  const configFor = (name: string, fsPrefetch: object) => ({
    device: {
      backend: { type: 'registry', config: { scheme: 'http', host: front.host, repo: REPO, timeout: 30, retry_limit: 1 } },
      cache: { type: 'blobcache', config: { work_dir: path.join(tmp, `cache-${name}`) } },
    },
    mode: 'direct',
    amplify_io: AMPLIFY,
    fs_prefetch: fsPrefetch,
  });
  const start = (name: string, fsPrefetch: object) => {
    const mountpoint = path.join(tmp, `mnt-${name}`);
    const config = configFor(name, fsPrefetch);
    return startNydusd({ dir: path.join(tmp, `daemon-${name}`), config, bootstrap: boot, mountpoint }).then((d) => {
      daemons.push(d);
      return { d, mountpoint };
    });
  };
  const prefetchDone = (d: NydusdHandle) =>
    until('prefetch to finish', async () => (await d.client.call<{ prefetch_end_time_millis: number }>('GET', '/api/v1/metrics/blobcache')).prefetch_end_time_millis > 0, 120_000);

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nydusd-prefetch-'));
    const list = path.join(tmp, 'prefetch.txt');
    fs.writeFileSync(list, WORKLOAD.join('\n') + '\n');
    boot = path.join(tmp, 'bootstrap');
    const blobs = path.join(tmp, 'blobs');
    execFileSync(path.join(REPO_ROOT, 'bin', 'nydus-image'), ['create', '-t', 'tar-rafs', '-B', boot, '-D', blobs, '--prefetch-files', list, debianRootfsTar()], { stdio: 'ignore', timeout: 600_000 });
    image = decodeBootstrap(fs.readFileSync(boot));
    expect(image.prefetch).toEqual(WORKLOAD);
    workloadFiles = WORKLOAD.flatMap((p) => filesUnder(lookup(image, p)!, p));
    const seen = new Set<number>();
    hotChunks = workloadFiles.flatMap(([, n]) => n.chunks ?? []).filter((c) => !seen.has(c.index) && seen.add(c.index));
    hotEnd = Math.max(...hotChunks.map((c) => c.compressedOffset + c.compressedSize));
    reg = await startRegistry();
    await pushBlobFile(reg, REPO, blobs, image.blobs[0].blobId);
    fs.rmSync(blobs, { recursive: true });
    front = await gateFront(new URL(reg.url));
  }, 900_000);

  afterAll(async () => {
    for (const d of daemons) await d.cleanup();
    await front?.close();
    await reg?.stop();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  test('the workload is about 1% of the image and its chunks are the head of the blob', () => {
    const read = workloadFiles.reduce((s, [, n]) => s + n.size, 0);
    expect(read / image.blobs[0].uncompressedSize).toBeGreaterThan(0.005);
    expect(read / image.blobs[0].uncompressedSize).toBeLessThan(0.02);
    // Contiguous from 0 (some workload chunks may be shared with earlier files and sit later).
    const sorted = [...hotChunks].sort((a, b) => a.compressedOffset - b.compressedOffset);
    let end = 0;
    for (const c of sorted) {
      if (c.compressedOffset !== end) break;
      end += c.compressedSize;
    }
    expect(end).toBe(hotEnd);
  });

  test('prefetch starts at mount, runs threads_count merged requests at once, and an on-demand read joins them', async () => {
    front.reset();
    front.hold();
    const { d, mountpoint } = await start('gate', { enable: true, threads_count: THREADS, merging_size: MERGE, prefetch_all: false });
    // Nothing has read the mount yet: every request is the prefetcher's.
    await until(`${THREADS} prefetch requests in flight`, () => front.held >= THREADS);
    expect(front.held).toBe(THREADS);
    for (const g of front.gets) expect(g.end - g.start).toBeLessThanOrEqual(MERGE);
    // A workload file whose first chunk is in a request being held.
    const [victim, inode] = workloadFiles.find(([, n]) => n.size > 0 && front.gets.some((g) => g.start <= n.chunks![0].compressedOffset && n.chunks![0].compressedOffset < g.end))!;
    const before = front.gets.length;
    const reading = fsp.readFile(path.join(mountpoint, victim));
    let settled = false;
    void reading.finally(() => (settled = true));
    await new Promise((r) => setTimeout(r, 1000));
    expect(settled).toBe(false);
    expect(front.gets.length).toBe(before);
    front.release();
    expect((await reading).equals(fs.readFileSync(path.join(debianRootfsDir(), victim)))).toBe(true);
    expect(inode.size).toBeGreaterThan(0);
    await prefetchDone(d);
    // Merged ranges, never more than threads_count at once, no byte asked for twice, exactly the hot region.
    expect(front.maxInFlight).toBe(THREADS);
    for (const g of front.gets) expect(g.end - g.start).toBeLessThanOrEqual(MERGE);
    expect(front.gets.length).toBeLessThanOrEqual(Math.ceil(hotEnd / (MERGE / 2)));
    const total = front.gets.reduce((s, g) => s + g.end - g.start, 0);
    expect(total).toBe(unionBytes(front.gets));
    expect(total).toBe(hotEnd);
    expect(Math.max(...front.gets.map((g) => g.end))).toBe(hotEnd);
    await d.stop();
  });

  test('a mount that fails after prefetch started stops the prefetch', async () => {
    front.reset();
    front.hold();
    // A regular file where the mountpoint should be: the image loads, prefetch starts, the FUSE
    // mount fails.
    const notDir = path.join(tmp, 'mnt-file');
    fs.writeFileSync(notDir, '');
    const d = await startNydusd({ dir: path.join(tmp, 'daemon-fail') });
    daemons.push(d);
    try {
      // Small merged requests: the hot region is many times threads_count of them.
      const config = configFor('fail', { enable: true, threads_count: THREADS, merging_size: MERGE / 4, prefetch_all: false });
      const outcome = await d.client.mount(notDir, boot, config).then(
        () => 'mounted',
        (e: Error) => e.message,
      );
      expect(outcome).not.toBe('mounted');
      front.release();
      // Whatever the prefetcher had in flight when the mount failed, and nothing after it: the hot
      // region is many more merged requests than threads_count.
      await new Promise((r) => setTimeout(r, 1500));
      expect(Math.ceil(hotEnd / (MERGE / 4))).toBeGreaterThan(4 * THREADS);
      expect(front.gets.length).toBeLessThanOrEqual(THREADS);
    } finally {
      await d.stop();
    }
  });

  test('laziness: the workload reads ~1% and the registry serves the prefetch region plus at most one amplified read', async () => {
    front.reset();
    const { d, mountpoint } = await start('lazy', { enable: true, threads_count: THREADS, merging_size: 1 << 20, prefetch_all: false });
    let read = 0;
    for (const [p, n] of workloadFiles) {
      const got = await fsp.readFile(path.join(mountpoint, p));
      expect(got.length).toBe(n.size);
      read += got.length;
    }
    await prefetchDone(d);
    const pulled = front.gets.reduce((s, g) => s + g.end - g.start, 0);
    expect(pulled).toBe(unionBytes(front.gets));
    expect(pulled).toBeGreaterThanOrEqual(hotEnd);
    expect(pulled).toBeLessThanOrEqual(hotEnd + AMPLIFY);
    // Bytes pulled against bytes read (the hot region is compressed, so it is less than read).
    expect(pulled).toBeLessThanOrEqual(read + AMPLIFY);
    expect(pulled / image.blobs[0].compressedSize).toBeLessThan(0.02);
    // Reading a cold file afterwards costs its own chunks only, not the image.
    front.reset();
    const cold = '/usr/bin/perl';
    const perl = lookup(image, cold)!;
    expect((await fsp.readFile(path.join(mountpoint, cold))).equals(fs.readFileSync(path.join(debianRootfsDir(), cold)))).toBe(true);
    const coldPulled = front.gets.reduce((s, g) => s + g.end - g.start, 0);
    const own = perl.chunks!.reduce((s, c) => s + c.compressedSize, 0);
    expect(coldPulled).toBeGreaterThanOrEqual(own);
    expect(coldPulled).toBeLessThanOrEqual(own + AMPLIFY + (1 << 20));
    await d.stop();
  });

  test('recording: nydusctl prefetch-list writes the files a trial run read, in first-read order', async () => {
    const { d, mountpoint } = await start('record', { enable: false });
    const order = ['/usr/lib/python3.11/json/decoder.py', '/etc/os-release', '/usr/lib/python3.11/json/__init__.py', '/usr/bin/dash'];
    for (const p of [...order, order[0]]) await fsp.readFile(path.join(mountpoint, p));
    // /etc/os-release is a symlink: the list names the file that holds the data.
    const listed = order.map((p) => (p === '/etc/os-release' ? '/usr/lib/os-release' : p));
    // A directory listing and a stat read no file data: they are not in the list.
    await fsp.readdir(path.join(mountpoint, 'usr', 'lib'));
    await fsp.stat(path.join(mountpoint, 'usr', 'bin', 'perl'));
    const out = path.join(tmp, 'recorded.txt');
    await promisify(execFile)(nydusdBin('nydusctl'), ['--sock', d.apisock, 'prefetch-list', '--output', out]);
    expect(fs.readFileSync(out, 'utf8')).toBe(listed.map((p) => `${p}\n`).join(''));
    const { stdout } = await promisify(execFile)(nydusdBin('nydusctl'), ['--sock', d.apisock, 'prefetch-list']);
    expect(stdout).toBe(fs.readFileSync(out, 'utf8'));
    await d.stop();
  });
});
