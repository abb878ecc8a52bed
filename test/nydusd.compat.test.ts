/**
 * nydusd started the way upstream nydus-snapshotter starts it: the argument lists are built in the
 * order of upstream's pkg/daemon/command/command.go (fields Mode, ThreadNum, ID, Config, Bootstrap,
 * Mountpoint, APISock, LogLevel, LogRotationSize, Supervisor, LogFile, PrefetchFiles,
 * FailoverPolicy) with the paths its daemon manager uses. Then the API calls its client.go makes:
 * mount at `?mountpoint=/<snapshot id>` under the shared daemon's mountpoint, metrics `?id=/<id>`,
 * inflight, config, start, remount, sendfd/takeover.
 * Timing-sensitive parts (inflight, the 5 s failed-chunk hold-off) were run in a loop:
 *   for i in $(seq 20); do npx jest --runInBand test/nydusd.compat.test.ts | grep -E '^Tests:'; done
 */
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { NydusdClient } from '../src/daemon/client';
import { decodeBootstrap } from '../src/format/decode';
import { RegistryClient } from '../src/registry/client';
import { busyboxRootfsDir, REPO_ROOT } from './helpers/fixtures';
import { describeWith } from './helpers/capabilities';
import { describeTree, forceUnmount, isMounted, nydusdBin, startNydusd } from './helpers/nydusd';
import { startRegistry, TestRegistry } from './helpers/registry';

const NEEDS = ['root', 'fuse'] as const;

/** command.go's BuildCommand: subcommand first, then the set fields in declaration order. */
function commandGoArgs(o: {
  threadNum: number;
  id: string;
  config?: string;
  bootstrap?: string;
  mountpoint: string;
  apisock: string;
  logLevel: string;
  logRotationSize: number;
  supervisor: string;
  logFile: string;
  prefetchFiles?: string;
  failoverPolicy: string;
}): string[] {
  const args = ['fuse', '--thread-num', String(o.threadNum), '--id', o.id];
  if (o.config) args.push('--config', o.config);
  if (o.bootstrap) args.push('--bootstrap', o.bootstrap);
  args.push('--mountpoint', o.mountpoint, '--apisock', o.apisock, '--log-level', o.logLevel, '--log-rotation-size', String(o.logRotationSize));
  args.push('--supervisor', o.supervisor, '--log-file', o.logFile);
  if (o.prefetchFiles) args.push('--prefetch-files', o.prefetchFiles);
  args.push('--failover-policy', o.failoverPolicy);
  return args;
}

interface Started {
  proc: ChildProcess;
  client: NydusdClient;
  gone: Promise<unknown>;
}

async function spawnNydusd(args: string[], apisock: string, stderrFile: string): Promise<Started> {
  const fd = fs.openSync(stderrFile, 'a');
  const proc = spawn(nydusdBin(), args, { stdio: ['ignore', fd, fd] });
  fs.closeSync(fd);
  let exited = false;
  const gone = new Promise((r) => proc.on('exit', () => r((exited = true))));
  const client = new NydusdClient(apisock, 10_000);
  for (let i = 0; i < 600 && !exited; i++) {
    try {
      if ((await client.daemonInfo()).state === 'RUNNING') return { proc, client, gone };
    } catch {
      /* not listening yet */
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  proc.kill('SIGKILL');
  throw new Error(`nydusd did not reach RUNNING: ${fs.readFileSync(stderrFile, 'utf8').slice(-3000)}`);
}

async function stop(s: Started | undefined): Promise<void> {
  if (!s) return;
  s.proc.kill('SIGKILL');
  await Promise.race([s.gone, new Promise((r) => setTimeout(r, 10_000).unref())]);
}

describeWith(NEEDS, 'nydusd under upstream nydus-snapshotter command lines', () => {
  let tmp: string;
  let root: string;
  let bootstrap: string;
  let configFile: string;
  let configJson: string;
  const mounts: string[] = [];
  let shared: Started | undefined;
  let dedicated: Started | undefined;

  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nydusd-compat-'));
    root = path.join(tmp, 'root');
    bootstrap = path.join(tmp, 'image.boot');
    execFileSync(path.join(REPO_ROOT, 'bin', 'nydus-image'), ['create', '-B', bootstrap, '-D', path.join(tmp, 'blobs'), busyboxRootfsDir()], { stdio: 'ignore' });
    // What upstream's snapshotter writes per daemon: its fusedev template with the backend filled in.
    configJson = JSON.stringify({
      device: { backend: { type: 'localfs', config: { dir: path.join(tmp, 'blobs') } }, cache: { type: 'blobcache', config: { work_dir: path.join(root, 'cache') } } },
      mode: 'direct',
      digest_validate: false,
      iostats_files: false,
      enable_xattr: true,
      amplify_io: 1048576,
      fs_prefetch: { enable: true, threads_count: 8, merging_size: 1048576, prefetch_all: true },
    });
    configFile = path.join(tmp, 'config.json');
    fs.writeFileSync(configFile, configJson);
  }, 120_000);

  afterAll(async () => {
    await stop(shared);
    await stop(dedicated);
    for (const m of mounts) forceUnmount(m);
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  describe('shared mode: `nydusd fuse --mountpoint <root>/mnt` and mounts at /<snapshot id>', () => {
    const id = 'shared_daemon';
    const mnt = () => path.join(root, 'mnt');
    const sock = () => path.join(root, 'socket', id, 'api.sock');
    const logFile = () => path.join(root, 'logs', id, 'nydusd.log');

    beforeAll(async () => {
      const args = commandGoArgs({
        threadNum: 4,
        id,
        mountpoint: mnt(),
        apisock: sock(),
        logLevel: 'info',
        logRotationSize: 100,
        supervisor: path.join(root, 'socket', id, 'supervisor.sock'),
        logFile: logFile(),
        failoverPolicy: 'resend',
      });
      mounts.push(path.join(mnt(), '41'));
      shared = await spawnNydusd(args, sock(), path.join(tmp, 'shared.stderr'));
    }, 120_000);

    test('the daemon starts with no image, logs to --log-file, and names the flags it does not honour', () => {
      const log = fs.readFileSync(logFile(), 'utf8');
      expect(log).toContain('--thread-num 4: accepted, not used');
      expect(log).toContain('--supervisor: accepted; no FUSE connection at descriptor 3');
      expect(log).toContain('--log-rotation-size 100: accepted; log files are not rotated');
      expect((fs.statSync(logFile()).mode & 0o777).toString(8)).toBe('600');
    });

    test('POST /api/v1/mount?mountpoint=/41 serves the image at <mountpoint>/41', async () => {
      // upstream client.go Mount: NewMountRequest(bootstrap, config) = {fs_type: "rafs", source, config}
      await shared!.client.call('POST', `/api/v1/mount?mountpoint=${encodeURIComponent('/41')}`, { fs_type: 'rafs', source: bootstrap, config: configJson });
      expect(isMounted(path.join(mnt(), '41'))).toBe(true);
      const got = await describeTree(path.join(mnt(), '41'));
      const want = await describeTree(busyboxRootfsDir());
      got.delete('/');
      want.delete('/');
      expect(got).toEqual(want);
    }, 120_000);

    test('metrics by ?id=/41 (upstream GetFsMetrics, GetCacheMetrics)', async () => {
      const fsm = await shared!.client.call<{ id: string; data_read: number }>('GET', '/api/v1/metrics?id=%2F41');
      expect(fsm.id).toBe(path.join(mnt(), '41'));
      expect(fsm.data_read).toBeGreaterThan(0);
      const cache = await shared!.client.call<{ chunks_total: number }>('GET', '/api/v1/metrics/blobcache?id=%2F41');
      expect(cache.chunks_total).toBeGreaterThan(0);
      await expect(shared!.client.call('GET', '/api/v1/metrics?id=%2F42')).rejects.toThrow(/404|no such rafs instance/);
    });

    test('GET /api/v1/metrics/inflight: 204 when no FUSE request is pending', async () => {
      const a = await shared!.client.request('GET', '/api/v1/metrics/inflight');
      expect(a.status).toBe(204);
    });

    test('fuse sendfd and takeover answer 501 in upstream\'s {code, message} shape without a FUSE connection from a supervisor', async () => {
      for (const p of ['/api/v1/daemon/fuse/sendfd', '/api/v1/daemon/fuse/takeover']) {
        const a = await shared!.client.request('PUT', p);
        expect(a.status).toBe(501);
        expect(a.body).toEqual({ code: 'UNDEFINED', message: expect.stringContaining('runs without --supervisor') });
      }
    });

    test('PUT /api/v1/daemon/start outside READY is refused as upstream\'s state machine does', async () => {
      const a = await shared!.client.request('PUT', '/api/v1/daemon/start');
      expect(a.status).toBe(400);
      expect((a.body as { message: string }).message).toBe('start: the daemon is RUNNING, not READY');
    });

    test('PUT /api/v1/config checks its input before anything changes', async () => {
      const put = (q: string, body: unknown) => shared!.client.request('PUT', `/api/v1/config${q}`, body);
      expect((await put('', { registry_auth: 'dTpw' })).status).toBe(400);
      expect((await put('?id=%2F99', { registry_auth: 'dTpw' })).status).toBe(404);
      const bad = await put('?id=%2F41', { colour: 'red' });
      expect(bad.status).toBe(400);
      expect((bad.body as { message: string }).message).toBe('colour: unknown key (expected registry_auth, proxy_url, dragonfly_scheduler_endpoint)');
      const local = await put('?id=%2F41', { registry_auth: 'dXNlcjpwYXNz' });
      expect((local.body as { message: string }).message).toContain('reads a localfs backend, not a registry');
      expect(JSON.stringify(local.body)).not.toContain('dXNlcjpwYXNz');
    });

    test('PUT /api/v1/mount (remount) replaces the config of a mounted image in place; another bootstrap is refused', async () => {
      const workers = async () => (await shared!.client.call<{ prefetch_workers: number }>('GET', '/api/v1/metrics/blobcache?id=%2F41')).prefetch_workers;
      expect(await workers()).toBe(8);
      const cfg = JSON.parse(configJson);
      cfg.fs_prefetch.threads_count = 3;
      await shared!.client.call('PUT', '/api/v1/mount?mountpoint=%2F41', { fs_type: 'rafs', source: bootstrap, config: JSON.stringify(cfg) });
      expect(await workers()).toBe(3);
      expect(isMounted(path.join(mnt(), '41'))).toBe(true);
      const got = await describeTree(path.join(mnt(), '41', 'bin'));
      expect(got.size).toBeGreaterThan(1);
      cfg.device.cache.config.work_dir = path.join(tmp, 'elsewhere');
      const moved = await shared!.client.request('PUT', '/api/v1/mount?mountpoint=%2F41', { fs_type: 'rafs', source: bootstrap, config: JSON.stringify(cfg) });
      expect(moved.status).toBe(400);
      const other = await shared!.client.request('PUT', '/api/v1/mount?mountpoint=%2F41', { fs_type: 'rafs', source: configFile, config: configJson });
      expect(other.status).toBe(501);
      expect((await shared!.client.request('PUT', '/api/v1/mount?mountpoint=%2F77', { source: bootstrap, config: configJson })).status).toBe(404);
    }, 60_000);

    test('DELETE /api/v1/mount?mountpoint=/41 unmounts it', async () => {
      await shared!.client.call('DELETE', '/api/v1/mount?mountpoint=%2F41');
      expect(isMounted(path.join(mnt(), '41'))).toBe(false);
    });
  });

  describe('dedicated mode: `nydusd fuse --config C --bootstrap B --mountpoint M ... --prefetch-files FILE`', () => {
    const id = 'dedicated_daemon';
    const mnt = () => path.join(root, 'snapshots', '7', 'mnt');
    const sock = () => path.join(root, 'socket', id, 'api.sock');

    beforeAll(async () => {
      const list = path.join(tmp, 'prefetch.list');
      fs.writeFileSync(list, '/bin/busybox\n\n  /etc  \n');
      // Only the listed files are prefetched (no prefetch_all), into a cache the shared daemon did not fill.
      const dedicatedConfig = path.join(tmp, 'dedicated.json');
      const cfg = JSON.parse(configJson);
      cfg.device.cache.config.work_dir = path.join(root, 'cache-dedicated');
      cfg.fs_prefetch = { enable: true, threads_count: 2, prefetch_all: false };
      fs.writeFileSync(dedicatedConfig, JSON.stringify(cfg));
      const args = commandGoArgs({
        threadNum: 4,
        id,
        config: dedicatedConfig,
        bootstrap,
        mountpoint: mnt(),
        apisock: sock(),
        logLevel: 'info',
        logRotationSize: 100,
        supervisor: path.join(root, 'socket', id, 'supervisor.sock'),
        logFile: path.join(root, 'logs', id, 'nydusd.log'),
        prefetchFiles: list,
        failoverPolicy: 'resend',
      });
      mounts.push(mnt());
      dedicated = await spawnNydusd(args, sock(), path.join(tmp, 'dedicated.stderr'));
    }, 120_000);

    test('--prefetch-files is read as a file, one path a line', async () => {
      // Read before anything else touches the image: the listed busybox binary is prefetched whole;
      // read as a comma list, the file's own path would name nothing in the image.
      let cache: { prefetch_end_time_millis: number; prefetch_data_amount: number } | undefined;
      for (let i = 0; i < 300; i++) {
        cache = await dedicated!.client.call('GET', '/api/v1/metrics/blobcache?id=%2F');
        if (cache!.prefetch_end_time_millis > 0) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(cache!.prefetch_end_time_millis).toBeGreaterThan(0);
      expect(cache!.prefetch_data_amount).toBeGreaterThanOrEqual(fs.statSync(path.join(busyboxRootfsDir(), 'bin', 'busybox')).size);
    }, 60_000);

    test('the image is served at --mountpoint and named "/" in the API', async () => {
      const got = await describeTree(mnt());
      const want = await describeTree(busyboxRootfsDir());
      got.delete('/');
      want.delete('/');
      expect(got).toEqual(want);
      const fsm = await dedicated!.client.call<{ id: string }>('GET', '/api/v1/metrics?id=%2F');
      expect(fsm.id).toBe(mnt());
      // nydusctl --id takes the host path of the mount too.
      expect((await dedicated!.client.call<{ id: string }>('GET', `/api/v1/metrics?id=${encodeURIComponent(mnt())}`)).id).toBe(mnt());
    }, 120_000);
  });

  test.each([
    [['fuse', '--bootstrap', '/x.boot', '--config', '/c.json', '--apisock', '/tmp/none.sock'], '--bootstrap needs --mountpoint'],
    [['fuse', '--mountpoint', '/tmp/m', '--apisock', '/tmp/s.sock', '--prefetch-files', '/etc/hostname'], '--prefetch-files needs --bootstrap'],
    [['fuse', '--mountpoint', '/tmp/m', '--apisock', '/tmp/s.sock', '--thread-num', '2000'], '--thread-num: invalid thread number "2000", valid range: [1-1024]'],
    [['fuse', '--mountpoint', '/tmp/m', '--apisock', '/tmp/s.sock', '--failover-policy', 'retry'], "option '--failover-policy <policy>' argument 'retry' is invalid"],
    [['fuse', '--mountpoint', '/tmp/m', '--apisock', '/tmp/s.sock', '--shared-dir', '/srv'], '--shared-dir: passthroughfs is not supported'],
    [['virtiofs', '--apisock', '/tmp/s.sock'], 'virtiofs mode is not supported'],
  ])('bad command line %# is one line naming the problem', (args, msg) => {
    let err = '';
    try {
      execFileSync(nydusdBin(), args as string[], { stdio: 'pipe', timeout: 30_000 });
    } catch (e) {
      err = String((e as { stderr: Buffer }).stderr);
    }
    expect(err).toContain(msg);
    expect(err.trim().split('\n')).toHaveLength(1);
  });
});

/** Builds the busybox image with its blob in `dir/blobs`; returns the bootstrap path and blob id. */
function busyboxImage(dir: string): { boot: string; blobId: string; blobFile: string } {
  const boot = path.join(dir, 'busybox.boot');
  execFileSync(path.join(REPO_ROOT, 'bin', 'nydus-image'), ['create', '-B', boot, '-D', path.join(dir, 'blobs'), busyboxRootfsDir()], { stdio: 'ignore' });
  const blobId = decodeBootstrap(fs.readFileSync(boot)).blobs[0].blobId;
  return { boot, blobId, blobFile: path.join(dir, 'blobs', blobId) };
}

const b64 = (s: string) => Buffer.from(s).toString('base64');

describeWith(NEEDS, 'upstream API against a registry backend', () => {
  let tmp: string;
  let img: { boot: string; blobId: string; blobFile: string };
  let d: Awaited<ReturnType<typeof startNydusd>> | undefined;
  const servers: http.Server[] = [];
  let reg: TestRegistry | undefined;

  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nydusd-compat-reg-'));
    img = busyboxImage(tmp);
  }, 120_000);

  afterAll(async () => {
    await d?.cleanup();
    for (const s of servers) {
      s.closeAllConnections();
      s.close();
    }
    await reg?.stop();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  const registryConfig = (host: string, auth: string | undefined, workDir: string) =>
    JSON.stringify({
      device: { backend: { type: 'registry', config: { scheme: 'http', host, repo: 'compat/busybox', auth, timeout: 5, retry_limit: 0 } }, cache: { type: 'blobcache', config: { work_dir: workDir } } },
      mode: 'direct',
    });

  test('PUT /api/v1/config {registry_auth} replaces the credentials of a mounted instance', async () => {
    reg = await startRegistry({ auth: 'basic', username: 'alice', password: 's3cret' });
    const push = new RegistryClient({ registry: reg.host, insecure: true, noDockerConfig: true, credentials: { username: 'alice', password: 's3cret' } });
    await push.pushBlob('compat/busybox', `sha256:${img.blobId}`, img.blobFile, fs.statSync(img.blobFile).size);
    d = await startNydusd({ dir: path.join(tmp, 'daemon'), extraArgs: ['--mountpoint', path.join(tmp, 'mnt')] });
    d.mountpoints.add(path.join(tmp, 'mnt', 'img'));
    await d.client.call('POST', '/api/v1/mount?mountpoint=%2Fimg', { fs_type: 'rafs', source: img.boot, config: registryConfig(reg.host, b64('alice:wrong'), path.join(tmp, 'cache')) });
    const busybox = path.join(tmp, 'mnt', 'img', 'bin', 'busybox');
    await expect(fs.promises.readFile(busybox)).rejects.toThrow(/EIO/);
    await d.client.call('PUT', '/api/v1/config?id=%2Fimg', { registry_auth: b64('alice:s3cret') });
    expect(await d.client.call('GET', '/api/v1/config?id=%2Fimg')).toEqual({ registry_auth: '[redacted]' });
    // A chunk that failed is not retried for 5 s (so the kernel's retries do not hammer the registry).
    await new Promise((r) => setTimeout(r, 5500));
    const got = await fs.promises.readFile(busybox);
    expect(got.equals(fs.readFileSync(path.join(busyboxRootfsDir(), 'bin', 'busybox')))).toBe(true);
    expect(d.log()).not.toContain('s3cret');
    expect(d.log()).not.toContain(b64('alice:s3cret'));
  }, 180_000);

  test('PUT /api/v1/config {proxy_url} points the instance at another proxy; "" removes it', async () => {
    const proxyOf = async () => (await d!.client.call<{ proxy?: { url: string } }[]>('GET', '/api/v1/daemon/mirrors?id=%2Fimg'))[0].proxy?.url;
    expect(await proxyOf()).toBeUndefined();
    await d!.client.call('PUT', '/api/v1/config?id=%2Fimg', { proxy_url: 'http://127.0.0.1:9' });
    expect(await proxyOf()).toBe('http://127.0.0.1:9');
    expect(await d!.client.call('GET', '/api/v1/config?id=%2Fimg')).toEqual({ registry_auth: '[redacted]', proxy_url: 'http://127.0.0.1:9' });
    expect((await d!.client.request('PUT', '/api/v1/config?id=%2Fimg', { proxy_url: 'ftp://x' })).status).toBe(400);
    await d!.client.call('PUT', '/api/v1/config?id=%2Fimg', { proxy_url: '' });
    expect(await proxyOf()).toBeUndefined();
  });

  test('GET /api/v1/metrics/inflight lists a read waiting on a stalled backend, with its inode and FUSE opcode', async () => {
    // A registry front that answers /v2/ and holds every blob request until the test lets go.
    const held: http.ServerResponse[] = [];
    const stall = http.createServer((req, res) => {
      if (req.url === '/v2/' || req.url === '/v2') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{}');
      } else held.push(res);
    });
    servers.push(stall);
    await new Promise<void>((r) => stall.listen(0, '127.0.0.1', () => r()));
    const host = `127.0.0.1:${(stall.address() as net.AddressInfo).port}`;
    d ??= await startNydusd({ dir: path.join(tmp, 'daemon'), extraArgs: ['--mountpoint', path.join(tmp, 'mnt')] });
    d.mountpoints.add(path.join(tmp, 'mnt', 'stalled'));
    await d.client.call('POST', '/api/v1/mount?mountpoint=%2Fstalled', { fs_type: 'rafs', source: img.boot, config: registryConfig(host, undefined, path.join(tmp, 'cache-stalled')) });
    const file = path.join(tmp, 'mnt', 'stalled', 'bin', 'busybox');
    const ino = (await fs.promises.stat(file)).ino;
    const reader = spawn('cat', [file], { stdio: 'ignore' });
    try {
      let ops: { inode: number; opcode: number; unique: number; timestamp_secs: number }[] = [];
      for (let i = 0; i < 100 && ops.length === 0; i++) {
        const a = await d.client.request('GET', '/api/v1/metrics/inflight');
        if (a.status === 200) ops = a.body as typeof ops;
        else await new Promise((r) => setTimeout(r, 100));
      }
      expect(ops.length).toBeGreaterThan(0);
      expect(ops[0]).toEqual({ inode: ino, opcode: 15, unique: expect.any(Number), timestamp_secs: expect.any(Number) });
      expect(Math.abs(ops[0].timestamp_secs - Date.now() / 1000)).toBeLessThan(60);
      // The read is pending on the backend: its blob request reaches the front (it may still be connecting).
      for (let i = 0; i < 100 && held.length === 0; i++) await new Promise((r) => setTimeout(r, 100));
      expect(held.length).toBeGreaterThan(0);
      const still = await d.client.request('GET', '/api/v1/metrics/inflight');
      expect(still.status).toBe(200);
      expect((still.body as typeof ops).map((o) => o.inode)).toContain(ino);
    } finally {
      for (const r of held) r.destroy();
      stall.closeAllConnections();
      reader.kill('SIGKILL');
    }
    for (let i = 0; i < 100; i++) {
      if ((await d.client.request('GET', '/api/v1/metrics/inflight')).status === 204) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect((await d.client.request('GET', '/api/v1/metrics/inflight')).status).toBe(204);
  }, 120_000);
});
