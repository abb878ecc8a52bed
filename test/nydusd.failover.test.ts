/**
 * nydusd under a supervisor (docs/nydusd.md "Failover and hot upgrade"), driven the way the
 * snapshotter's daemon manager drives it but from this test: the test opens /dev/fuse, mounts it,
 * keeps the descriptor and spawns ./bin/nydusd with a copy as fd 3. The backend is a real
 * docker-registry behind a front that can hold blob GETs, so a READ stays in flight while nydusd is
 * killed; a successor (`--upgrade`, takeover, mount, start) then
 *   - `--failover-policy resend`: serves it again: the reader gets the right bytes;
 *   - `--failover-policy flush`: fails it: the reader gets EIO, and the next read works.
 * Timing-sensitive: loop before trusting a change, e.g.
 *   for i in $(seq 10); do npx jest --runInBand test/nydusd.failover.test.ts || break; done
 */
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { NydusdClient } from '../src/daemon/client';
import { mountFuse } from '../src/fuse/device';
import { describeWith } from './helpers/capabilities';
import { REPO_ROOT } from './helpers/fixtures';
import { forceUnmount, nydusdBin } from './helpers/nydusd';
import { startRegistry, TestRegistry } from './helpers/registry';
import { slowFront, SlowFront } from './helpers/slow-front';

const MiB = 1 << 20;

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

describeWith(['root', 'fuse'], 'nydusd failover on a connection its supervisor keeps', () => {
  let tmp: string;
  let reg: TestRegistry | undefined;
  let front: SlowFront | undefined;
  let boot: string;
  let data: Buffer;
  const procs: ChildProcess[] = [];
  const mounts: string[] = [];
  const fds: number[] = [];

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nydusd-failover-'));
    const src = path.join(tmp, 'src');
    fs.mkdirSync(src);
    data = crypto.randomBytes(6 * MiB);
    fs.writeFileSync(path.join(src, 'data'), data);
    fs.writeFileSync(path.join(src, 'small'), 'small\n');
    boot = path.join(tmp, 'image.boot');
    const blobs = path.join(tmp, 'blobs');
    execFileSync(path.join(REPO_ROOT, 'bin', 'nydus-image'), ['create', '-B', boot, '-D', blobs, src], { stdio: 'ignore' });
    reg = await startRegistry();
    // The blob goes to the registry under its id (sha256 of its bytes), as nydusify pushes it.
    for (const id of fs.readdirSync(blobs)) {
      const bytes = fs.readFileSync(path.join(blobs, id));
      const start = await fetch(`${reg.url}/v2/t/img/blobs/uploads/`, { method: 'POST' });
      expect(start.status).toBe(202);
      const loc = new URL(start.headers.get('location')!, reg.url);
      loc.searchParams.set('digest', `sha256:${id}`);
      const put = await fetch(loc, { method: 'PUT', body: bytes, headers: { 'content-type': 'application/octet-stream' } });
      expect(put.status).toBe(201);
    }
    front = await slowFront(new URL(reg.url));
  }, 120_000);

  afterAll(async () => {
    for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    for (const m of mounts) forceUnmount(m);
    for (const fd of fds) fs.closeSync(fd);
    await front?.close();
    await reg?.stop();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  /** Spawns nydusd on the kept descriptor; waits for RUNNING (a successor: INIT). */
  async function spawnNydusd(dir: string, fd: number, policy: string, successor: boolean): Promise<{ proc: ChildProcess; client: NydusdClient }> {
    const sock = path.join(dir, `api-${procs.length}.sock`);
    const log = fs.openSync(path.join(dir, 'nydusd.log'), 'a');
    const args = ['--apisock', sock, '--mountpoint', path.join(dir, 'mnt'), '--supervisor', path.join(dir, 'state.json'), '--failover-policy', policy, '--log-level', 'info'];
    const proc = spawn(nydusdBin(), successor ? [...args, '--upgrade'] : args, { stdio: ['ignore', log, log, fd] });
    fs.closeSync(log);
    procs.push(proc);
    const client = new NydusdClient(sock, 10_000);
    const want = successor ? 'INIT' : 'RUNNING';
    for (let i = 0; i < 300 && proc.exitCode === null; i++) {
      const state = await client.daemonInfo().then((x) => x.state, () => '');
      if (state === want) return { proc, client };
      await sleep(100);
    }
    throw new Error(`nydusd did not reach ${want}: ${fs.readFileSync(path.join(dir, 'nydusd.log'), 'utf8').slice(-2000)}`);
  }

  function config(dir: string): string {
    return JSON.stringify({
      device: { backend: { type: 'registry', config: { host: front!.host, repo: 't/img', scheme: 'http', timeout: 30 } }, cache: { type: 'blobcache', config: { work_dir: path.join(dir, 'cache') } } },
      mode: 'direct',
      digest_validate: true,
      amplify_io: 0,
    });
  }

  /** The first daemon, an image at /img, and a read of `data` held in flight by a slow backend. */
  async function inFlightRead(policy: string): Promise<{ dir: string; fd: number; reader: Promise<{ code: number | null; out: string; err: string }>; first: ChildProcess }> {
    const dir = path.join(tmp, policy);
    const mnt = path.join(dir, 'mnt');
    fs.mkdirSync(dir, { recursive: true });
    const fd = await mountFuse({ mountpoint: mnt, source: 'nydus', subtype: 'rafs', options: ['ro', 'allow_other', 'default_permissions'] });
    fds.push(fd);
    mounts.push(mnt);
    const first = await spawnNydusd(dir, fd, policy, false);
    await first.client.mount('/img', boot, config(dir));
    // Asynchronous reads only: the slow front runs on this process's event loop.
    expect(await fs.promises.readFile(path.join(mnt, 'img', 'small'), 'utf8')).toBe('small\n');
    front!.delayMs = 5000;
    // O_DIRECT: the READs are the reader's own requests (a failed readahead would be retried by the
    // kernel with a new request, hiding what the successor did with the old one).
    const child = spawn('bash', ['-c', `set -o pipefail; dd if=${path.join(mnt, 'img', 'data')} bs=1M iflag=direct status=none | sha256sum`], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const reader = new Promise<{ code: number | null; out: string; err: string }>((r) => child.on('close', (code) => r({ code, out, err })));
    let inflight = 0;
    for (let i = 0; i < 200 && inflight === 0; i++) {
      const a = await first.client.request('GET', '/api/v1/metrics/inflight');
      inflight = a.status === 200 ? (a.body as unknown[]).length : 0;
      if (!inflight) await sleep(50);
    }
    expect(inflight).toBeGreaterThan(0);
    return { dir, fd, reader, first: first.proc };
  }

  /** Kills the first daemon and brings up its successor on the same descriptor. */
  async function failover(dir: string, fd: number, first: ChildProcess, policy: string): Promise<NydusdClient> {
    const gone = new Promise((r) => first.once('exit', r));
    first.kill('SIGKILL');
    await gone;
    const next = await spawnNydusd(dir, fd, policy, true);
    const early = await next.client.request('PUT', '/api/v1/daemon/start');
    expect(early.status).toBe(400); // still INIT: takeover first
    await next.client.call('PUT', '/api/v1/daemon/fuse/takeover');
    await next.client.mount('/img', boot, config(dir));
    front!.delayMs = 0;
    await next.client.call('PUT', '/api/v1/daemon/start');
    expect((await next.client.daemonInfo()).state).toBe('RUNNING');
    return next.client;
  }

  test('resend: the read the killed daemon left unanswered is served by its successor, byte-exact', async () => {
    const { dir, fd, reader, first } = await inFlightRead('resend');
    await failover(dir, fd, first, 'resend');
    const r = await reader;
    expect(r).toMatchObject({ code: 0, err: '' });
    expect(r.out.split(' ')[0]).toBe(crypto.createHash('sha256').update(data).digest('hex'));
    const log = fs.readFileSync(path.join(dir, 'nydusd.log'), 'utf8');
    expect(log).toContain('FUSE_NOTIFY_RESEND sent');
    expect(log).toContain('took over the FUSE connection state');
  }, 120_000);

  test('flush: the read the killed daemon left unanswered fails with EIO; the next read gets the right bytes', async () => {
    const { dir, fd, reader, first } = await inFlightRead('flush');
    await failover(dir, fd, first, 'flush');
    const r = await reader;
    expect(r.code).not.toBe(0);
    expect(r.err).toMatch(/Input\/output error/);
    const again = crypto.createHash('sha256').update(await fs.promises.readFile(path.join(dir, 'mnt', 'img', 'data'))).digest('hex');
    expect(again).toBe(crypto.createHash('sha256').update(data).digest('hex'));
  }, 120_000);

  test('a successor without its predecessor\'s state is refused takeover with one line', async () => {
    const dir = path.join(tmp, 'nostate');
    const mnt = path.join(dir, 'mnt');
    fs.mkdirSync(dir, { recursive: true });
    const fd = await mountFuse({ mountpoint: mnt, source: 'nydus', subtype: 'rafs', options: ['ro'] });
    fds.push(fd);
    mounts.push(mnt);
    const s = await spawnNydusd(dir, fd, 'resend', true);
    const a = await s.client.request('PUT', '/api/v1/daemon/fuse/takeover');
    expect(a.status).toBe(400);
    expect((a.body as { message: string }).message).toMatch(/^takeover: state file .*state\.json: ENOENT$/);
  }, 60_000);
});
