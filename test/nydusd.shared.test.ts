/**
 * Acceptance 5 and the daemon's control surface: one shared nydusd (no --bootstrap) mounts two
 * images through the API, both read correctly; unmounting one leaves the other working. Also:
 * prefetch of the image's prefetch table, API errors, nydusctl, Prometheus text, SIGTERM.
 */
import { execFile, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { ApiError } from '../src/daemon/client';
import { busyboxRootfsDir, REPO_ROOT } from './helpers/fixtures';
import { describeTree, isMounted, nydusdBin, NydusdHandle, startNydusd } from './helpers/nydusd';
import { describeWith } from './helpers/capabilities';

const run = promisify(execFile);
const NEEDS = ['root', 'fuse'] as const;
const CHUNK = 0x10000;

function pattern(size: number, seed: number): Buffer {
  const b = Buffer.alloc(size + 3);
  let x = seed >>> 0;
  for (let i = 0; i < size; i += 4) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    b.writeUInt32LE(x, i);
  }
  return b.subarray(0, size);
}

describeWith(NEEDS, 'shared nydusd: two images mounted through the API', () => {
  let tmp: string;
  let d: NydusdHandle;
  let genDir: string;
  const mntA = () => path.join(tmp, 'mnt-a');
  const mntB = () => path.join(tmp, 'mnt-b');
  const cfg = (extra: object = {}) => ({
    device: { backend: { type: 'localfs', config: { dir: path.join(tmp, 'blobs') } }, cache: { type: 'blobcache', config: { work_dir: path.join(tmp, 'cache') } } },
    mode: 'direct',
    ...extra,
  });
  const image = (name: string) => path.join(tmp, `${name}.boot`);

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nydusd-shared-'));
    genDir = path.join(tmp, 'gen');
    fs.mkdirSync(path.join(genDir, 'hot'), { recursive: true });
    fs.mkdirSync(path.join(genDir, 'cold'));
    for (let i = 0; i < 4; i++) fs.writeFileSync(path.join(genDir, 'hot', `f${i}`), pattern(3 * CHUNK + 17 * i, i + 1));
    fs.writeFileSync(path.join(genDir, 'cold', 'big'), pattern(40 * CHUNK, 99));
    fs.symlinkSync('hot/f0', path.join(genDir, 'first'));
    const list = path.join(tmp, 'prefetch.txt');
    fs.writeFileSync(list, '/hot\n');
    const nydusImage = path.join(REPO_ROOT, 'bin', 'nydus-image');
    execFileSync(nydusImage, ['create', '-B', image('a'), '-D', path.join(tmp, 'blobs'), busyboxRootfsDir()], { stdio: 'ignore' });
    execFileSync(nydusImage, ['create', '-B', image('b'), '-D', path.join(tmp, 'blobs'), '--chunk-size', '0x10000', '--prefetch-files', list, genDir], { stdio: 'ignore' });
    d = await startNydusd({ dir: path.join(tmp, 'daemon') });
    d.mountpoints.add(mntA());
    d.mountpoints.add(mntB());
  }, 300_000);

  afterAll(async () => {
    await d?.cleanup();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  test('a shared daemon starts RUNNING with nothing mounted', async () => {
    const info = await d.client.daemonInfo();
    expect(info.state).toBe('RUNNING');
    expect(info.backend_collection).toEqual({});
  });

  test('two images mount through POST /api/v1/mount', async () => {
    await d.client.mount(mntA(), image('a'), cfg());
    await d.client.mount(mntB(), image('b'), cfg({ fs_prefetch: { enable: true, threads_count: 2, merging_size: 131072, prefetch_all: false } }));
    const info = await d.client.daemonInfo();
    expect(Object.keys(info.backend_collection).sort()).toEqual([mntA(), mntB()]);
  });

  test('prefetch fetches the files of the prefetch table in the background, and nothing else', async () => {
    const id = encodeURIComponent(mntB());
    let cache: { prefetch_end_time_millis: number; prefetch_data_amount: number; chunks_ready: number; chunks_total: number } | undefined;
    for (let i = 0; i < 300; i++) {
      cache = await d.client.call('GET', `/api/v1/metrics/blobcache?id=${id}`);
      if (cache!.prefetch_end_time_millis > 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(cache!.prefetch_end_time_millis).toBeGreaterThan(0);
    // /hot holds one file of 3 chunks and three of 3 chunks and a bit: 15 chunks.
    expect(cache!.prefetch_data_amount).toBeGreaterThanOrEqual(12 * CHUNK);
    expect(cache!.chunks_ready).toBe(15);
    expect(cache!.chunks_total).toBe(55);
    // Reading the prefetched files costs no backend bytes.
    const before = (await d.client.call<{ read_amount_total: number }>('GET', `/api/v1/metrics/backend?id=${id}`)).read_amount_total;
    for (let i = 0; i < 4; i++) expect((await fs.promises.readFile(path.join(mntB(), 'hot', `f${i}`))).equals(pattern(3 * CHUNK + 17 * i, i + 1))).toBe(true);
    expect((await d.client.call<{ read_amount_total: number }>('GET', `/api/v1/metrics/backend?id=${id}`)).read_amount_total).toBe(before);
  });

  test('both images read correctly', async () => {
    const a = await describeTree(mntA());
    const srcA = await describeTree(busyboxRootfsDir());
    a.delete('/');
    srcA.delete('/');
    expect(a).toEqual(srcA);
    const b = await describeTree(mntB());
    const srcB = await describeTree(genDir);
    b.delete('/');
    srcB.delete('/');
    expect(b).toEqual(srcB);
    const { stdout } = await run(path.join(mntA(), 'bin', 'busybox'), ['echo', 'from the image']);
    expect(stdout).toBe('from the image\n');
  });

  test('API errors are one clear message with a status', async () => {
    await expect(d.client.mount(mntB(), image('b'), cfg())).rejects.toThrow(/409|already mounted/);
    const bad = d.client.mount(path.join(tmp, 'mnt-c'), image('a'), { device: { backend: { type: 'localfs', config: { dir: 7 } } } });
    await expect(bad).rejects.toThrow('config: device.backend.config.dir: expected a string, got number');
    await expect(d.client.mount(path.join(tmp, 'mnt-c'), path.join(tmp, 'missing.boot'), cfg())).rejects.toThrow(/missing\.boot: bootstrap file not found/);
    await expect(d.client.umount(path.join(tmp, 'nowhere'))).rejects.toBeInstanceOf(ApiError);
    // The FUSE mount is made while the bootstrap loads: a bootstrap that fails leaves nothing mounted.
    const junk = path.join(tmp, 'junk.boot');
    fs.writeFileSync(junk, Buffer.alloc(8192, 7));
    const mntC = path.join(tmp, 'mnt-c');
    d.mountpoints.add(mntC);
    await expect(d.client.mount(mntC, junk, cfg())).rejects.toThrow(/InvalidBootstrap|junk\.boot/);
    expect(isMounted(mntC)).toBe(false);
    await d.client.mount(mntC, image('a'), cfg());
    expect(fs.existsSync(path.join(mntC, 'bin', 'busybox'))).toBe(true);
    await d.client.umount(mntC);
    expect(isMounted(mntC)).toBe(false);
    const nf = await d.client.request('GET', '/api/v1/nothing');
    expect(nf.status).toBe(404);
    expect(nf.body).toMatchObject({ code: 'NotFound' });
  });

  test('metrics: fs, files and pattern per instance; Prometheus text; nydusctl', async () => {
    await fs.promises.readFile(path.join(mntB(), 'cold', 'big'));
    const pattern = await d.client.call<{ path: string; nr_read: number }[]>('GET', `/api/v1/metrics/pattern?id=${encodeURIComponent(mntB())}`);
    expect(pattern.map((p) => p.path)).toEqual(['/hot/f0', '/hot/f1', '/hot/f2', '/hot/f3', '/cold/big']);
    expect(pattern.every((p) => p.nr_read >= 1)).toBe(true);
    const fsm = await d.client.call<{ data_read: number }>('GET', `/api/v1/metrics?id=${encodeURIComponent(mntB())}`);
    expect(fsm.data_read).toBeGreaterThanOrEqual(40 * CHUNK);
    const prom = await d.client.request('GET', '/metrics');
    expect(prom.text).toContain('# TYPE nydusd_fs_reads_total gauge');
    expect(prom.text).toMatch(new RegExp(`nydusd_backend_bytes_total\\{mountpoint="${mntB()}",source="localfs"\\} [1-9]`));
    const info = await run(nydusdBin('nydusctl'), ['--sock', d.apisock, 'info']);
    expect(info.stdout).toContain('State:   RUNNING');
    expect(info.stdout).toContain(mntA());
    const backend = JSON.parse((await run(nydusdBin('nydusctl'), ['--sock', d.apisock, 'backend', '--json', '--id', mntB()])).stdout);
    expect(backend.sources.localfs.bytes).toBeGreaterThan(0);
    const pat = await run(nydusdBin('nydusctl'), ['--sock', d.apisock, 'pattern', '--id', mntB()]);
    expect(pat.stdout.split('\n')[1]).toMatch(/^0\s+\/hot\/f0\s/);
    const err = await run(nydusdBin('nydusctl'), ['--sock', path.join(tmp, 'none.sock'), 'info']).then(() => undefined, (e: { code: number; stderr: string }) => e);
    expect(err?.code).toBe(1);
    expect(err?.stderr.trim()).toBe(`nydusctl: error: ${path.join(tmp, 'none.sock')}: no nydusd is listening there`);
  });

  test('unmounting one instance leaves the other working', async () => {
    await d.client.umount(mntA());
    expect(isMounted(mntA())).toBe(false);
    expect(Object.keys((await d.client.daemonInfo()).backend_collection)).toEqual([mntB()]);
    const f = await fs.promises.readFile(path.join(mntB(), 'first'));
    expect(f.equals(pattern(3 * CHUNK, 1))).toBe(true);
  });

  test('prefetch_all fetches the whole image in the background, paced by bandwidth_rate', async () => {
    const mntC = path.join(tmp, 'mnt-c');
    d.mountpoints.add(mntC);
    await d.client.mount(mntC, image('a'), cfg({ fs_prefetch: { enable: true, threads_count: 2, merging_size: 262144, bandwidth_rate: 4194304, prefetch_all: true } }));
    const id = encodeURIComponent(mntC);
    let cache: { prefetch_end_time_millis: number; chunks_ready: number; chunks_total: number; data_all_ready: boolean; prefetch_errors: number } | undefined;
    for (let i = 0; i < 600; i++) {
      cache = await d.client.call('GET', `/api/v1/metrics/blobcache?id=${id}`);
      if (cache!.prefetch_end_time_millis > 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(cache!.prefetch_errors).toBe(0);
    expect(cache!.chunks_total).toBeGreaterThan(0);
    expect(cache!.chunks_ready).toBe(cache!.chunks_total);
    expect(cache!.data_all_ready).toBe(true);
    await d.client.umount(mntC);
  });

  test('SIGTERM unmounts, flushes and exits 0', async () => {
    expect(await d.stop()).toBe(0);
    expect(isMounted(mntB())).toBe(false);
    expect(fs.existsSync(d.apisock)).toBe(false);
    const maps = fs.readdirSync(path.join(tmp, 'cache')).filter((f) => f.endsWith('.chunk_map'));
    expect(maps.length).toBe(2);
  });
});

describeWith(NEEDS, 'nydusd command line', () => {
  test('bad arguments and configs are one-line errors, no stack trace', async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nydusd-cli-'));
    try {
      const fail = (args: string[]) => run(nydusdBin(), args).then(() => undefined, (e: { code: number; stderr: string }) => e);
      const cfg = path.join(tmp, 'c.json');
      fs.writeFileSync(cfg, JSON.stringify({ device: { backend: { type: 'registry', config: { host: 'h', repo: 'r', timeout: 'soon' } } } }));
      const e1 = await fail(['--config', cfg, '--bootstrap', '/nonexistent', '--mountpoint', path.join(tmp, 'm')]);
      expect(e1?.code).toBe(1);
      expect(e1?.stderr.trim()).toBe(`nydusd: error: ${cfg}: device.backend.config.timeout: expected a number, got string`);
      const e2 = await fail(['--bootstrap', '/x']);
      expect(e2?.stderr.trim()).toBe('nydusd: error: --bootstrap needs --mountpoint (the FUSE mountpoint)');
      fs.writeFileSync(cfg, JSON.stringify({ device: { backend: { type: 'localfs', config: { dir: tmp } } } }));
      const e3 = await fail(['--config', cfg, '--bootstrap', path.join(tmp, 'nope.boot'), '--mountpoint', path.join(tmp, 'm')]);
      expect(e3?.stderr.trim()).toBe(`nydusd: error: ${path.join(tmp, 'nope.boot')}: bootstrap file not found`);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});
