/**
 * Issue 14, acceptance 1-3, with real containerd 1.6, runc, docker-registry, ./bin/nydusd over
 * /dev/fuse and overlayfs: the snapshotter runs with recover_policy "failover" (shared daemon), so
 * its daemon manager keeps the FUSE connection and hands it to each new nydusd.
 *   1. a container keeps reading files of the image (some read before, some never) while the
 *      shared nydusd is killed with SIGKILL three times, 2 s apart: no error, right content, and the
 *      snapshotter's metrics count three failovers;
 *   2. the same while a hot upgrade is requested through the system controller API;
 *   3. a read in flight (the registry made slow) when nydusd is killed completes after the failover
 *      with the right bytes (FUSE_NOTIFY_RESEND).
 * Timing-sensitive: run in a loop before trusting a change, e.g.
 *   for i in $(seq 10); do npx jest --runInBand test/snapshotter.failover.test.ts || break; done
 */
import { execFile } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { NydusdClient } from '../src/daemon/client';
import { Containerd, recordedDaemons } from './helpers/containerd';
import { debianRootfsDir, REPO_ROOT } from './helpers/fixtures';
import { DEBIAN_2LAYER_CHANGES, patternBytes, pushImage } from './helpers/images';
import { SnapshotterStack, startSnapshotterStack, stopAndRemove } from './helpers/nydus-snapshotter';
import { freePort, startRegistry, TestRegistry } from './helpers/registry';
import { describeWith } from './helpers/capabilities';
import { slowFront } from './helpers/slow-front';

const run = promisify(execFile);
const NEEDS = ['root', 'fuse', 'containerd'] as const;
const ENV = ['--env', 'PATH=/usr/local/bin:/usr/bin:/bin'];

/**
 * The reader each container runs: every round it reads one file never read before and a few read
 * before (their pages dropped first, so each read reaches nydusd), checks every byte against its
 * sha256, and stops when /tmp/stop appears (or after 300 s). /tmp/started says it is in its loop.
 * Prints a JSON summary.
 */
const LOOP = `
import hashlib, json, os, random, sys, time
files = json.loads(sys.argv[1])
fresh = sorted(files)
done, errors, reread, t0, pause, pause_at = [], [], 0, time.time(), 0.0, 0.0
open('/tmp/started', 'w').close()
def check(p):
    with open(p, 'rb') as f:
        data = f.read()
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    if hashlib.sha256(data).hexdigest() != files[p]:
        errors.append(p + ': wrong content')
while not os.path.exists('/tmp/stop') and time.time() - t0 < 300:
    r0 = time.time()
    batch = [fresh.pop()] if fresh else []
    again = random.sample(done, min(4, len(done)))
    for p in batch + again:
        try:
            check(p)
        except OSError as e:
            errors.append(p + ': ' + str(e))
    reread += len(again)
    done += batch
    if time.time() - r0 > pause:
        pause, pause_at = time.time() - r0, r0
    time.sleep(0.03)
print(json.dumps({"new": len(done), "reread": reread, "errors": errors[:20], "seconds": round(time.time() - t0, 1), "longest_round": round(pause, 1), "longest_round_at": round(pause_at, 1)}))
`;

interface LoopResult {
  new: number;
  reread: number;
  errors: string[];
  seconds: number;
  /** The longest round, seconds: the pause a failover caused (reported, not asserted). */
  longest_round: number;
}

/** Regular files of the image's lower layer (the Debian fixture), with their sha256. */
function pickFiles(n: number): Record<string, string> {
  const base = debianRootfsDir();
  const out: Record<string, string> = {};
  const dirs = ['usr/lib/python3.11', 'usr/share/perl5', 'usr/lib/x86_64-linux-gnu'];
  const stack = dirs.map((d) => path.join(base, d)).filter((d) => fs.existsSync(d));
  const found: string[] = [];
  for (let k = 0; k < 100_000 && stack.length && found.length < 4 * n; k++) {
    const d = stack.pop() as string;
    for (const e of fs.readdirSync(d, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) stack.push(p);
      else if (e.isFile() && fs.statSync(p).size >= 4096 && fs.statSync(p).size <= 1 << 20) found.push(p);
    }
  }
  found.sort();
  const step = Math.max(1, Math.floor(found.length / n));
  for (let i = 0; i < found.length && Object.keys(out).length < n; i += step) {
    out[`/${path.relative(base, found[i])}`] = crypto.createHash('sha256').update(fs.readFileSync(found[i])).digest('hex');
  }
  return out;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** PUT on the system controller's unix socket; resolves with status and body. */
function systemPut(sock: string, p: string, body: object): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    const req = http.request({ socketPath: sock, path: p, method: 'PUT', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on('error', reject);
    req.setTimeout(120_000, () => req.destroy(new Error('system controller: no answer in 120 s')));
    req.end(data);
  });
}

describeWith(NEEDS, 'nydusd failover and hot upgrade under containerd-nydus-grpc (recover_policy "failover")', () => {
  let dir: string;
  let root: string;
  let reg: TestRegistry | undefined;
  let front: Awaited<ReturnType<typeof slowFront>> | undefined;
  let stack: SnapshotterStack | undefined;
  let ctd: Containerd | undefined;
  let ref: string;
  let metricsUrl: string;
  let systemSock: string;
  let files: Record<string, string>;

  const daemon = (): { pid: number; apiSock: string } => recordedDaemons(root)[0];

  /** Counter values of nydusd_lifetime_event_counts by event. */
  async function events(): Promise<Record<string, number>> {
    const text = await (await fetch(metricsUrl)).text();
    const out: Record<string, number> = {};
    for (const m of text.matchAll(/^nydusd_lifetime_event_counts\{nydusd_event="(\w+)"\} (\d+)/gm)) out[m[1]] = Number(m[2]);
    return out;
  }

  /** Waits until the recorded daemon is another process than `pid` and answers RUNNING. */
  async function nextDaemon(pid: number): Promise<{ pid: number; apiSock: string }> {
    for (let i = 0; i < 600; i++) {
      const d = daemon();
      if (d && d.pid !== pid && d.pid > 0) {
        const state = await new NydusdClient(d.apiSock, 2000)
          .daemonInfo()
          .then((x) => x.state)
          .catch(() => '');
        if (state === 'RUNNING') return d;
      }
      await sleep(100);
    }
    throw new Error(`no new RUNNING nydusd after ${pid}; snapshotter log: ${stack!.log().slice(-3000)}`);
  }

  /** Starts the reading container; resolves with its summary once /tmp/stop is made in it. */
  function startLoop(name: string): { result: Promise<LoopResult>; stop(): Promise<void> } {
    const result = ctd!.ctr(['run', '--rm', ...ENV, '--snapshotter', 'nydus', ref, name, 'python3', '-c', LOOP, JSON.stringify(files)]).then((r) => JSON.parse(r.stdout) as LoopResult);
    return {
      result,
      async stop() {
        for (let i = 0; i < 100; i++) {
          const ok = await ctd!.ctr(['tasks', 'exec', '--exec-id', `stop-${i}`, name, 'touch', '/tmp/stop']).then(
            () => true,
            () => false,
          );
          if (ok) return;
          await sleep(200);
        }
        throw new Error(`could not stop ${name}`);
      },
    };
  }

  /** Waits until the container's reader is in its loop (/tmp/started), then lets it read a while. */
  async function readingStarted(name: string): Promise<void> {
    for (let i = 0; i < 600; i++) {
      const ok = await ctd!.ctr(['tasks', 'exec', '--exec-id', `probe-${i}`, name, 'test', '-e', '/tmp/started']).then(
        () => true,
        () => false,
      );
      if (ok) return sleep(1000);
      await sleep(200);
    }
    throw new Error(`${name} did not start reading`);
  }

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'snf-'));
    files = pickFiles(400);
    reg = await startRegistry();
    const src = await pushImage(reg, 'debian-2layer', 'oci/debian');
    await run(path.join(REPO_ROOT, 'bin', 'nydusify'), ['convert', '--source', src, '--target', `${reg.host}/nydus/debian:latest`, '--plain-http'], { timeout: 15 * 60_000, maxBuffer: 1 << 24 });
    front = await slowFront(new URL(reg.url));
    ref = `${front.host}/nydus/debian:latest`;
    const port = await freePort();
    metricsUrl = `http://127.0.0.1:${port}/v1/metrics`;
    systemSock = path.join(dir, 'system.sock');
    stack = await startSnapshotterStack({
      dir,
      daemon: { recover_policy: 'failover', failover_policy: 'resend' },
      extraToml: `[system]\nenable = true\naddress = "${systemSock}"\n[metrics]\naddress = "127.0.0.1:${port}"`,
      readyFiles: [systemSock],
    });
    ({ root, ctd } = stack);
    await ctd!.ctrRemote(['image', 'rpull', '--plain-http', '--snapshotter', 'nydus', ref]);
  }, 30 * 60_000);

  afterAll(async () => {
    try {
      await stopAndRemove(stack, dir);
    } finally {
      await front?.close();
      await reg?.stop();
    }
  }, 120_000);

  test('the shared nydusd serves every instance from one FUSE mount whose connection the snapshotter keeps', async () => {
    const d = daemon();
    const cmdline = fs.readFileSync(`/proc/${d.pid}/cmdline`, 'utf8').split('\0');
    expect(cmdline).toEqual(expect.arrayContaining(['--supervisor', '--mountpoint', path.join(root, 'mnt'), '--failover-policy', 'resend']));
    // fd 3 of nydusd and one descriptor of the snapshotter are the same /dev/fuse connection.
    expect(fs.readlinkSync(`/proc/${d.pid}/fd/3`)).toBe('/dev/fuse');
    const snp = stack!.snapshotter.proc!.pid;
    const mine = fs.readdirSync(`/proc/${snp}/fd`).filter((f) => fs.readlinkSync(`/proc/${snp}/fd/${f}`) === '/dev/fuse');
    expect(mine.length).toBe(1);
    const mounts = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(` ${path.join(root, 'mnt')} `) && l.includes('fuse.rafs'));
    expect(mounts).toHaveLength(1);
  });

  test('acceptance 1: kill -9 of the shared nydusd three times, 2 s apart, while a container reads: no error, right content, three failovers counted', async () => {
    const before = (await events()).failover ?? 0;
    const loop = startLoop('reader-1');
    await readingStarted('reader-1');
    let pid = daemon().pid;
    for (let k = 0; k < 3; k++) {
      process.stdout.write(`kill ${pid} at ${(Date.now() / 1000).toFixed(1)}\n`);
      process.kill(pid, 'SIGKILL');
      pid = (await nextDaemon(pid)).pid;
      await sleep(2000);
    }
    await loop.stop();
    const r = await loop.result;
    process.stdout.write(`reader-1: ${JSON.stringify(r)}\n`);
    expect(r.errors).toEqual([]);
    // It kept reading through all three: files never read before and files read before.
    expect(r.new).toBeGreaterThan(5);
    expect(r.reread).toBeGreaterThan(20);
    expect((await events()).failover).toBe(before + 3);
    const log = fs.readFileSync(path.join(root, 'logs', 'shared', 'nydusd.log'), 'utf8');
    expect(log.match(/FUSE_NOTIFY_RESEND sent/g)?.length ?? 0).toBeGreaterThanOrEqual(3);
  }, 10 * 60_000);

  test('acceptance 2: a hot upgrade through the system controller while a container reads: no error, a new nydusd on a new API socket', async () => {
    const old = daemon();
    const loop = startLoop('reader-2');
    await readingStarted('reader-2');
    const t0 = Date.now() / 1000;
    const res = await systemPut(systemSock, '/api/v1/daemons/upgrade', { nydusd_path: path.join(REPO_ROOT, 'bin', 'nydusd'), policy: 'rolling' });
    process.stdout.write(`upgrade: from ${t0.toFixed(1)} to ${(Date.now() / 1000).toFixed(1)}\n`);
    expect(res).toMatchObject({ status: 200 });
    const now = daemon();
    expect(now.pid).not.toBe(old.pid);
    expect(now.apiSock).not.toBe(old.apiSock);
    expect(await new NydusdClient(now.apiSock, 5000).daemonInfo()).toMatchObject({ state: 'RUNNING' });
    // The old process left on its own (PUT /api/v1/daemon/exit), without unmounting.
    let alive = true;
    for (let i = 0; i < 100 && alive; i++) {
      alive = fs.existsSync(`/proc/${old.pid}`) && fs.readFileSync(`/proc/${old.pid}/cmdline`, 'utf8').includes(old.apiSock);
      if (alive) await sleep(100);
    }
    expect(alive).toBe(false);
    await sleep(2000);
    await loop.stop();
    const r = await loop.result;
    process.stdout.write(`reader-2: ${JSON.stringify(r)}\n`);
    expect(r.errors).toEqual([]);
    expect(r.new).toBeGreaterThan(3);
    expect((await events()).upgraded).toBe(1);
    const bad = await systemPut(systemSock, '/api/v1/daemons/upgrade', { nydusd_path: path.join(dir, 'no-such-nydusd') });
    expect(bad.status).toBe(412);
    expect(JSON.parse(bad.body).message).toMatch(/no-such-nydusd: not a file/);
  }, 10 * 60_000);

  test('acceptance 3: a read in flight on a slow backend when nydusd is killed completes after the failover with the right bytes', async () => {
    const want = crypto.createHash('sha256').update(patternBytes(DEBIAN_2LAYER_CHANGES.bigFileSize)).digest('hex');
    front!.delayMs = 4000;
    const reader = ctd!.ctr(['run', '--rm', ...ENV, '--snapshotter', 'nydus', ref, 'slow-1', 'python3', '-c', `import hashlib; print(hashlib.sha256(open("${DEBIAN_2LAYER_CHANGES.bigFile}", "rb").read()).hexdigest())`]);
    const d = daemon();
    const client = new NydusdClient(d.apiSock, 5000);
    let inflight: unknown[] = [];
    for (let i = 0; i < 600 && inflight.length === 0; i++) {
      const r = await client.request('GET', '/api/v1/metrics/inflight');
      if (r.status === 200) inflight = r.body as unknown[];
      else await sleep(50);
    }
    expect(inflight.length).toBeGreaterThan(0);
    process.kill(d.pid, 'SIGKILL');
    await nextDaemon(d.pid);
    front!.delayMs = 0;
    const { stdout } = await reader;
    expect(stdout.trim()).toBe(want);
    const log = fs.readFileSync(path.join(root, 'logs', 'shared', 'nydusd.log'), 'utf8');
    expect(log).toContain('FUSE_NOTIFY_RESEND sent');
  }, 10 * 60_000);
});
