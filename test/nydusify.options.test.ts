/**
 * convert options against a real registry: --platform picks from an index, --prefetch-patterns
 * lands in the bootstrap's prefetch table, --chunk-dict references chunks already in the target
 * instead of pushing them again, --compressor none.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { checkImage, convertImage, parsePrefetchPatterns, unpackBootstrap, NYDUS_BLOB_MEDIA_TYPE } from '../src/convert';
import { RegistryClient, OCI_INDEX } from '../src/registry';
import { decodeBootstrap } from '../src/format/decode';
import { startRegistry, TestRegistry } from './helpers/registry';
import { pushImage } from './helpers/images';

jest.setTimeout(10 * 60_000);

describe('nydusify convert options', () => {
  let reg: TestRegistry;
  let client: RegistryClient;
  let dir: string;
  beforeAll(async () => {
    reg = await startRegistry();
    await pushImage(reg, 'busybox', 'src/busybox', 'v1');
    client = new RegistryClient({ registry: reg.host, insecure: true, noDockerConfig: true });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nydus-ts-convopts-'));
  });
  afterAll(async () => {
    await client?.close();
    await reg?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });
  const ep = (ref: string) => ({ ref: `${reg.host}/${ref}`, plainHttp: true });

  async function bootstrapOf(repo: string, tag: string) {
    const m = await client.getManifest(repo, tag);
    const layers = m.json.layers as { digest: string; mediaType: string }[];
    const { bootstrap } = await unpackBootstrap(await client.getBlobBuffer(repo, layers[layers.length - 1].digest), 'test');
    return { layers, image: decodeBootstrap(bootstrap), bootstrap };
  }

  test('--platform picks the index entry; a missing platform is a clear error', async () => {
    const m = await client.getManifest('src/busybox', 'v1');
    // An index with only an arm64/v8 entry (the busybox manifest).
    const index = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [
      { mediaType: m.mediaType, digest: m.digest, size: m.body.length, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
    ] };
    await client.putManifest('src/busybox', 'arm-only', OCI_INDEX, Buffer.from(JSON.stringify(index)));
    await expect(convertImage({ source: ep('src/busybox:arm-only'), target: ep('nydus/busybox:x') })).rejects.toThrow(/no manifest for platform linux\/amd64 \(index has linux\/arm64\/v8\)/);
    const res = await convertImage({ source: ep('src/busybox:arm-only'), target: ep('nydus/busybox:arm'), platforms: ['linux/arm64'] });
    expect(res.manifest.layers[0].mediaType).toBe(NYDUS_BLOB_MEDIA_TYPE);
  });

  test('a Docker schema-2 source (Docker media types) converts and checks', async () => {
    await pushImage(reg, 'busybox', 'src/busybox-docker', 'v1', 'v2s2');
    const src = await client.getManifest('src/busybox-docker', 'v1');
    expect(src.mediaType).toBe('application/vnd.docker.distribution.manifest.v2+json');
    expect(src.json.layers[0].mediaType).toBe('application/vnd.docker.image.rootfs.diff.tar.gzip');
    await convertImage({ source: ep('src/busybox-docker:v1'), target: ep('nydus/busybox-docker:v1') });
    // Upstream keeps Docker media types for a Docker source: manifest, config, bootstrap layer.
    const m = await client.getManifest('nydus/busybox-docker', 'v1');
    expect(m.mediaType).toBe('application/vnd.docker.distribution.manifest.v2+json');
    expect(m.json.config.mediaType).toBe('application/vnd.docker.container.image.v1+json');
    expect(m.json.layers.at(-1).mediaType).toBe('application/vnd.docker.image.rootfs.diff.tar.gzip');
    const check = await checkImage({ source: ep('src/busybox-docker:v1'), target: ep('nydus/busybox-docker:v1') });
    expect(check.problems).toEqual([]);
  });

  test('--prefetch-patterns fills the prefetch table; --compressor none', async () => {
    const patterns = parsePrefetchPatterns('# hot files\n/bin/busybox\n\n/etc/passwd\n', 'test');
    await convertImage({ source: ep('src/busybox:v1'), target: ep('nydus/busybox:prefetch'), prefetchPatterns: patterns, compressor: 'none' });
    const { image } = await bootstrapOf('nydus/busybox', 'prefetch');
    expect(image.prefetch).toEqual(['/bin/busybox', '/etc/passwd']);
    expect(image.blobs[0].compressor).toBe('none');
    expect(() => parsePrefetchPatterns('/ok\nrelative/path\n', 'prefetch patterns (stdin)')).toThrow('prefetch patterns (stdin): line 2: "relative/path" is not an absolute path');
  });

  test('--chunk-dict: chunks found in the dict are not stored again; the dict blob is referenced', async () => {
    await convertImage({ source: ep('src/busybox:v1'), target: ep('nydus/busybox:dict') });
    const dict = await bootstrapOf('nydus/busybox', 'dict');
    const dictPath = path.join(dir, 'dict.boot');
    fs.writeFileSync(dictPath, dict.bootstrap);
    const res = await convertImage({ source: ep('src/busybox:v1'), target: ep('nydus/busybox:with-dict'), chunkDictPath: dictPath });
    // Every chunk is in the dict: the layer has no blob of its own.
    expect(res.layers[0].blobId).toBeNull();
    expect(res.manifest.layers.map((l) => l.digest)).toEqual(dict.layers.map((l) => l.digest).slice(0, -1).concat(res.manifest.layers.slice(-1).map((l) => l.digest)));
    const check = await checkImage({ source: ep('src/busybox:v1'), target: ep('nydus/busybox:with-dict') });
    expect(check.problems).toEqual([]);
    // In a repository that lacks the dict blob the conversion refuses to write a broken image.
    await expect(convertImage({ source: ep('src/busybox:v1'), target: ep('elsewhere/busybox:v1'), chunkDictPath: dictPath })).rejects.toThrow(/chunk dict blob sha256:[0-9a-f]{64} is not in target repository elsewhere\/busybox/);
  });
});
