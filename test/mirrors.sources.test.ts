/**
 * The mirror and proxy sources against real docker-registry instances (an origin, a token-auth
 * origin, and a pull-through cache as a real mirror) and the dfdaemon stand-in. Library level: the
 * sources are driven directly; the same rules through a running nydusd are in
 * test/mirrors.daemon.test.ts.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import { Agent, getGlobalDispatcher, request } from 'undici';
import { HttpRangeError, MirrorSet, MirrorSource, OriginInfo, updateMirrors } from '../src/fetch/mirror-set';
import { ProxySource, ProxyUnhealthyError } from '../src/fetch/proxy';
import { BlobRange, ChunkSource, SourceUnavailableError } from '../src/fetch/source';
import { mirrorFromJson, proxyFromJson } from '../src/mirrors/nydus-json';
import { Dfdaemon, startDfdaemon } from './helpers/dfdaemon';
import { pullThroughCache, startRegistry, TestRegistry } from './helpers/registry';

const REPO = 'mirrors/blob';
const BLOB = crypto.randomBytes(3 * 1024 * 1024 + 123);
const BLOB_ID = crypto.createHash('sha256').update(BLOB).digest('hex');

let origin: TestRegistry;
let tokenOrigin: TestRegistry;
let cache: TestRegistry;
let df: Dfdaemon;
let tokenAgent: Agent;
const closers: (() => Promise<unknown>)[] = [];

/** A Bearer token for `scope` from the token-auth origin's own token server. */
async function token(scope: string): Promise<string> {
  const u = new URL(tokenOrigin.tokenRealm!);
  u.searchParams.set('service', 'nydus-ts-registry');
  u.searchParams.set('scope', scope);
  const basic = Buffer.from(`${tokenOrigin.username}:${tokenOrigin.password}`).toString('base64');
  const res = await request(u, { headers: { authorization: `Basic ${basic}` }, dispatcher: tokenAgent });
  const body = (await res.body.json()) as { token: string };
  return `Bearer ${body.token}`;
}

/** Monolithic blob upload (distribution API): POST then PUT ?digest=. */
async function pushBlob(reg: TestRegistry, auth?: string): Promise<void> {
  const h: Record<string, string> = auth ? { authorization: auth } : {};
  const start = await request(`${reg.url}/v2/${REPO}/blobs/uploads/`, { method: 'POST', headers: h });
  await start.body.dump();
  expect(start.statusCode).toBe(202);
  const loc = new URL(String(start.headers.location), reg.url);
  loc.searchParams.set('digest', `sha256:${BLOB_ID}`);
  const put = await request(loc, { method: 'PUT', headers: { ...h, 'content-type': 'application/octet-stream' }, body: BLOB });
  await put.body.dump();
  expect(put.statusCode).toBe(201);
}

/** The origin read directly (what the pipeline's origin source does), counting its reads. */
function directSource(reg: TestRegistry, auth?: () => Promise<string | undefined>): ChunkSource & { reads: number } {
  const src = {
    name: 'origin',
    reads: 0,
    async read(r: BlobRange): Promise<Buffer> {
      src.reads++;
      const a = auth ? await auth() : undefined;
      const res = await request(`${reg.url}/v2/${REPO}/blobs/sha256:${r.blobId}`, {
        headers: { range: `bytes=${r.offset}-${r.offset + r.length - 1}`, ...(a ? { authorization: a } : {}) },
      });
      const b = Buffer.from(await res.body.arrayBuffer());
      if (res.statusCode !== 206) throw new Error(`origin: HTTP ${res.statusCode}`);
      return b;
    },
  };
  return src;
}

function originInfo(reg: TestRegistry, auth?: () => Promise<string | undefined>): OriginInfo {
  return { url: reg.url, repo: REPO, authorization: auth ?? (async () => undefined) };
}

const range = (offset: number, length: number): BlobRange => ({ blobId: BLOB_ID, offset, length });
const slice = (offset: number, length: number) => BLOB.subarray(offset, offset + length);

beforeAll(async () => {
  origin = await startRegistry();
  closers.push(() => origin.stop());
  tokenOrigin = await startRegistry({ auth: 'token' });
  closers.push(() => tokenOrigin.stop());
  tokenAgent = new Agent({ connect: { ca: fs.readFileSync(tokenOrigin.caCertPath!) } });
  closers.push(() => tokenAgent.close());
  // The cache goes back to the origin's registry process directly, so the origin's recorder shows
  // only what the reader itself sent.
  cache = await pullThroughCache(origin.directUrl);
  closers.push(() => cache.stop());
  df = await startDfdaemon();
  closers.push(() => df.close());
  await pushBlob(origin);
  await pushBlob(tokenOrigin, await token(`repository:${REPO}:pull,push`));
}, 60_000);

afterAll(async () => {
  await getGlobalDispatcher().close();
  for (const c of closers.reverse()) await c().catch(() => undefined);
});

test('a docker-registry pull-through cache serves the range; the origin sees no blob request', async () => {
  origin.clearRequests();
  const set = new MirrorSet(originInfo(origin), [mirrorFromJson({ host: cache.url }, 'm')], directSource(origin));
  try {
    const [m] = set.sources;
    // first read: the cache fetches the whole blob from upstream and answers 200; later ones 206
    expect((await m.read(range(1000, 5000))).equals(slice(1000, 5000))).toBe(true);
    expect((await m.read(range(2_000_000, 70_000))).equals(slice(2_000_000, 70_000))).toBe(true);
    const blobReqs = cache.requests().filter((r) => r.path.includes(`/blobs/sha256:${BLOB_ID}`));
    expect(blobReqs.map((r) => r.range)).toEqual(['bytes=1000-5999', 'bytes=2000000-2069999']);
    expect(origin.requests().filter((r) => r.path.includes('/blobs/'))).toEqual([]);
  } finally {
    await set.close();
  }
});

test('Dragonfly mirror mode: header reaches the mirror, origin token forwarded with auth_through, token request goes to the origin', async () => {
  // auth_through = false: nothing auth-related goes to the mirror, so a private origin answers it 401
  df.clearRequests();
  const closed = new MirrorSource(
    mirrorFromJson({ host: df.url, headers: { 'X-Dragonfly-Registry': tokenOrigin.directUrl }, auth_through: false }, 'm'),
    originInfo(tokenOrigin, () => token(`repository:${REPO}:pull`)),
  );
  try {
    await expect(closed.read(range(123, 4567))).rejects.toMatchObject({ status: 401 });
    expect(df.requests()).toEqual([expect.objectContaining({ authorized: false, status: 401 })]);
  } finally {
    await closed.close();
  }
  const tokensBefore = tokenOrigin.tokenRequests().length;
  df.clearRequests();
  const cfg = mirrorFromJson({ host: df.url, headers: { 'X-Dragonfly-Registry': tokenOrigin.directUrl }, auth_through: true }, 'm');
  const m = new MirrorSource(cfg, originInfo(tokenOrigin, () => token(`repository:${REPO}:pull`)));
  try {
    expect((await m.read(range(123, 4567))).equals(slice(123, 4567))).toBe(true);
    const reqs = df.requests();
    expect(reqs).toHaveLength(1);
    expect(reqs[0]).toMatchObject({
      mode: 'mirror', registryHeader: tokenOrigin.directUrl, range: 'bytes=123-4689', authorized: true, status: 206,
      upstream: `${tokenOrigin.directUrl}/v2/${REPO}/blobs/sha256:${BLOB_ID}`,
    });
    expect(reqs.some((r) => /token|\/v2\/$/.test(r.upstream))).toBe(false);
    expect(tokenOrigin.tokenRequests().length).toBeGreaterThan(tokensBefore);
  } finally {
    await m.close();
  }
});

test('auth_through=true: the mirror is asked as a registry and its own challenge is answered', async () => {
  const tokenCache = await startRegistry({ auth: 'token' });
  try {
    // A token registry holding the blob stands in for an authenticating mirror.
    const realm = new URL(tokenCache.tokenRealm!);
    const agent = new Agent({ connect: { ca: fs.readFileSync(tokenCache.caCertPath!) } });
    const basic = Buffer.from(`${tokenCache.username}:${tokenCache.password}`).toString('base64');
    realm.searchParams.set('service', 'nydus-ts-registry');
    realm.searchParams.set('scope', `repository:${REPO}:pull,push`);
    const t = (await (await request(realm, { headers: { authorization: `Basic ${basic}` }, dispatcher: agent })).body.json()) as { token: string };
    await pushBlob(tokenCache, `Bearer ${t.token}`);
    await agent.close();
    const cfg = mirrorFromJson({ host: tokenCache.url, auth_through: true, ca_cert_files: [tokenCache.caCertPath!] }, 'm');
    let originAsked = 0;
    const m = new MirrorSource(cfg, { url: origin.url, repo: REPO, basicAuth: () => basic, authorization: async () => (originAsked++, undefined) });
    try {
      const before = tokenCache.tokenRequests().length;
      expect((await m.read(range(10, 20))).equals(slice(10, 20))).toBe(true);
      expect(tokenCache.tokenRequests().length).toBe(before + 1);
      // the origin's Authorization (none: it is open) was asked for, to be forwarded
      expect(originAsked).toBe(1);
      expect(tokenCache.requests().filter((r) => r.status === 401).length).toBeGreaterThan(0);
    } finally {
      await m.close();
    }
  } finally {
    await tokenCache.stop();
  }
});

test('a killed mirror is marked down after failure_limit, then probed back into service', async () => {
  const cfg = mirrorFromJson({ host: df.url, headers: { 'X-Dragonfly-Registry': origin.directUrl }, failure_limit: 2, health_check_interval: 1, ping_url: df.pingUrl }, 'm');
  const m = new MirrorSource(cfg, originInfo(origin));
  try {
    expect((await m.read(range(0, 100))).equals(slice(0, 100))).toBe(true);
    await df.stop();
    for (let i = 0; i < 2; i++) await expect(m.read(range(0, 100))).rejects.toBeInstanceOf(HttpRangeError);
    expect(m.healthSnapshot().state).toBe('down');
    await expect(m.read(range(0, 100))).rejects.toBeInstanceOf(SourceUnavailableError);
    // ping answers (health port stays up) but we wait for the real mirror port too
    df.setPingHealthy(false);
    await df.start();
    await new Promise((r) => setTimeout(r, 1500));
    expect(m.healthSnapshot().state).toBe('down');
    df.setPingHealthy(true);
    const end = Date.now() + 5000;
    while (m.healthSnapshot().state === 'down' && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    expect(m.healthSnapshot().state).toBe('up');
    expect((await m.read(range(50, 100))).equals(slice(50, 100))).toBe(true);
  } finally {
    df.setPingHealthy(true);
    await df.start();
    await m.close();
  }
});

test('faults: 5xx is not a health failure, truncated bodies and rejected bytes are', async () => {
  const cfg = mirrorFromJson({ host: df.url, headers: { 'X-Dragonfly-Registry': origin.directUrl }, failure_limit: 3, health_check_interval: 60 }, 'm');
  const m = new MirrorSource(cfg, originInfo(origin));
  try {
    df.setFault('5xx');
    for (let i = 0; i < 4; i++) await expect(m.read(range(0, 4096))).rejects.toMatchObject({ status: 500 });
    expect(m.healthSnapshot()).toMatchObject({ state: 'up', consecutiveFailures: 0 });
    df.setFault('truncate');
    await expect(m.read(range(0, 100_000))).rejects.toThrow(/short body|terminated|other side closed|socket/i);
    expect(m.healthSnapshot().consecutiveFailures).toBe(1);
    df.setFault('corrupt');
    // The source only moves bytes; the pipeline verifies them and reports the bad answer back.
    for (let i = 0; i < 2; i++) {
      const bad = await m.read(range(0, 4096));
      expect(bad.equals(slice(0, 4096))).toBe(false);
      m.rejected(range(0, 4096));
    }
    expect(m.healthSnapshot().state).toBe('down');
  } finally {
    df.setFault('none');
    await m.close();
  }
});

test('proxy mode: absolute-form reads through dfdaemon; ping failing falls back or fails fast', async () => {
  df.clearRequests();
  const direct = directSource(origin);
  const healthy = new ProxySource(proxyFromJson({ url: df.url, ping_url: df.pingUrl, check_interval: 1 })!, originInfo(origin), direct);
  try {
    expect((await healthy.read(range(7, 70_000))).equals(slice(7, 70_000))).toBe(true);
    expect(df.requests()).toEqual([expect.objectContaining({ mode: 'proxy', range: 'bytes=7-70006', upstream: `${origin.url}/v2/${REPO}/blobs/sha256:${BLOB_ID}` })]);
    expect(direct.reads).toBe(0);
    df.setFault('5xx');
    expect((await healthy.read(range(0, 10))).equals(slice(0, 10))).toBe(true);
    expect(direct.reads).toBe(1);
  } finally {
    df.setFault('none');
    await healthy.close();
  }

  // use_http: an https origin is asked for as http:// so dfdaemon sees plaintext
  const plain = new ProxySource(proxyFromJson({ url: df.url, use_http: true })!, { ...originInfo(origin), url: 'https://registry.example:5000' }, direct);
  expect(plain.proxiedUrl(BLOB_ID)).toBe(`http://registry.example:5000/v2/${REPO}/blobs/sha256:${BLOB_ID}`);
  await plain.close();

  df.setPingHealthy(false);
  df.clearRequests();
  const fb = new ProxySource(proxyFromJson({ url: df.url, ping_url: df.pingUrl, fallback: true })!, originInfo(origin), direct);
  const nofb = new ProxySource(proxyFromJson({ url: df.url, ping_url: df.pingUrl, fallback: false })!, originInfo(origin), direct);
  try {
    expect((await fb.read(range(99, 999))).equals(slice(99, 999))).toBe(true);
    expect(fb.stats()).toMatchObject({ viaProxy: 0, direct: 1, health: { state: 'down' } });
    const readsBefore = direct.reads;
    await expect(nofb.read(range(99, 999))).rejects.toThrow(ProxyUnhealthyError);
    await expect(nofb.read(range(99, 999))).rejects.toThrow('proxy is not healthy and fallback is disabled');
    expect(direct.reads).toBe(readsBefore);
    expect(df.requests().filter((r) => r.mode === 'proxy')).toEqual([]);
  } finally {
    df.setPingHealthy(true);
    await fb.close();
    await nofb.close();
  }
});

test('updateMirrors swaps only the mirrors of a live list, keeping unchanged ones and their health', async () => {
  const peer: ChunkSource = { name: 'peer', read: async () => Buffer.alloc(0) };
  const tail = directSource(origin);
  const a = mirrorFromJson({ host: 'http://127.0.0.1:1', failure_limit: 1 }, 'a');
  const b = mirrorFromJson({ host: 'http://127.0.0.1:2' }, 'b');
  const set = new MirrorSet(originInfo(origin), [a], tail);
  let list: ChunkSource[] = [peer, ...set.chain()];
  const target = { sources: () => list, setSources: (s: ChunkSource[]) => (list = s) };
  const keptA = list[1] as MirrorSource;
  await expect(keptA.read(range(0, 1))).rejects.toBeInstanceOf(HttpRangeError); // port 1: refused
  expect(keptA.healthSnapshot().state).toBe('down');
  expect(await updateMirrors(target, [b, a])).toBe(true);
  expect(list.map((s) => s.name)).toEqual(['peer', 'mirror:127.0.0.1:2', 'mirror:127.0.0.1:1', 'origin']);
  expect(list[2]).toBe(keptA);
  expect(await updateMirrors(target, [])).toBe(true);
  expect(list.map((s) => s.name)).toEqual(['peer', 'origin']);
  expect(await updateMirrors({ sources: () => [peer], setSources: () => undefined }, [a])).toBe(false);
  await set.close();
});
