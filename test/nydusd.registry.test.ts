/**
 * Acceptance 1-4 against a real docker-registry on loopback and real FUSE: a Debian image (over
 * 150 MB, plus a few entries with xattrs, devices, hard links and an 80-byte file) built by
 * `nydus-image create`, its blob pushed to the registry, mounted by ./bin/nydusd with the registry
 * backend.
 *   2. laziness: reading one 80-byte file right after mount takes < 2 MiB from the registry;
 *   1. the mounted tree equals the source root filesystem;
 *   3. kill -9, restart: zero backend bytes; a corrupted cached chunk is refetched, not served;
 *   4. poison: a backend sending wrong bytes for one chunk makes that read fail with EIO and counts
 *      one digest failure; other files read fine.
 */
import { execFileSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { decodeBootstrap } from '../src/format/decode';
import { lookup } from '../src/format/walk';
import type { ChunkInfo, RafsImage } from '../src/format/model';
import { debianRootfsDir, debianRootfsTar, REPO_ROOT } from './helpers/fixtures';
import { describeTree, NydusdHandle, startNydusd } from './helpers/nydusd';
import { pushBlobFile, startRegistry, TestRegistry } from './helpers/registry';
import { describeWith } from './helpers/capabilities';

const NEEDS = ['root', 'fuse'] as const;
const REPO = 'nydus/debian';
const EXTRA = 'nydus-test';

interface Backend {
  read_amount_total: number;
  digest_failures: number;
  read_count: number;
}

/** A front that forwards to the registry and flips one byte of `chunk` in every answer covering it. */
function poisonFront(target: string, chunk: ChunkInfo): Promise<{ host: string; close(): Promise<void> }> {
  const server = http.createServer(async (req, res) => {
    try {
      const headers: Record<string, string> = {};
      if (req.headers.range) headers.range = req.headers.range;
      const up = await fetch(`${target}${req.url}`, { method: req.method, headers });
      const body = Buffer.from(await up.arrayBuffer());
      const m = /bytes=(\d+)-/.exec(req.headers.range ?? '');
      const start = m ? Number(m[1]) : 0;
      const at = chunk.compressedOffset + Math.floor(chunk.compressedSize / 2) - start;
      if (req.method === 'GET' && at >= 0 && at < body.length) body[at] ^= 0xff;
      const out: Record<string, string> = {};
      up.headers.forEach((v, k) => {
        if (k !== 'content-length' && k !== 'transfer-encoding' && k !== 'content-encoding') out[k] = v;
      });
      res.writeHead(up.status, { ...out, 'content-length': String(body.length) });
      res.end(req.method === 'HEAD' ? undefined : body);
    } catch (e) {
      res.writeHead(502);
      res.end(String(e));
    }
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as { port: number }).port;
      resolve({ host: `127.0.0.1:${port}`, close: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }) });
    }),
  );
}

// Reads of the mount are asynchronous: the registry's recording front and the poison front run in
// this process, and a synchronous read would block them from answering the daemon.
describeWith(NEEDS, 'nydusd over a registry backend (Debian image)', () => {
  let tmp: string;
  let reg: TestRegistry;
  let image: RafsImage;
  let boot: string;
  let extraDir: string;
  const daemons: NydusdHandle[] = [];
  const mnt = () => path.join(tmp, 'mnt');
  const config = (host: string, workDir: string) => ({
    device: {
      backend: { type: 'registry', config: { scheme: 'http', host, repo: REPO, timeout: 30, retry_limit: 1 } },
      cache: { type: 'blobcache', config: { work_dir: workDir } },
    },
    mode: 'direct',
    digest_validate: false,
    amplify_io: 1048576,
  });
  const start = async (host: string, workDir: string, mountpoint = mnt()) => {
    const d = await startNydusd({ dir: path.join(tmp, 'daemon'), config: config(host, workDir), bootstrap: boot, mountpoint });
    daemons.push(d);
    return d;
  };
  const backend = (d: NydusdHandle) => d.client.call<Backend>('GET', '/api/v1/metrics/backend');
  const blobGets = () => reg.requests().filter((r) => r.method === 'GET' && r.path.includes('/blobs/'));

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nydusd-registry-'));
    // The Debian tar plus a small directory of the entry kinds Debian does not have.
    extraDir = path.join(tmp, 'extra');
    const x = path.join(extraDir, EXTRA);
    fs.mkdirSync(x, { recursive: true });
    fs.writeFileSync(path.join(x, 'eighty.txt'), 'x'.repeat(79) + '\n');
    fs.writeFileSync(path.join(x, 'tagged'), 'file with extended attributes\n');
    execFileSync('setfattr', ['-n', 'user.nydus', '-v', 'lazy', path.join(x, 'tagged')]);
    execFileSync('setfattr', ['-n', 'trusted.note', '-v', '0x00ff10', path.join(x, 'tagged')]);
    fs.linkSync(path.join(x, 'tagged'), path.join(x, 'tagged-link'));
    execFileSync('mknod', [path.join(x, 'null'), 'c', '1', '3']);
    execFileSync('mknod', [path.join(x, 'loop9'), 'b', '7', '9']);
    execFileSync('mkfifo', [path.join(x, 'pipe')]);
    fs.symlinkSync('tagged', path.join(x, 'to-tagged'));
    fs.chmodSync(path.join(x, 'eighty.txt'), 0o4711);
    fs.chownSync(path.join(x, 'eighty.txt'), 1234, 5678);
    const tar = path.join(tmp, 'rootfs.tar');
    fs.copyFileSync(debianRootfsTar(), tar);
    execFileSync('tar', ['--numeric-owner', '--xattrs', '--xattrs-include=*', '-C', extraDir, '-rf', tar, `./${EXTRA}`]);
    boot = path.join(tmp, 'bootstrap');
    const blobs = path.join(tmp, 'blobs');
    execFileSync(path.join(REPO_ROOT, 'bin', 'nydus-image'), ['create', '-t', 'tar-rafs', '-B', boot, '-D', blobs, tar], { stdio: 'ignore', timeout: 600_000 });
    fs.rmSync(tar);
    image = decodeBootstrap(fs.readFileSync(boot));
    expect(image.blobs).toHaveLength(1);
    expect(image.blobs[0].uncompressedSize).toBeGreaterThan(150 << 20);
    reg = await startRegistry();
    await pushBlobFile(reg, REPO, blobs, image.blobs[0].blobId);
    fs.rmSync(blobs, { recursive: true });
  }, 900_000);

  afterAll(async () => {
    for (const d of daemons) await d.cleanup();
    await reg?.stop();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  test('laziness: one 80-byte file right after mount costs < 2 MiB from the registry', async () => {
    const d = await start(reg.host, path.join(tmp, 'cache'));
    reg.clearRequests();
    const text = await fsp.readFile(path.join(mnt(), EXTRA, 'eighty.txt'), 'utf8');
    expect(text).toBe('x'.repeat(79) + '\n');
    const m = await backend(d);
    expect(m.read_amount_total).toBeGreaterThan(0);
    expect(m.read_amount_total).toBeLessThan(2 << 20);
    // The registry's side: only Range GETs, together under 2 MiB.
    const gets = blobGets();
    expect(gets.length).toBeGreaterThan(0);
    let total = 0;
    for (const g of gets) {
      const r = /bytes=(\d+)-(\d+)/.exec(g.range ?? '');
      expect(r).not.toBeNull();
      total += Number(r![2]) - Number(r![1]) + 1;
    }
    expect(total).toBe(m.read_amount_total);
  });

  test('the mounted image equals its source root filesystem', async () => {
    const src = await describeTree(debianRootfsDir());
    for (const [k, v] of await describeTree(extraDir)) if (k !== '/') src.set(k, v);
    const ours = await describeTree(mnt());
    // The root directory's own attributes come from the tar's "./" entry; compare everything below.
    src.delete('/');
    ours.delete('/');
    const diffs = [...new Set([...src.keys(), ...ours.keys()])].filter((k) => src.get(k) !== ours.get(k)).slice(0, 10);
    expect(diffs.map((k) => `${k}\n  src:  ${src.get(k)}\n  ours: ${ours.get(k)}`)).toEqual([]);
    expect(ours.get(`${EXTRA}/tagged`)).toContain('user.nydus=0x6c617a79');
    expect(ours.get(`${EXTRA}/null`)).toContain(`rdev=${(1 << 8) | 3}`);
    expect(ours.get(`${EXTRA}/tagged-link`)).toContain(`hardlink=${EXTRA}/tagged`);
    expect(ours.size).toBeGreaterThan(10000);
  });

  test('cache: after kill -9 a restarted daemon reads from the cache with zero backend bytes', async () => {
    const first = daemons[daemons.length - 1];
    expect(await first.kill9()).toBe('SIGKILL');
    reg.clearRequests();
    const d = await start(reg.host, path.join(tmp, 'cache'));
    const again = await describeTree(path.join(mnt(), 'usr', 'lib', 'python3.11', 'json'));
    expect(again.size).toBeGreaterThan(5);
    expect(await fsp.readFile(path.join(mnt(), EXTRA, 'eighty.txt'), 'utf8')).toBe('x'.repeat(79) + '\n');
    expect((await backend(d)).read_amount_total).toBe(0);
    expect(blobGets()).toEqual([]);
    const cache = await d.client.call<{ hits: number; misses: number }>('GET', '/api/v1/metrics/blobcache');
    expect(cache.hits).toBeGreaterThan(0);
    expect(cache.misses).toBe(0);
  });

  test('cache: a chunk corrupted on disk is detected by digest and fetched again, not served', async () => {
    const prev = daemons[daemons.length - 1];
    expect(await prev.stop()).toBe(0);
    const target = '/usr/bin/perl';
    const inode = lookup(image, target)!;
    const chunk = inode.chunks![0];
    const dataFile = path.join(tmp, 'cache', `${image.blobs[0].blobId}.blob.data`);
    const fd = fs.openSync(dataFile, 'r+');
    fs.writeSync(fd, Buffer.from('CORRUPTED BY TEST'), 0, 17, chunk.uncompressedOffset + 1000);
    fs.closeSync(fd);
    reg.clearRequests();
    const d = await start(reg.host, path.join(tmp, 'cache'));
    const got = await fsp.readFile(path.join(mnt(), target));
    expect(got.equals(fs.readFileSync(path.join(debianRootfsDir(), target)))).toBe(true);
    const cache = await d.client.call<{ corrupt_chunks: number }>('GET', '/api/v1/metrics/blobcache');
    expect(cache.corrupt_chunks).toBe(1);
    expect((await backend(d)).read_amount_total).toBeGreaterThan(0);
    expect(blobGets().length).toBeGreaterThan(0);
  });

  test('poison: wrong bytes for one chunk give EIO and one digest failure; other files read fine', async () => {
    const prev = daemons[daemons.length - 1];
    expect(await prev.stop()).toBe(0);
    const victim = '/usr/bin/perl';
    const chunk = lookup(image, victim)!.chunks![1];
    const front = await poisonFront(reg.url, chunk);
    try {
      const d = await start(front.host, path.join(tmp, 'cache-poison'));
      let err: NodeJS.ErrnoException | undefined;
      try {
        await fsp.readFile(path.join(mnt(), victim));
      } catch (e) {
        err = e as NodeJS.ErrnoException;
      }
      expect(err?.code).toBe('EIO');
      expect((await backend(d)).digest_failures).toBe(1);
      for (const other of ['/etc/os-release', `/${EXTRA}/eighty.txt`, '/usr/bin/python3.11']) {
        expect((await fsp.readFile(path.join(mnt(), other))).equals(fs.readFileSync(path.join(other.startsWith(`/${EXTRA}`) ? extraDir : debianRootfsDir(), other)))).toBe(true);
      }
      const fsm = await d.client.call<{ read_errors: number }>('GET', '/api/v1/metrics');
      expect(fsm.read_errors).toBeGreaterThanOrEqual(1);
      const prom = await d.client.request('GET', '/metrics');
      expect(prom.text).toMatch(/nydusd_backend_digest_failures_total\{mountpoint="[^"]+",source="origin"\} 1/);
    } finally {
      await daemons[daemons.length - 1].stop();
      await front.close();
    }
  });
});
