/**
 * Issue 5 acceptance through a real nydusd (FUSE) reading a RAFS image built from Debian's python3
 * stdlib, whose blob lives in a real token-auth docker-registry. Mirrors are a real docker-registry
 * pull-through cache of that origin and the dfdaemon stand-in (test/helpers/dfdaemon.ts).
 * Every file read through the mount is compared with the original tree.
 *
 * Mirrors go back to the origin's registry process directly (not through its recording front), so
 * the origin's request log shows only what nydusd itself sent.
 */
import { execFileSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Agent, request } from 'undici';
import { createLayer } from '../src/builder';
import { MirrorsSync, pushMirrors } from '../src/mirrors/push';
import { Dfdaemon, startDfdaemon } from './helpers/dfdaemon';
import { debianRootfsDir } from './helpers/fixtures';
import { nydusdBin, NydusdHandle, startNydusd } from './helpers/nydusd';
import { pullThroughCache, startRegistry, TestRegistry } from './helpers/registry';
import { describeWith } from './helpers/capabilities';

const REPO = 'mirrors/python';
const PY_DIRS = ['json', 'email', 'http', 'xml', 'urllib', 'logging', 'concurrent', 'importlib', 'asyncio', 'unittest'];

interface ImageFile {
  rel: string;
  sha: string;
}

let tmp: string;
let bootstrap: string;
let blobId: string;
let files: ImageFile[] = [];
let origin: TestRegistry;
let openOrigin: TestRegistry;
let cache: TestRegistry;
let df: Dfdaemon;
let df2: Dfdaemon;
const cleanups: (() => Promise<unknown>)[] = [];
let nextFile = 0;

/** A file of the image no daemon has read yet (each daemon has its own cache, but keep them apart). */
function fresh(): ImageFile {
  if (nextFile >= files.length) throw new Error('test image ran out of unread files');
  return files[nextFile++];
}

async function waitFor<T>(what: string, ms: number, fn: () => Promise<T | undefined> | T | undefined): Promise<T> {
  const end = Date.now() + ms;
  for (let i = 0; i < 10_000; i++) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

async function token(scope: string): Promise<string> {
  const u = new URL(origin.tokenRealm!);
  u.searchParams.set('service', 'nydus-ts-registry');
  u.searchParams.set('scope', scope);
  const basic = Buffer.from(`${origin.username}:${origin.password}`).toString('base64');
  const agent = new Agent({ connect: { ca: fs.readFileSync(origin.caCertPath!) } });
  try {
    const res = await request(u, { headers: { authorization: `Basic ${basic}` }, dispatcher: agent });
    return `Bearer ${((await res.body.json()) as { token: string }).token}`;
  } finally {
    await agent.close();
  }
}

async function pushBlob(reg: TestRegistry, file: string, id: string): Promise<void> {
  const h: Record<string, string> = reg.tokenRealm ? { authorization: await token(`repository:${REPO}:pull,push`) } : {};
  const start = await request(`${reg.url}/v2/${REPO}/blobs/uploads/`, { method: 'POST', headers: h });
  await start.body.dump();
  if (start.statusCode !== 202) throw new Error(`upload start: HTTP ${start.statusCode}`);
  const loc = new URL(String(start.headers.location), reg.url);
  loc.searchParams.set('digest', `sha256:${id}`);
  const put = await request(loc, { method: 'PUT', headers: { ...h, 'content-type': 'application/octet-stream' }, body: fs.readFileSync(file) });
  await put.body.dump();
  if (put.statusCode !== 201) throw new Error(`upload: HTTP ${put.statusCode}`);
}

function nydusdConfig(work: string, extra: { mirrors?: unknown[]; proxy?: unknown }, reg: TestRegistry): object {
  const auth = reg.username ? { auth: Buffer.from(`${reg.username}:${reg.password}`).toString('base64'), ca_cert_files: [reg.caCertPath] } : {};
  return {
    device: {
      backend: {
        type: 'registry',
        config: {
          scheme: 'http',
          host: reg.host,
          repo: REPO,
          ...auth,
          timeout: 5,
          ...extra,
        },
      },
      cache: { type: 'blobcache', config: { work_dir: path.join(work, 'cache') } },
    },
    mode: 'direct',
    amplify_io: 0,
    fs_prefetch: { enable: false },
  };
}

async function daemon(name: string, extra: { mirrors?: unknown[]; proxy?: unknown } = {}, args: string[] = [], reg = origin): Promise<NydusdHandle & { mnt: string }> {
  const work = path.join(tmp, name);
  const mnt = path.join(work, 'mnt');
  fs.mkdirSync(mnt, { recursive: true });
  const d = await startNydusd({ config: nydusdConfig(work, extra, reg), bootstrap, mountpoint: mnt, extraArgs: args });
  cleanups.push(() => d.cleanup());
  return Object.assign(d, { mnt });
}

async function readSha(d: { mnt: string; log(): string }, f: ImageFile): Promise<string> {
  let data: Buffer;
  try {
    data = await fs.promises.readFile(path.join(d.mnt, f.rel));
  } catch (e) {
    // Show why nydusd failed the read, not just the EIO.
    throw new Error(`${f.rel}: ${(e as Error).message}\n${d.log().split('\n').slice(-8).join('\n')}`);
  }
  return crypto.createHash('sha256').update(data).digest('hex');
}

const blobGets = (reg: TestRegistry) => reg.requests().filter((r) => r.method === 'GET' && r.path.includes(`/blobs/sha256:${blobId}`));

interface MirrorsView {
  sources: string[];
  mirrors: { name: string; state: string }[];
  proxy?: { state?: string; health: { state: string }; viaProxy: number; direct: number };
}
const mirrorsView = async (d: NydusdHandle) => (await d.client.call<MirrorsView[]>('GET', '/api/v1/daemon/mirrors'))[0];
const backendSources = async (d: NydusdHandle) =>
  (await d.client.call<{ sources: Record<string, { requests: number; errors: number; digestFailures: number; bytes: number }> }>('GET', '/api/v1/metrics/backend')).sources;

const NEEDS = ['root', 'fuse'] as const;

describeWith(NEEDS, 'mirrors through nydusd', () => {
  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mirrors-daemon-'));
    cleanups.push(async () => fs.rmSync(tmp, { recursive: true, force: true }));
    const src = path.join(tmp, 'src');
    const py = path.join(debianRootfsDir(), 'usr', 'lib', 'python3.11');
    for (const d of PY_DIRS) fs.cpSync(path.join(py, d), path.join(src, d), { recursive: true, filter: (p) => !p.includes('__pycache__') });
    const built = await createLayer({ source: { kind: 'dir', path: src }, bootstrapPath: path.join(tmp, 'image.boot'), blobDir: path.join(tmp, 'blobs'), chunkSize: 0x10000 });
    bootstrap = built.bootstrapPath;
    blobId = built.blobId!;
    // Distinct, mid-sized files so every read needs chunks no earlier read fetched.
    const seen = new Set<string>();
    const walk = (dir: string): string[] => fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(path.join(dir, e.name)) : e.isFile() ? [path.join(dir, e.name)] : []));
    for (const f of walk(src).sort()) {
      const st = fs.statSync(f);
      if (st.size < 8 * 1024 || st.size > 256 * 1024) continue;
      const sha = crypto.createHash('sha256').update(fs.readFileSync(f)).digest('hex');
      if (seen.has(sha)) continue;
      seen.add(sha);
      files.push({ rel: path.relative(src, f), sha });
    }
    // Spread the picks over the blob so neighbouring reads share no chunk.
    files = files.filter((_, i) => i % 3 === 0);

    origin = await startRegistry({ auth: 'token' });
    cleanups.push(() => origin.stop());
    await pushBlob(origin, built.blobPath!, blobId);
    // The pull-through cache fronts an open origin: docker-registry (Go) would not trust the token
    // server's test CA, and the spawned process's environment cannot be set from inside Jest.
    openOrigin = await startRegistry();
    cleanups.push(() => openOrigin.stop());
    await pushBlob(openOrigin, built.blobPath!, blobId);
    cache = await pullThroughCache(openOrigin.directUrl);
    cleanups.push(() => cache.stop());
    df = await startDfdaemon();
    cleanups.push(() => df.close());
    df2 = await startDfdaemon();
    cleanups.push(() => df2.close());
  }, 10 * 60_000);

  afterAll(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
  });

  // A failed test must not leave the stand-ins stopped or faulty for the next one.
  beforeEach(async () => {
    for (const m of [df, df2]) {
      await m.start();
      m.setFault('none');
      m.setDelayMs(0);
      m.setPingHealthy(true);
    }
  });

  test('1: blob reads go through a docker-registry pull-through cache mirror, not the origin', async () => {
    const d = await daemon('cache', { mirrors: [{ host: cache.url }] }, [], openOrigin);
    openOrigin.clearRequests();
    for (const f of [fresh(), fresh()]) expect(await readSha(d, f)).toBe(f.sha);
    const viaMirror = blobGets(cache);
    expect(viaMirror.length).toBeGreaterThan(0);
    expect(viaMirror.every((r) => /^bytes=\d+-\d+$/.test(r.range ?? ''))).toBe(true);
    expect(blobGets(openOrigin)).toEqual([]);
    const m = (await backendSources(d))[`mirror:${cache.host}`];
    expect(m.bytes).toBeGreaterThan(0);
  });

  test('1-3: certs.d Dragonfly mirror: header, failover and recovery, hot reload, broken file', async () => {
    const certs = path.join(tmp, 'certs.d');
    const hosts = path.join(certs, origin.host, 'hosts.toml');
    const writeHosts = (text: string) => {
      fs.mkdirSync(path.dirname(hosts), { recursive: true });
      fs.writeFileSync(`${hosts}.tmp`, text);
      fs.renameSync(`${hosts}.tmp`, hosts);
    };
    const dragonfly = (m: Dfdaemon) => `server = "${origin.url}"
[host."${m.url}"]
  capabilities = ["pull", "resolve"]
  auth_through = true
  ping_url = "${m.pingUrl}"
  health_check_interval = 1
  failure_limit = 2
  [host."${m.url}".header]
    X-Dragonfly-Registry = ["${origin.directUrl}"]
`;
    writeHosts(dragonfly(df));
    // The JSON mirror is a dead port: certs.d must replace it.
    const d = await daemon('certs', { mirrors: [{ host: 'http://127.0.0.1:1' }] }, ['--mirrors-dir', certs]);
    df.clearRequests();
    origin.clearRequests();

    // 1: through the mirror, with the hosts.toml header and the origin's token, which the mirror
    // forwards (auth_through=true; the token request itself goes to the origin's token server)
    const tokensBefore = origin.tokenRequests().length;
    let f = fresh();
    expect(await readSha(d, f)).toBe(f.sha);
    expect(origin.tokenRequests().length).toBeGreaterThan(tokensBefore);
    expect(df.requests().filter((r) => !r.upstream.includes('/blobs/'))).toEqual([]);
    const seen = df.requests();
    expect(seen.length).toBeGreaterThan(0);
    for (const r of seen) expect(r).toMatchObject({ mode: 'mirror', registryHeader: origin.directUrl, authorized: true, range: expect.stringMatching(/^bytes=\d+-\d+$/) });
    expect(blobGets(origin)).toEqual([]);
    expect((await mirrorsView(d)).sources).toEqual([`mirror:127.0.0.1:${df.port}`, 'origin']);

    // 2: mirror killed during reads: no error reaches the reader, the origin serves
    df.setDelayMs(1000); // answers are held, so the kill below cuts transfers in flight
    const arrivals = df.arrivals();
    const during = [fresh(), fresh(), fresh()];
    const reads = during.map((x) => readSha(d, x));
    try {
      await waitFor('reads reaching the mirror', 5000, () => df.arrivals() > arrivals || undefined);
      await df.stop();
    } finally {
      df.setDelayMs(0);
    }
    expect(await Promise.all(reads)).toEqual(during.map((x) => x.sha));
    // the kill did cut mirror reads, and the pipeline took them to the origin
    const cut = new RegExp(`"source":"mirror:127\\.0\\.0\\.1:${df.port}".*"msg":"source read failed"`);
    await waitFor('the cut mirror read in the nydusd log', 2000, () => cut.test(d.log()) || undefined);
    for (let i = 0; i < 3; i++) {
      f = fresh();
      expect(await readSha(d, f)).toBe(f.sha);
    }
    expect(blobGets(origin).length).toBeGreaterThan(0);
    expect((await mirrorsView(d)).mirrors[0].state).toBe('down');
    // nydusctl backend shows where the data came from and the mirror's health
    const ctl = execFileSync(nydusdBin('nydusctl'), ['--sock', d.apisock, 'backend'], { encoding: 'utf8' });
    expect(ctl).toMatch(new RegExp(`mirror:127\\.0\\.0\\.1:${df.port}\\s.*\\sdown\\s*$`, 'm'));
    expect(ctl).toMatch(/^origin\s+[1-9]\d*\s/m);
    await df.start();
    await waitFor('the mirror to pass its health check', 10_000, async () => (await mirrorsView(d)).mirrors[0].state === 'up' || undefined);
    df.clearRequests();
    origin.clearRequests();
    f = fresh();
    expect(await readSha(d, f)).toBe(f.sha);
    expect(df.requests().length).toBeGreaterThan(0);
    expect(blobGets(origin)).toEqual([]);

    // 3: edit hosts.toml while the daemon runs: the new mirror is in force within 2 s
    writeHosts(dragonfly(df2));
    await waitFor('the new mirror set', 2000, async () => (await mirrorsView(d)).sources[0] === `mirror:127.0.0.1:${df2.port}` || undefined);
    df.clearRequests();
    f = fresh();
    expect(await readSha(d, f)).toBe(f.sha);
    expect(df2.requests().length).toBeGreaterThan(0);
    expect(df.requests()).toEqual([]);

    // a broken file is reported (file, line, reason) and the last good config stays
    writeHosts('[host."http://127.0.0.1:9"\n  failure_limit = 1\n');
    await waitFor('the error in the nydusd log', 2000, () => (/hosts\.toml:1:\d+: invalid TOML/.test(d.log()) ? true : undefined));
    df2.clearRequests();
    f = fresh();
    expect(await readSha(d, f)).toBe(f.sha);
    expect(df2.requests().length).toBeGreaterThan(0);

    // the push path the snapshotter uses: a MirrorsSync watching its own certs.d pushes
    // PUT /api/v1/daemon/mirrors to the daemon, at once and after each change
    const certs2 = path.join(tmp, 'certs2.d');
    fs.mkdirSync(path.join(certs2, origin.host), { recursive: true });
    fs.writeFileSync(path.join(certs2, origin.host, 'hosts.toml'), dragonfly(df));
    const sync = new MirrorsSync(certs2, { debounceMs: 100 });
    try {
      await sync.start();
      await sync.add({ apiSock: d.apisock, registry: origin.host });
      expect((await mirrorsView(d)).sources).toEqual([`mirror:127.0.0.1:${df.port}`, 'origin']);
      df.clearRequests();
      f = fresh();
      expect(await readSha(d, f)).toBe(f.sha);
      expect(df.requests().length).toBeGreaterThan(0);
      fs.writeFileSync(path.join(certs2, origin.host, 'hosts.toml'), dragonfly(df2));
      await waitFor('the pushed mirror set', 2000, async () => (await mirrorsView(d)).sources[0] === `mirror:127.0.0.1:${df2.port}` || undefined);
    } finally {
      await sync.close();
    }
    await expect(pushMirrors(d.apisock, { mirrors: [{ host: 'ftp://x' }] } as never)).rejects.toThrow(/HTTP 400: .*mirrors\[0\]\.host: unsupported scheme ftp:/);
  });

  test('4: proxy mode: through dfdaemon while healthy; ping failing: fallback reads the origin, no fallback fails fast', async () => {
    df.setPingHealthy(true);
    const d = await daemon('proxy', { proxy: { url: df.url, ping_url: df.pingUrl, fallback: true, check_interval: 1 } });
    df.clearRequests();
    origin.clearRequests();
    let f = fresh();
    expect(await readSha(d, f)).toBe(f.sha);
    const proxied = df.requests().filter((r) => r.mode === 'proxy');
    expect(proxied.length).toBeGreaterThan(0);
    expect(proxied[0].upstream).toMatch(new RegExp(`^${origin.url}/v2/${REPO}/blobs/sha256:${blobId}$`));
    expect(proxied.every((r) => r.authorized && r.range)).toBe(true);
    // dfdaemon goes back to the origin's address it was asked for: every origin blob GET is one it relayed
    expect(blobGets(origin).length).toBe(proxied.length);

    df.setPingHealthy(false);
    try {
      await waitFor('the proxy to be marked unhealthy', 5000, async () => (await mirrorsView(d)).proxy?.health.state === 'down' || undefined);
      df.clearRequests();
      f = fresh();
      expect(await readSha(d, f)).toBe(f.sha);
      expect(df.requests()).toEqual([]);
      expect(blobGets(origin).length).toBeGreaterThan(0);

      const strict = await daemon('proxy-strict', { proxy: { url: df.url, ping_url: df.pingUrl, fallback: false, check_interval: 1 } });
      origin.clearRequests();
      f = fresh();
      await expect(fs.promises.readFile(path.join(strict.mnt, f.rel))).rejects.toMatchObject({ code: 'EIO' });
      expect(blobGets(origin)).toEqual([]);
      expect(strict.log()).toContain('proxy is not healthy and fallback is disabled');
    } finally {
      df.setPingHealthy(true);
    }
  });

  test('5: a mirror answering 5xx, truncated bodies or wrong bytes never yields wrong content', async () => {
    // auth_through: the origin is private, so the mirror needs the forwarded token to answer at all
    const d = await daemon('faults', { mirrors: [{ host: df.url, headers: { 'X-Dragonfly-Registry': origin.directUrl }, failure_limit: 100, auth_through: true }] });
    const name = `mirror:127.0.0.1:${df.port}`;
    try {
      for (const fault of ['5xx', 'truncate', 'corrupt'] as const) {
        df.setFault(fault);
        df.clearRequests();
        const f = fresh();
        expect(await readSha(d, f)).toBe(f.sha);
        expect(df.requests().length).toBeGreaterThan(0);
      }
    } finally {
      df.setFault('none');
    }
    const m = (await backendSources(d))[name];
    expect(m.errors).toBeGreaterThanOrEqual(2);
    expect(m.digestFailures).toBeGreaterThan(0);
    expect((await backendSources(d)).origin.bytes).toBeGreaterThan(0);
  });
});

describeWith(NEEDS, 'mirror config errors', () => {
  test('a bad mirror or proxy entry stops nydusd with one line naming the key', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mirrors-badcfg-'));
    try {
      // The config is checked before the bootstrap is read, so an empty file will do.
      const boot = path.join(dir, 'image.boot');
      fs.writeFileSync(boot, '');
      for (const [extra, msg] of [
        [{ mirrors: [{ host: 'http://127.0.0.1:1', failure_limit: 0 }] }, 'device.backend.config.mirrors[0].failure_limit: expected a positive integer, got 0'],
        [{ proxy: { url: 'http://127.0.0.1:1', fallback: 'no' } }, 'device.backend.config.proxy.fallback: expected true or false, got "no"'],
      ] as const) {
        const cfg = path.join(dir, 'config.json');
        fs.writeFileSync(cfg, JSON.stringify({ device: { backend: { type: 'registry', config: { scheme: 'http', host: '127.0.0.1:1', repo: 'x/y', ...extra } } } }));
        let stderr = '';
        let code: number | null = 0;
        try {
          execFileSync(nydusdBin(), ['--config', cfg, '--bootstrap', boot, '--mountpoint', path.join(dir, 'mnt')], { encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe'], timeout: 30_000 });
        } catch (e) {
          const err = e as { status: number | null; stderr: string };
          code = err.status;
          stderr = err.stderr;
        }
        expect(code).not.toBe(0);
        const lines = stderr.split('\n').filter((l) => l.startsWith('nydusd: error:'));
        expect(lines).toEqual([expect.stringContaining(msg)]);
        expect(stderr).not.toMatch(/^\s+at /m);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
