/**
 * RegistryClient against Debian's docker-registry: references, manifests and indexes, blob
 * streaming / ranges / redirects, uploads (monolithic and chunked), mounts, Basic and token auth,
 * docker config.json credentials, and retries through a fault proxy.
 */
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { RegistryClient, RegistryError, parseReference, OCI_INDEX, parseChallenge } from '../src/registry';
import { startRegistry, TestRegistry } from './helpers/registry';
import { pushImage } from './helpers/images';
import { startFaultProxy } from './helpers/faultproxy';

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function readAll(s: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of s as AsyncIterable<Buffer>) parts.push(c);
  return Buffer.concat(parts);
}

/** A plain GET on a fresh connection: the body bytes that arrived and whether the answer completed. */
function rawGet(url: string): Promise<{ status: number; bytes: Buffer; complete: boolean }> {
  return new Promise((resolve, reject) => {
    let answered = false;
    const req = http.get(url, { agent: false }, (res) => {
      answered = true;
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('error', () => undefined);
      res.on('close', () => resolve({ status: res.statusCode ?? 0, bytes: Buffer.concat(parts), complete: res.complete }));
    });
    // A reset after the headers also reaches the request; the answer's 'close' reports it.
    req.on('error', (e) => { if (!answered) reject(e); });
  });
}

describe('parseReference', () => {
  test('defaults and forms', () => {
    expect(parseReference('busybox')).toEqual({ registry: 'docker.io', repository: 'library/busybox', tag: 'latest', digest: undefined });
    expect(parseReference('user/app:1.0')).toEqual({ registry: 'docker.io', repository: 'user/app', tag: '1.0', digest: undefined });
    expect(parseReference('127.0.0.1:5000/a/b/c:v2')).toEqual({ registry: '127.0.0.1:5000', repository: 'a/b/c', tag: 'v2', digest: undefined });
    expect(parseReference('localhost/app')).toMatchObject({ registry: 'localhost', repository: 'app', tag: 'latest' });
    const d = 'sha256:' + 'a'.repeat(64);
    expect(parseReference(`ghcr.io/o/r@${d}`)).toEqual({ registry: 'ghcr.io', repository: 'o/r', tag: undefined, digest: d });
    expect(parseReference(`reg:443/r:t@${d}`)).toEqual({ registry: 'reg:443', repository: 'r', tag: 't', digest: d });
    expect(parseReference('docker.io/nginx').repository).toBe('library/nginx');
  });
  test('bad references name the input', () => {
    expect(() => parseReference('Upper/Case')).toThrow(/invalid image reference "Upper\/Case"/);
    expect(() => parseReference('a@sha256:123')).toThrow(/malformed digest/);
    expect(() => parseReference('')).toThrow(/invalid image reference/);
  });
  test('challenge parsing', () => {
    expect(parseChallenge('Bearer realm="https://a/token",service="reg",scope="repository:x:pull,push"')).toEqual({
      scheme: 'bearer', params: { realm: 'https://a/token', service: 'reg', scope: 'repository:x:pull,push' },
    });
    expect(parseChallenge('Basic realm="r"')?.scheme).toBe('basic');
  });
});

describe('RegistryClient on an open registry', () => {
  let reg: TestRegistry;
  let client: RegistryClient;
  // Odd length on purpose: the fault proxy cuts an answer at floor(length / 2), and an odd length
  // is what once made it change a byte instead of dropping the tail (the fixture layer's length
  // depends on the machine).
  const odd = randomBytes(1_087_357);
  beforeAll(async () => {
    reg = await startRegistry();
    await pushImage(reg, 'busybox', 'src/busybox', 'v1');
    client = new RegistryClient({ registry: reg.host, insecure: true, noDockerConfig: true });
    await client.pushBlob('src/odd', sha(odd), Readable.from([odd]), odd.length);
  });
  afterAll(async () => { await client?.close(); await reg?.stop(); });

  test('manifest, config and layer stream verify', async () => {
    const m = await client.getManifest('src/busybox', 'v1');
    expect(m.mediaType).toBe('application/vnd.oci.image.manifest.v1+json');
    expect(m.digest).toBe(sha(m.body));
    const byDigest = await client.getManifest('src/busybox', m.digest);
    expect(byDigest.body.equals(m.body)).toBe(true);
    const cfg = JSON.parse((await client.getBlobBuffer('src/busybox', m.json.config.digest)).toString());
    expect(cfg.rootfs.diff_ids).toHaveLength(1);
    const layer = m.json.layers[0];
    const bytes = await readAll(await client.getBlob('src/busybox', layer.digest));
    expect(bytes.length).toBe(layer.size);
    expect(sha(bytes)).toBe(layer.digest);
    // A range is exactly the bytes asked for, and the registry saw a Range header.
    reg.clearRequests();
    const part = await client.getBlobRange('src/busybox', layer.digest, 1000, 4096);
    expect(part.equals(bytes.subarray(1000, 5096))).toBe(true);
    expect(reg.requests().some((r) => r.range === 'bytes=1000-5095' && r.status === 206)).toBe(true);
    await expect(client.getManifest('src/busybox', 'nope')).rejects.toThrow(`registry ${reg.host}, repository src/busybox: GET manifest nope: HTTP 404`);
  });

  test('an aborted range read rejects at once and is not retried', async () => {
    const m = await client.getManifest('src/busybox', 'v1');
    const ac = new AbortController();
    ac.abort();
    reg.clearRequests();
    await expect(client.getBlobRange('src/busybox', m.json.layers[0].digest, 0, 10, { signal: ac.signal })).rejects.toThrow(/abort/i);
    expect(reg.requests().filter((r) => r.path.includes('/blobs/'))).toHaveLength(0);
  });

  test('uploads: monolithic from a file, chunked from a stream, exists, mount', async () => {
    const data = randomBytes(300_000);
    const d = sha(data);
    expect(await client.hasBlob('up/one', d)).toBe(false);
    const file = path.join(os.tmpdir(), `nydus-ts-blob-${process.pid}`);
    fs.writeFileSync(file, data);
    await client.pushBlob('up/one', d, file, data.length);
    fs.rmSync(file);
    expect(await client.hasBlob('up/one', d)).toBe(true);
    const data2 = randomBytes(250_000);
    const d2 = sha(data2);
    reg.clearRequests();
    await client.pushBlob('up/two', d2, Readable.from([data2.subarray(0, 7), data2.subarray(7)]), data2.length, { chunkSize: 64 * 1024 });
    expect(reg.requests().filter((r) => r.method === 'PATCH' && r.status === 202)).toHaveLength(4);
    expect((await readAll(await client.getBlob('up/two', d2))).equals(data2)).toBe(true);
    expect(await client.mountBlob('up/three', d2, 'up/two')).toBe(true);
    expect(await client.hasBlob('up/three', d2)).toBe(true);
    expect(await client.mountBlob('up/three', sha(Buffer.from('absent')), 'up/two')).toBe(false);
  });

  test('index: platform choice and a clear error for a missing platform', async () => {
    const m = await client.getManifest('src/busybox', 'v1');
    const index = {
      schemaVersion: 2, mediaType: OCI_INDEX,
      manifests: [
        { mediaType: m.mediaType, digest: m.digest, size: m.body.length, platform: { os: 'linux', architecture: 'amd64' } },
        { mediaType: m.mediaType, digest: m.digest, size: m.body.length, platform: { os: 'linux', architecture: 'arm64' } },
      ],
    };
    await client.putManifest('src/busybox', 'multi', OCI_INDEX, Buffer.from(JSON.stringify(index)));
    expect((await client.getManifest('src/busybox', 'multi')).digest).toBe(m.digest);
    expect((await client.getManifest('src/busybox', 'multi', { platform: 'linux/arm64/v8' })).digest).toBe(m.digest);
    expect((await client.getManifestRaw('src/busybox', 'multi')).mediaType).toBe(OCI_INDEX);
    await expect(client.getManifest('src/busybox', 'multi', { platform: 'linux/s390x' })).rejects.toThrow(/no manifest for platform linux\/s390x \(index has linux\/amd64, linux\/arm64\)/);
  });

  test('the fault proxy cuts a body to a true prefix of it, then resets', async () => {
    const proxy = await startFaultProxy(reg.url, { every: 1, faults: ['truncate'] });
    try {
      const got = await rawGet(`${proxy.url}/v2/src/odd/blobs/${sha(odd)}`);
      expect(got.status).toBe(200);
      expect(got.complete).toBe(false);
      expect(proxy.injected.truncate).toBe(1);
      // The reset may drop bytes still in flight, so only an upper bound on the length.
      expect(got.bytes.length).toBeGreaterThan(0);
      expect(got.bytes.length).toBeLessThanOrEqual(Math.floor(odd.length / 2));
      expect(got.bytes.equals(odd.subarray(0, got.bytes.length))).toBe(true);
    } finally {
      await proxy.close();
    }
  });

  // A fault test: run it in a loop before trusting a change, e.g.
  //   for i in $(seq 20); do npx jest --runInBand test/registry.client.test.ts || break; done
  test('retries through resets, 500s and truncated bodies', async () => {
    const proxy = await startFaultProxy(reg.url, { every: 3, faults: ['reset', '500', 'truncate'] });
    const c = new RegistryClient({ registry: proxy.host, insecure: true, noDockerConfig: true, retryLimit: 6 });
    try {
      const m = await c.getManifest('src/busybox', 'v1');
      const layer = m.json.layers[0];
      for (let i = 0; i < 3; i++) {
        const bytes = await readAll(await c.getBlob('src/busybox', layer.digest));
        expect(sha(bytes)).toBe(layer.digest);
        const part = await c.getBlobRange('src/busybox', layer.digest, 10, 100_000);
        expect(part.equals(bytes.subarray(10, 100_010))).toBe(true);
        expect((await readAll(await c.getBlob('src/odd', sha(odd)))).equals(odd)).toBe(true);
      }
      const data = randomBytes(200_000);
      await c.pushBlob('faulty/x', sha(data), Readable.from([data]), data.length, { chunkSize: 32 * 1024 });
      expect(await c.hasBlob('faulty/x', sha(data))).toBe(true);
      expect(proxy.injected.reset + proxy.injected['500']).toBeGreaterThan(2);
      expect(proxy.injected.truncate).toBeGreaterThan(0);
    } finally {
      await c.close();
      await proxy.close();
    }
  });

  test('a registry serving corrupted bytes: getBlob fails naming the blob, expected and actual digest', async () => {
    const d = sha(odd);
    const bad = Buffer.from(odd);
    bad[Math.floor(odd.length / 2)] ^= 0xff;
    // Every GET of a blob, or of a manifest by digest, has its middle byte inverted.
    const proxy = await startFaultProxy(reg.url, { every: 1, faults: ['corrupt'], match: (method, p) => method === 'GET' && /\/(blobs|manifests)\/sha256:/.test(p) });
    const c = new RegistryClient({ registry: proxy.host, insecure: true, noDockerConfig: true });
    const want = `registry ${proxy.host}, repository src/odd: GET blob ${d}: HTTP 200: content digest ${sha(bad)} (${odd.length} bytes) does not match the expected ${d}`;
    try {
      let received = 0;
      const err = await (async () => {
        for await (const chunk of (await c.getBlob('src/odd', d)) as AsyncIterable<Buffer>) received += chunk.length;
      })().catch((e) => e);
      expect(err).toBeInstanceOf(RegistryError);
      expect(err.message).toBe(want);
      // The last chunk is held back until the digest verifies: the whole blob never reaches a reader.
      expect(received).toBeGreaterThan(0);
      expect(received).toBeLessThan(odd.length);
      await expect(c.getBlobBuffer('src/odd', d, 2 << 20)).rejects.toThrow(want);
      // Right bytes, wrong size in the descriptor: also refused.
      await expect(readAll(await client.getBlob('src/odd', d, { size: odd.length + 1 }))).rejects.toThrow(
        `registry ${reg.host}, repository src/odd: GET blob ${d}: HTTP 200: content is ${odd.length} bytes, the descriptor says ${odd.length + 1}`);
      const m = await client.getManifest('src/busybox', 'v1');
      await expect(c.getManifest('src/busybox', m.digest)).rejects.toThrow(
        new RegExp(`^registry ${proxy.host}, repository src/busybox: GET manifest ${m.digest}: HTTP 200: content digest sha256:[0-9a-f]{64} \\(${m.body.length} bytes\\) does not match the expected ${m.digest}$`));
      expect(proxy.injected.corrupt).toBe(3);
    } finally {
      await c.close();
      await proxy.close();
    }
  });
});

describe('RegistryClient close', () => {
  test('a request in flight when the client is closed fails with its own error: no retry on a closed client', async () => {
    let manifestGets = 0;
    // A registry that answers /v2/ and resets every manifest GET after 300 ms: a retryable failure
    // that arrives after close() (rpull closes the client when its snapshotter check fails first).
    const server = http.createServer((req, res) => {
      if (req.url === '/v2/') return res.writeHead(200).end('{}');
      manifestGets++;
      setTimeout(() => res.destroy(), 300);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as net.AddressInfo).port;
    const c = new RegistryClient({ registry: `127.0.0.1:${port}`, insecure: true, noDockerConfig: true });
    try {
      const outcome = c.getManifestRaw('x/y', 'latest').then(() => 'resolved', (e: Error) => e.message);
      for (let i = 0; i < 100 && manifestGets === 0; i++) await new Promise((r) => setTimeout(r, 20));
      expect(manifestGets).toBe(1);
      await c.close();
      const msg = await outcome;
      // Retried, it would have failed again with undici's "The client is closed" (or "destroyed").
      expect(msg).toMatch(/GET manifest latest: network error/);
      expect(msg).not.toMatch(/client is (closed|destroyed)/);
      expect(manifestGets).toBe(1);
    } finally {
      await new Promise((r) => server.close(r));
    }
  });
});

describe('RegistryClient auth', () => {
  let basic: TestRegistry;
  let token: TestRegistry;
  beforeAll(async () => {
    basic = await startRegistry({ auth: 'basic', username: 'alice', password: 'wonder-land' });
    token = await startRegistry({ auth: 'token', username: 'bob', password: 'builder-9' });
    await pushImage(basic, 'busybox', 'sec/busybox', 'v1');
    await pushImage(token, 'busybox', 'sec/busybox', 'v1');
  });
  afterAll(async () => { await basic?.stop(); await token?.stop(); });

  test('Basic: explicit credentials work, wrong ones fail clearly without leaking', async () => {
    const ok = new RegistryClient({ registry: basic.host, insecure: true, noDockerConfig: true, credentials: { username: 'alice', password: 'wonder-land' } });
    expect(await ok.authorization('sec/busybox', ['pull'])).toBe(`Basic ${Buffer.from('alice:wonder-land').toString('base64')}`);
    expect((await ok.getManifest('sec/busybox', 'v1')).json.layers).toHaveLength(1);
    await ok.close();
    const bad = new RegistryClient({ registry: basic.host, insecure: true, noDockerConfig: true, credentials: { username: 'alice', password: 'not-it-123' } });
    const err = await bad.getManifest('sec/busybox', 'v1').catch((e) => e);
    await bad.close();
    expect(err).toBeInstanceOf(RegistryError);
    expect(err.status).toBe(401);
    expect(err.message).toMatch(new RegExp(`registry ${basic.host}, repository sec/busybox: GET manifest v1: HTTP 401: credentials rejected`));
    expect(err.message).not.toContain('not-it-123');
  });

  test('Basic: credentials from DOCKER_CONFIG config.json auths', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nydus-ts-dockercfg-'));
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ auths: { [`http://${basic.host}`]: { auth: Buffer.from('alice:wonder-land').toString('base64') } } }));
    const saved = process.env.DOCKER_CONFIG;
    process.env.DOCKER_CONFIG = dir;
    try {
      const c = new RegistryClient({ registry: basic.host, insecure: true });
      expect(await c.hasBlob('sec/busybox', sha(Buffer.from('x')))).toBe(false);
      await c.close();
    } finally {
      if (saved === undefined) delete process.env.DOCKER_CONFIG; else process.env.DOCKER_CONFIG = saved;
      fs.rmSync(dir, { recursive: true });
    }
  });

  test('token: Bearer from the challenge, cached per scope; mount asks for both scopes', async () => {
    const c = new RegistryClient({ registry: token.host, insecure: true, noDockerConfig: true, ca: token.caCertPath, credentials: { username: 'bob', password: 'builder-9' } });
    const h = await c.authorization('sec/busybox', ['pull']);
    expect(h).toMatch(/^Bearer [\w-]+\.[\w-]+\.[\w-]+$/);
    const before = token.tokenRequests().length;
    expect(await c.authorization('sec/busybox', ['pull'])).toBe(h);
    const m = await c.getManifest('sec/busybox', 'v1');
    expect(token.tokenRequests().length).toBe(before);
    expect(await c.mountBlob('sec/other', m.json.layers[0].digest, 'sec/busybox')).toBe(true);
    expect(token.tokenRequests().some((t) => t.scope.includes('repository:sec/busybox:pull') && t.scope.includes('repository:sec/other:pull,push'))).toBe(true);
    await c.close();
    const anon = new RegistryClient({ registry: token.host, insecure: true, noDockerConfig: true, ca: token.caCertPath });
    await expect(anon.getManifest('sec/busybox', 'v1')).rejects.toThrow(/HTTP 401: authentication required/);
    await anon.close();
    const bad = new RegistryClient({ registry: token.host, insecure: true, noDockerConfig: true, ca: token.caCertPath, credentials: { username: 'bob', password: 'wrong-pass' } });
    const err = await bad.getManifest('sec/busybox', 'v1').catch((e) => e);
    await bad.close();
    expect(err.message).toMatch(/token .*HTTP 401: the token server rejected the credentials/);
    expect(err.message).not.toContain('wrong-pass');
  });

  test('redirected blob GETs carry no Authorization to the redirect target', async () => {
    const c0 = new RegistryClient({ registry: basic.host, insecure: true, noDockerConfig: true, credentials: { username: 'alice', password: 'wonder-land' } });
    const m = await c0.getManifest('sec/busybox', 'v1');
    const layer = m.json.layers[0];
    const bytes = await readAll(await c0.getBlob('sec/busybox', layer.digest));
    await c0.close();
    // "Object storage": serves the blob, honours Range, records whether credentials arrived.
    const storageSaw: { authorization?: string; range?: string }[] = [];
    const storage = http.createServer((req, res) => {
      storageSaw.push({ authorization: req.headers.authorization, range: req.headers.range });
      const m2 = /bytes=(\d+)-(\d*)/.exec(req.headers.range ?? '');
      if (m2) {
        const end = m2[2] ? Number(m2[2]) + 1 : bytes.length;
        res.writeHead(206, { 'content-length': end - Number(m2[1]) });
        res.end(bytes.subarray(Number(m2[1]), end));
      } else { res.writeHead(200, { 'content-length': bytes.length }); res.end(bytes); }
    });
    // A registry front that redirects blob GETs and passes everything else to the Basic registry.
    const target = new URL(basic.url);
    const front = http.createServer((req, res) => {
      if (req.method === 'GET' && req.url?.includes('/blobs/') && req.headers.authorization) {
        res.writeHead(307, { location: `http://127.0.0.1:${(storage.address() as net.AddressInfo).port}/bucket/${layer.digest}?sig=1` });
        res.end();
        return;
      }
      const up = http.request({ host: target.hostname, port: Number(target.port), method: req.method, path: req.url, headers: req.headers }, (u) => { res.writeHead(u.statusCode ?? 502, u.rawHeaders); u.pipe(res); });
      req.pipe(up);
    });
    await new Promise<void>((r) => storage.listen(0, '127.0.0.1', r));
    await new Promise<void>((r) => front.listen(0, '127.0.0.1', r));
    const c = new RegistryClient({ registry: `127.0.0.1:${(front.address() as net.AddressInfo).port}`, insecure: true, noDockerConfig: true, credentials: { username: 'alice', password: 'wonder-land' } });
    try {
      expect((await readAll(await c.getBlob('sec/busybox', layer.digest))).equals(bytes)).toBe(true);
      expect((await c.getBlobRange('sec/busybox', layer.digest, 5, 50)).equals(bytes.subarray(5, 55))).toBe(true);
      expect(storageSaw).toHaveLength(2);
      expect(storageSaw.every((s) => s.authorization === undefined)).toBe(true);
      expect(storageSaw[1].range).toBe('bytes=5-54');
    } finally {
      await c.close();
      front.closeAllConnections(); storage.closeAllConnections();
      await new Promise((r) => front.close(r));
      await new Promise((r) => storage.close(r));
    }
  });
});
