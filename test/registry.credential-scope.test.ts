/**
 * Where registry credentials go (docs/registry.md, "Where credentials go"), against real
 * docker-registry instances and the dfdaemon stand-in (Dragonfly is not packaged here):
 *  - a mirror without auth_through and the Dragonfly proxy never see an Authorization header for a
 *    Basic-auth origin; an auth_through mirror gets it (it forwards it);
 *  - a token realm on another host over plain http receives nothing and the read fails naming it;
 *  - IMAGE_PULL_AUTH fills in only the --config file's instance;
 *  - a short-lived token that the registry stops accepting is fetched again without a failed read.
 * Timing-sensitive (token expiry); looped with
 *   for i in $(seq 20); do npx jest --runInBand test/registry.credential-scope.test.ts || break; done
 */
import { createHash, randomBytes } from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { request } from 'undici';
import type { NydusdConfig } from '../src/daemon/config';
import { applyImagePullAuth, buildSources, updateRegistryAuth } from '../src/daemon/sources';
import { FetchMetrics } from '../src/fetch/metrics';
import { MirrorSource } from '../src/fetch/mirror-set';
import { ProxySource } from '../src/fetch/proxy';
import type { BlobRange, ChunkSource } from '../src/fetch/source';
import { RegistryClient } from '../src/registry/client';
import { Dfdaemon, startDfdaemon } from './helpers/dfdaemon';
import { startRegistry, TestRegistry } from './helpers/registry';

const REPO = 'scope/blob';
const BLOB = randomBytes(300_000);
const BLOB_ID = createHash('sha256').update(BLOB).digest('hex');
const range = (offset: number, length: number): BlobRange => ({ blobId: BLOB_ID, offset, length });
const slice = (offset: number, length: number): Buffer => BLOB.subarray(offset, offset + length);

let basicReg: TestRegistry;
let df: Dfdaemon;
const closers: (() => Promise<unknown>)[] = [];

const b64 = (u: string, p: string): string => Buffer.from(`${u}:${p}`).toString('base64');

function registryConfig(reg: TestRegistry, extra: Record<string, unknown> = {}, auth?: string): NydusdConfig {
  return {
    backend: {
      type: 'registry',
      config: { scheme: 'http', host: reg.host, repo: REPO, auth, skipVerify: false, timeout: 10, connectTimeout: 5, retryLimit: 0, ...extra },
    },
    cache: { type: 'blobcache', workDir: '.', validate: false },
    digestValidate: false,
    amplifyIo: 0,
    fsPrefetch: { enable: false, threadsCount: 1, mergingSize: 0, bandwidthRate: 0, prefetchAll: false },
    accessPattern: false,
  };
}

async function closeAll(srcs: ChunkSource[]): Promise<void> {
  await Promise.all(srcs.map((s) => s.close?.()));
}

/** A plain-http server that counts what it is asked (a token realm that must never be asked). */
async function countingServer(): Promise<{ url: string; hits: () => number; close(): Promise<void> }> {
  let hits = 0;
  const srv = http.createServer((req, res) => {
    hits++;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"token":"t"}');
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as AddressInfo).port;
  return { url: `http://localhost:${port}`, hits: () => hits, close: () => new Promise((r) => { srv.closeAllConnections(); srv.close(() => r()); }) };
}

beforeAll(async () => {
  basicReg = await startRegistry({ auth: 'basic' });
  closers.push(() => basicReg.stop());
  df = await startDfdaemon();
  closers.push(() => df.close());
  const c = new RegistryClient({ registry: basicReg.host, insecure: true, credentials: { username: basicReg.username!, password: basicReg.password! }, noDockerConfig: true });
  await c.pushBlob(REPO, `sha256:${BLOB_ID}`, BLOB, BLOB.length);
  await c.close();
}, 120_000);

afterAll(async () => {
  for (const c of closers.reverse()) await c();
});

describe('Basic-auth origin', () => {
  const auth = () => b64(basicReg.username!, basicReg.password!);

  test('a mirror without auth_through never gets the Authorization; the origin serves the read', async () => {
    df.clearRequests();
    basicReg.clearRequests();
    const srcs = buildSources(registryConfig(basicReg, { mirrors: [{ host: df.url, headers: { 'X-Dragonfly-Registry': basicReg.directUrl }, auth_through: false }] }, auth()), { metrics: new FetchMetrics() });
    try {
      expect(srcs.map((s) => s.name)).toEqual([`mirror:127.0.0.1:${df.port}`, 'origin']);
      // the registry behind the mirror wants credentials the mirror was not given
      await expect(srcs[0].read(range(100, 5000))).rejects.toMatchObject({ status: 401 });
      expect((await srcs[1].read(range(100, 5000))).equals(slice(100, 5000))).toBe(true);
      expect(df.requests().length).toBeGreaterThan(0);
      expect(df.requests().filter((r) => r.authorized)).toEqual([]);
      expect(basicReg.requests().some((r) => r.authorized && r.status === 206)).toBe(true);
    } finally {
      await closeAll(srcs);
    }
  });

  test('the Dragonfly proxy never gets the Authorization: reads go to the origin', async () => {
    df.clearRequests();
    const srcs = buildSources(registryConfig(basicReg, { proxy: { url: df.url, ping_url: df.pingUrl, fallback: false, check_interval: 60 } }, auth()), { metrics: new FetchMetrics() });
    try {
      expect(srcs).toHaveLength(1);
      for (let i = 0; i < 3; i++) expect((await srcs[0].read(range(i * 7000, 6000))).equals(slice(i * 7000, 6000))).toBe(true);
      expect(df.requests().filter((r) => r.authorized)).toEqual([]);
      expect((srcs[0] as ProxySource).stats()).toMatchObject({ viaProxy: 0, direct: 3 });
    } finally {
      await closeAll(srcs);
    }
  });

  test('an auth_through mirror gets the origin Authorization and forwards it', async () => {
    df.clearRequests();
    const srcs = buildSources(registryConfig(basicReg, { mirrors: [{ host: df.url, headers: { 'X-Dragonfly-Registry': basicReg.directUrl }, auth_through: true }] }, auth()), { metrics: new FetchMetrics() });
    try {
      expect((await srcs[0].read(range(10, 4000))).equals(slice(10, 4000))).toBe(true);
      expect(df.requests()).toEqual([expect.objectContaining({ mode: 'mirror', authorized: true, status: 206 })]);
    } finally {
      await closeAll(srcs);
    }
  });

  test('an auth_through mirror redirecting to another host: the redirect carries no credentials', async () => {
    // object storage on another host name, and a mirror front that redirects blob GETs there
    const seen: { authorized: boolean; range?: string }[] = [];
    const storage = http.createServer((req, res) => {
      seen.push({ authorized: req.headers.authorization !== undefined, range: req.headers.range });
      const m = /bytes=(\d+)-(\d+)/.exec(req.headers.range ?? '');
      const [from, to] = m ? [Number(m[1]), Number(m[2])] : [0, BLOB.length - 1];
      res.writeHead(206, { 'content-range': `bytes ${from}-${to}/${BLOB.length}` });
      res.end(BLOB.subarray(from, to + 1));
    });
    await new Promise<void>((r) => storage.listen(0, '127.0.0.1', r));
    const front = http.createServer((req, res) => {
      seen.push({ authorized: req.headers.authorization !== undefined });
      res.writeHead(307, { location: `http://localhost:${(storage.address() as AddressInfo).port}/blob?sig=x` });
      res.end();
    });
    await new Promise<void>((r) => front.listen(0, '127.0.0.1', r));
    const srcs = buildSources(registryConfig(basicReg, { mirrors: [{ host: `http://127.0.0.1:${(front.address() as AddressInfo).port}`, auth_through: true }] }, auth()), { metrics: new FetchMetrics() });
    try {
      expect((await srcs[0].read(range(500, 700))).equals(slice(500, 700))).toBe(true);
      expect(seen).toEqual([{ authorized: true }, { authorized: false, range: 'bytes=500-1199' }]);
    } finally {
      await closeAll(srcs);
      await new Promise((r) => front.close(r));
      await new Promise((r) => storage.close(r));
    }
  });

  test('IMAGE_PULL_AUTH reaches only the --config instance, never one mounted with its own config', async () => {
    const saved = process.env.IMAGE_PULL_AUTH;
    process.env.IMAGE_PULL_AUTH = auth();
    try {
      const own = buildSources(registryConfig(basicReg), { metrics: new FetchMetrics() });
      try {
        await expect(own[0].read(range(0, 100))).rejects.toThrow(/HTTP 401: authentication required \(no credentials given\)/);
      } finally {
        await closeAll(own);
      }
      const fromFile = registryConfig(basicReg);
      applyImagePullAuth(fromFile);
      expect(fromFile.backend.type === 'registry' && fromFile.backend.config.auth).toBe(auth());
      const srcs = buildSources(fromFile, { metrics: new FetchMetrics() });
      try {
        expect((await srcs[0].read(range(0, 100))).equals(slice(0, 100))).toBe(true);
      } finally {
        await closeAll(srcs);
      }
      process.env.IMAGE_PULL_AUTH = 'not-base64-of-a-pair';
      expect(() => applyImagePullAuth(registryConfig(basicReg))).toThrow('IMAGE_PULL_AUTH: must be base64 of "user:password"');
    } finally {
      if (saved === undefined) delete process.env.IMAGE_PULL_AUTH;
      else process.env.IMAGE_PULL_AUTH = saved;
    }
  });

  test('registry_auth (PUT /api/v1/config) replaces the credentials of a running instance in place', async () => {
    const config = registryConfig(basicReg, {}, b64(basicReg.username!, 'wrong-password'));
    const srcs = buildSources(config, { metrics: new FetchMetrics() });
    const inst = { config, pipeline: { sources: () => srcs, setSources: () => undefined } };
    try {
      await expect(srcs[0].read(range(0, 100))).rejects.toThrow(/HTTP 401: credentials rejected/);
      expect(updateRegistryAuth(inst, auth())).toBe(true);
      expect((await srcs[0].read(range(0, 100))).equals(slice(0, 100))).toBe(true);
      expect(() => updateRegistryAuth(inst, 'bm9jb2xvbg')).toThrow('registry_auth: must be base64 of "user:password"');
      expect(updateRegistryAuth(inst, undefined)).toBe(true);
      await expect(srcs[0].read(range(0, 100))).rejects.toThrow(/HTTP 401: authentication required/);
    } finally {
      await closeAll(srcs);
    }
  });
});

describe('token realms', () => {
  test('a realm on another host over plain http receives nothing; the read fails naming it', async () => {
    const realm = await countingServer();
    closers.push(() => realm.close());
    const reg = await startRegistry({ auth: 'token', realmOverride: `${realm.url}/token` });
    try {
      const client = new RegistryClient({ registry: reg.host, insecure: true, credentials: { username: 'tester', password: 'pa55-word' }, noDockerConfig: true, retryLimit: 0 });
      try {
        await expect(client.getBlobRange(REPO, `sha256:${BLOB_ID}`, 0, 10)).rejects.toThrow(
          `refused token realm ${realm.url}/token: credentials go over plain http only to the registry's own host`,
        );
      } finally {
        await client.close();
      }
      // the daemon's origin source, with the credentials in its config
      const srcs = buildSources(registryConfig(reg, {}, b64('tester', 'pa55-word')), { metrics: new FetchMetrics() });
      try {
        await expect(srcs[0].read(range(0, 10))).rejects.toThrow(`refused token realm ${realm.url}/token`);
      } finally {
        await closeAll(srcs);
      }
      // an auth_through mirror naming that realm in its own challenge is not answered either
      const m = new MirrorSource(
        (await import('../src/mirrors/nydus-json')).mirrorFromJson({ host: reg.url, auth_through: true }, 'm'),
        { url: basicReg.url, repo: REPO, basicAuth: () => b64('tester', 'pa55-word'), authorization: async () => undefined },
      );
      try {
        await expect(m.read(range(0, 10))).rejects.toMatchObject({ status: 401 });
      } finally {
        await m.close();
      }
      expect(realm.hits()).toBe(0);
    } finally {
      await reg.stop();
    }
  });

  test('a token the registry stops accepting is fetched again; every read succeeds', async () => {
    const reg = await startRegistry({ auth: 'token', tokenTtlSeconds: 3 });
    try {
      const client = new RegistryClient({ registry: reg.host, insecure: true, credentials: { username: reg.username!, password: reg.password! }, ca: reg.caCertPath, noDockerConfig: true, retryLimit: 0 });
      try {
        await client.pushBlob(REPO, `sha256:${BLOB_ID}`, BLOB, BLOB.length);
        const first = reg.issuedTokens().at(-1)!;
        // the registry itself refuses a token past its lifetime (the helper's exp accounts for leeway)
        const ok = await request(`${reg.url}/v2/${REPO}/blobs/sha256:${BLOB_ID}`, { method: 'HEAD', headers: { authorization: `Bearer ${first}` } });
        await ok.body.dump();
        expect(ok.statusCode).toBe(200);
        const started = Date.now();
        let reads = 0;
        for (let i = 0; Date.now() - started < 10_000 && i < 1000; i++) {
          const off = (i * 4099) % (BLOB.length - 2000);
          expect((await client.getBlobRange(REPO, `sha256:${BLOB_ID}`, off, 2000)).equals(slice(off, 2000))).toBe(true);
          reads++;
          await new Promise((r) => setTimeout(r, 250));
        }
        expect(reads).toBeGreaterThan(20);
        const late = await request(`${reg.url}/v2/${REPO}/blobs/sha256:${BLOB_ID}`, { method: 'HEAD', headers: { authorization: `Bearer ${first}` } });
        await late.body.dump();
        expect(late.statusCode).toBe(401);
        const fetched = reg.tokenRequests().filter((t) => t.status === 200 && t.at >= started);
        expect(fetched.length).toBeGreaterThanOrEqual(3);
      } finally {
        await client.close();
      }
    } finally {
      await reg.stop();
    }
  }, 60_000);
});
