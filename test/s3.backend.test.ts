/**
 * nydusd's s3 backend against a real S3 service (Ceph's RADOS gateway, test/helpers/ceph.ts): the
 * config keys as upstream names them, ranged GETs of `<object_prefix><blob id>` signed with SigV4,
 * and issue 19's acceptance 2: wrong credentials, a missing bucket, an object shorter than the blob
 * table says and a gateway that stops mid-read each end in one clear error or a retry, never in
 * wrong bytes (the chunk pipeline verifies every chunk it gets from the bucket).
 *
 * Fault tests looped before trusting them:
 *   for i in $(seq 20); do npx jest --runInBand test/s3.backend.test.ts || break; done
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BlobCacheManager } from '../src/cache/blob-cache';
import { ConfigError, parseNydusdConfig, parseNydusdConfigText } from '../src/daemon/config';
import { buildSources } from '../src/daemon/sources';
import { FetchMetrics } from '../src/fetch/metrics';
import { ObjectStoreSource } from '../src/fetch/object-source';
import type { ObjectStoreConfig } from '../src/fetch/object-store';
import { BlobChunks, ChunkFetchError, ChunkPipeline } from '../src/fetch/pipeline';
import { CephS3, startCeph } from './helpers/ceph';
import { describeWith } from './helpers/capabilities';
import { startFaultProxy } from './helpers/faultproxy';
import { makeTestBlob, TestBlob } from './helpers/nydusd';
import { pseudoRandom } from './helpers/tars';

function s3Config(raw: Record<string, unknown>): ObjectStoreConfig {
  const { config } = parseNydusdConfig({ device: { backend: { type: 's3', config: raw } } });
  if (config.backend.type !== 's3') throw new Error('not s3');
  return config.backend.config;
}

describe('s3 / oss backend config (upstream keys)', () => {
  test('every key of upstream S3Config is read; defaults as upstream', () => {
    const c = s3Config({
      scheme: 'http', endpoint: '127.0.0.1:7480', region: 'us-east-1', bucket_name: 'images', object_prefix: 'nydus/',
      access_key_id: 'AK', access_key_secret: 'SK', skip_verify: true, ca_cert_files: [], timeout: 7, connect_timeout: 3, retry_limit: 2,
    });
    expect(c).toEqual({
      kind: 's3', scheme: 'http', endpoint: '127.0.0.1:7480', region: 'us-east-1', bucketName: 'images', objectPrefix: 'nydus/',
      accessKeyId: 'AK', accessKeySecret: 'SK', skipVerify: true, caCertFiles: [], timeout: 7, connectTimeout: 3, retryLimit: 2,
    });
    const d = s3Config({ region: 'eu-west-1', bucket_name: 'b' });
    expect([d.scheme, d.endpoint, d.objectPrefix, d.timeout, d.connectTimeout, d.retryLimit]).toEqual(['https', '', '', 5, 5, 0]);
  });

  test('v2 TOML [backend.s3] maps onto the same config', () => {
    const { config } = parseNydusdConfigText('version = 2\n[backend]\ntype = "s3"\n[backend.s3]\nregion = "r"\nbucket_name = "bkt"\nendpoint = "e:1"\n');
    expect(config.backend).toMatchObject({ type: 's3', config: { bucketName: 'bkt', region: 'r', endpoint: 'e:1' } });
  });

  test.each([
    [{ type: 's3', config: { bucket_name: 'b' } }, 'device.backend.config.region: is required for the s3 backend'],
    [{ type: 's3', config: { region: 'r' } }, 'device.backend.config.bucket_name: is required for the s3 backend'],
    [{ type: 'oss', config: { bucket_name: 'b' } }, 'device.backend.config.endpoint: is required for the oss backend'],
    [{ type: 's3', config: { region: 'r', bucket_name: 'b', access_key_id: 'AK' } }, 'device.backend.config.access_key_secret: is required with access_key_id'],
    [{ type: 's3', config: { region: 'r', bucket_name: 'b', scheme: 'ftp' } }, 'device.backend.config.scheme: expected "http" or "https"'],
  ])('bad config %# is one clear error', (backend, msg) => {
    expect(() => parseNydusdConfig({ device: { backend } })).toThrow(ConfigError);
    expect(() => parseNydusdConfig({ device: { backend } })).toThrow(msg);
  });

  test('a proxy is named in a warning (object storage is read directly); unknown keys are warned', () => {
    const { warnings } = parseNydusdConfig({ device: { backend: { type: 'oss', config: { endpoint: 'e', bucket_name: 'b', proxy: { url: 'http://127.0.0.1:65001' }, colour: 1 } } } });
    expect(warnings).toEqual([
      'device.backend.config.proxy.url = "http://127.0.0.1:65001": accepted, not used: oss blobs are read from the bucket endpoint directly (the proxy is used for registry backends only)',
      'device.backend.config.colour: unknown key, ignored',
    ]);
  });
});

describeWith(['ceph'], 's3 backend against Ceph RGW', () => {
  let ceph: CephS3;
  let tmp: string;
  let tb: TestBlob;
  // Incompressible, so each chunk is about 48 KiB in the blob too.
  const chunk = (i: number) => pseudoRandom(48 * 1024, i + 1);
  const opened: { close(): Promise<void> }[] = [];

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 's3-backend-'));
    ceph = await startCeph();
    await ceph.createBucket('images');
    tb = makeTestBlob(Array.from({ length: 8 }, (_, i) => chunk(i)));
    await ceph.putObject('images', `nydus/${tb.blob.blobId}`, tb.bytes);
    // Waits for another test file's cluster to stop first (test/helpers/ceph.ts).
  }, 25 * 60_000);

  afterAll(async () => {
    await ceph?.stop();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  }, 60_000);

  afterEach(async () => {
    for (const o of opened.splice(0)) await o.close();
  });

  const source = (over: Record<string, unknown> = {}) => {
    const s = new ObjectStoreSource(s3Config({ ...ceph.s3Config('images', 'nydus/'), ...over }));
    opened.push(s);
    return s;
  };

  /** The pipeline nydusd builds for the config: sources from buildSources, a fresh cache. */
  const pipeline = (over: Record<string, unknown> = {}) => {
    const { config } = parseNydusdConfig({ device: { backend: { type: 's3', config: { ...ceph.s3Config('images', 'nydus/'), ...over } } } });
    const sources = buildSources(config, { metrics: new FetchMetrics() });
    const cache = new BlobCacheManager(fs.mkdtempSync(path.join(tmp, 'cache-')));
    opened.push({ close: async () => { for (const s of sources) await s.close?.(); await cache.close(); } });
    return new ChunkPipeline({ cache, sources, metrics: new FetchMetrics(), amplifyIo: 0 });
  };

  /** Waits (bounded) for the gateway's access log to show `n` more requests than `before`. */
  const gatewaySaw = async (before: number, n: number) => {
    for (let i = 0; i < 40 && ceph.gatewayRequests().length < before + n; i++) await new Promise((r) => setTimeout(r, 100));
    return ceph.gatewayRequests().slice(before);
  };

  test('a read is a signed ranged GET of object_prefix + blob id; bytes are exact', async () => {
    const before = ceph.gatewayRequests().length;
    const s = source();
    const c = tb.chunks[2];
    const got = await s.read({ blobId: tb.blob.blobId, offset: c.compressedOffset, length: c.compressedSize });
    expect(got.equals(tb.bytes.subarray(c.compressedOffset, c.compressedOffset + c.compressedSize))).toBe(true);
    const seen = await gatewaySaw(before, 1);
    expect(seen).toContainEqual({
      method: 'GET', path: `/images/nydus/${tb.blob.blobId}`, status: 206, user: 'nydus',
      range: `bytes=${c.compressedOffset}-${c.compressedOffset + c.compressedSize - 1}`,
    });
  });

  test('the chunk pipeline over the bucket returns verified chunks', async () => {
    const p = pipeline();
    const bc = BlobChunks.fromChunks(tb.blob, tb.chunks);
    const out = await p.read(bc, tb.chunks.slice(3, 6));
    out.forEach((b, i) => expect(b.equals(chunk(3 + i))).toBe(true));
  });

  test('anonymous requests are refused by the gateway: one clear 403', async () => {
    const s = source({ access_key_id: '', access_key_secret: '' });
    await expect(s.read({ blobId: tb.blob.blobId, offset: 0, length: 10 })).rejects.toThrow(/^s3 bucket images at 127\.0\.0\.1:\d+: GET nydus\/\w+ bytes 0-9: HTTP 403: AccessDenied/);
  });

  test('wrong credentials: one clear error naming the refusal, not retried, no secret in it', async () => {
    const before = ceph.gatewayRequests().length;
    const s = source({ access_key_secret: 'not-the-secret', retry_limit: 3 });
    const err = (await s.read({ blobId: tb.blob.blobId, offset: 0, length: 10 }).catch((e) => e)) as Error;
    expect(err.message).toMatch(/HTTP 403: SignatureDoesNotMatch \(check access_key_id \/ access_key_secret and the bucket policy\)$/);
    expect(err.message).not.toContain('not-the-secret');
    expect(err.message).not.toContain(ceph.accessKey);
    const seen = await gatewaySaw(before, 1);
    expect(seen.filter((r) => r.path.includes(tb.blob.blobId))).toHaveLength(1);
    const unknownKey = source({ access_key_id: 'AKNOSUCHKEY' });
    await expect(unknownKey.read({ blobId: tb.blob.blobId, offset: 0, length: 10 })).rejects.toThrow(/HTTP 403: InvalidAccessKeyId/);
  });

  test('a missing bucket: one clear error; through the pipeline the read fails (EIO), no bytes', async () => {
    await expect(source({ bucket_name: 'no-such-bucket' }).read({ blobId: tb.blob.blobId, offset: 0, length: 10 })).rejects.toThrow(
      /^s3 bucket no-such-bucket at [\d.:]+: GET nydus\/\w+ bytes 0-9: HTTP 404: NoSuchBucket$/,
    );
    const p = pipeline({ bucket_name: 'no-such-bucket' });
    await expect(p.read(BlobChunks.fromChunks(tb.blob, tb.chunks), [tb.chunks[0]])).rejects.toBeInstanceOf(ChunkFetchError);
  });

  test('an object shorter than the blob table says: a clear error, never short or wrong bytes', async () => {
    const short = makeTestBlob(Array.from({ length: 4 }, (_, i) => chunk(10 + i)));
    const cut = short.chunks[2].compressedOffset + 100;
    await ceph.putObject('images', `nydus/${short.blob.blobId}`, short.bytes.subarray(0, cut));
    const s = source({ retry_limit: 1 });
    // Entirely past the end: the gateway answers 416.
    const c3 = short.chunks[3];
    await expect(s.read({ blobId: short.blob.blobId, offset: c3.compressedOffset, length: c3.compressedSize })).rejects.toThrow(
      /HTTP 416: InvalidRange \(the object is shorter than the blob table says\)$/,
    );
    // Across the end: 206 with fewer bytes than asked; retried, then a short-body error.
    const c2 = short.chunks[2];
    await expect(s.read({ blobId: short.blob.blobId, offset: c2.compressedOffset, length: c2.compressedSize })).rejects.toThrow(
      `network error: short body: 100 of ${c2.compressedSize} bytes`,
    );
    const p = pipeline();
    const bc = BlobChunks.fromChunks(short.blob, short.chunks);
    await expect(p.read(bc, [c2])).rejects.toBeInstanceOf(ChunkFetchError);
    // What is there is still served.
    expect((await p.read(bc, [short.chunks[0]]))[0].equals(chunk(10))).toBe(true);
  });

  test('an object with the right length but wrong bytes never reaches the reader', async () => {
    const bad = makeTestBlob(Array.from({ length: 2 }, (_, i) => chunk(20 + i)));
    const damaged = Buffer.from(bad.bytes);
    damaged[bad.chunks[1].compressedOffset + 5] ^= 0xff;
    await ceph.putObject('images', `nydus/${bad.blob.blobId}`, damaged);
    const p = pipeline();
    const bc = BlobChunks.fromChunks(bad.blob, bad.chunks);
    const err = await p.read(bc, [bad.chunks[1]]).catch((e) => e);
    expect(err).toBeInstanceOf(ChunkFetchError);
    expect((await p.read(bc, [bad.chunks[0]]))[0].equals(chunk(20))).toBe(true);
  });

  test('a gateway connection that drops mid-body is retried; the bytes are exact', async () => {
    // Every answer's body is cut after half its bytes on every second request.
    const fp = await startFaultProxy(`http://${ceph.endpoint}`, { every: 2, faults: ['truncate'] });
    opened.push({ close: () => fp.close() });
    const s = source({ endpoint: fp.host, retry_limit: 3 });
    for (let i = 0; i < 4; i++) {
      const c = tb.chunks[i];
      const got = await s.read({ blobId: tb.blob.blobId, offset: c.compressedOffset, length: c.compressedSize });
      expect(got.equals(tb.bytes.subarray(c.compressedOffset, c.compressedOffset + c.compressedSize))).toBe(true);
    }
    expect(fp.injected.truncate).toBeGreaterThan(0);
  });

  test('the gateway stops: one clear error (no retry loop forever); when it is back, reads work', async () => {
    const s = source({ retry_limit: 1 });
    const c = tb.chunks[1];
    await ceph.stopGateway();
    try {
      const err = (await s.read({ blobId: tb.blob.blobId, offset: c.compressedOffset, length: c.compressedSize }).catch((e) => e)) as Error;
      expect(err.message).toMatch(/^s3 bucket images at [\d.:]+: GET nydus\/\w+ bytes \d+-\d+: network error: .*ECONNREFUSED|connect/);
    } finally {
      await ceph.startGateway();
    }
    const got = await s.read({ blobId: tb.blob.blobId, offset: c.compressedOffset, length: c.compressedSize });
    expect(got.equals(tb.bytes.subarray(c.compressedOffset, c.compressedOffset + c.compressedSize))).toBe(true);
  }, 120_000);
});
