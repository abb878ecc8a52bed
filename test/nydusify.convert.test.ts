/**
 * Acceptance 1: busybox and a two-layer Debian image (with deletions) convert from one repository
 * to another on a real docker-registry; check passes; skopeo sees the nydus layout; the
 * deletions and additions of the upper layer are in the merged bootstrap.
 */
import { checkImage, convertImage, unpackBootstrap, NYDUS_BLOB_MEDIA_TYPE } from '../src/convert';
import { RegistryClient } from '../src/registry';
import { decodeBootstrap } from '../src/format/decode';
import { lookup } from '../src/format/walk';
import { startRegistry, TestRegistry } from './helpers/registry';
import { DEBIAN_2LAYER_CHANGES, pushImage, skopeoInspect } from './helpers/images';

jest.setTimeout(10 * 60_000);

describe('nydusify convert + check on an open registry', () => {
  let reg: TestRegistry;
  beforeAll(async () => {
    reg = await startRegistry();
    await pushImage(reg, 'busybox', 'library/busybox', 'v1');
    await pushImage(reg, 'debian-2layer', 'base/debian2', 'v1');
  });
  afterAll(async () => { await reg?.stop(); });

  const ep = (ref: string) => ({ ref: `${reg.host}/${ref}`, plainHttp: true });

  async function expectNydusLayout(ref: string, blobs: number) {
    const m = await skopeoInspect(reg, `${reg.host}/${ref}`);
    expect(m.mediaType).toBe('application/vnd.oci.image.manifest.v1+json');
    expect(m.layers).toHaveLength(blobs + 1);
    for (const l of m.layers.slice(0, -1)) {
      expect(l.mediaType).toBe(NYDUS_BLOB_MEDIA_TYPE);
      expect(l.annotations).toEqual({ 'containerd.io/snapshot/nydus-blob': 'true' });
    }
    const boot = m.layers[m.layers.length - 1];
    expect(boot.mediaType).toBe('application/vnd.oci.image.layer.v1.tar+gzip');
    expect(boot.annotations).toEqual({ 'containerd.io/snapshot/nydus-bootstrap': 'true', 'containerd.io/snapshot/nydus-fs-version': '6' });
    const cfg = await skopeoInspect(reg, `${reg.host}/${ref}`, 'config');
    expect(cfg.rootfs.diff_ids.slice(0, -1)).toEqual(m.layers.slice(0, -1).map((l: { digest: string }) => l.digest));
    return m;
  }

  test('busybox: convert, check, layout', async () => {
    const res = await convertImage({ source: ep('library/busybox:v1'), target: ep('nydus/busybox:v1-nydus') });
    expect(res.layers).toHaveLength(1);
    expect(res.layers[0].pushed).toBe(true);
    const m = await expectNydusLayout('nydus/busybox:v1-nydus', 1);
    const cfg = await skopeoInspect(reg, `${reg.host}/nydus/busybox:v1-nydus`, 'config');
    expect(cfg.config.Cmd).toEqual(['/bin/sh']);
    // The source's one history entry, then upstream's entry for the bootstrap layer.
    expect(cfg.history).toHaveLength(2);
    expect(cfg.history[1]).toEqual({ created_by: 'Nydus Converter', comment: 'Nydus Bootstrap Layer' });
    const check = await checkImage({ source: ep('library/busybox:v1'), target: ep('nydus/busybox:v1-nydus') });
    expect(check.problems).toEqual([]);
    expect(check.ok).toBe(true);
    expect(check.blobs).toBe(1);
    expect(check.verifiedChunks).toBeGreaterThan(0);
    expect(check.entries).toBeGreaterThan(20);
    // A second conversion finds every blob in the target and pushes none.
    const again = await convertImage({ source: ep('library/busybox:v1'), target: ep('nydus/busybox:v1-nydus') });
    expect(again.layers.every((l) => !l.pushed)).toBe(true);
    expect(again.bootstrapPushed).toBe(false);
    expect(again.manifest.layers.map((l) => l.digest)).toEqual(m.layers.map((l: { digest: string }) => l.digest));
  });

  test('two-layer Debian with deletions: convert, check, whiteouts applied in the bootstrap', async () => {
    const res = await convertImage({ source: ep('base/debian2:v1'), target: ep('nydus/debian2:v1') });
    expect(res.layers).toHaveLength(2);
    const m = await expectNydusLayout('nydus/debian2:v1', 2);
    const check = await checkImage({ source: ep('base/debian2:v1'), target: ep('nydus/debian2:v1') });
    expect(check.problems).toEqual([]);
    expect(check.ok).toBe(true);
    expect(check.entries).toBeGreaterThan(1000);

    const client = new RegistryClient({ registry: reg.host, insecure: true, noDockerConfig: true });
    const layer = await client.getBlobBuffer('nydus/debian2', m.layers[2].digest);
    await client.close();
    const image = decodeBootstrap((await unpackBootstrap(layer, 'test')).bootstrap);
    const c = DEBIAN_2LAYER_CHANGES;
    for (const d of c.deleted) expect(lookup(image, d)).toBeUndefined();
    expect([...lookup(image, c.opaqueDir)!.children!.keys()]).toEqual(['README.nydus']);
    expect(lookup(image, '/etc/hostname')!.size).toBe(c.added['/etc/hostname'].length);
    expect(lookup(image, c.bigFile)!.chunks).toHaveLength(4);
    expect(lookup(image, '/usr/bin/python3')).toBeDefined();
    expect(image.blobs.map((b) => `sha256:${b.blobId}`).sort()).toEqual(m.layers.slice(0, 2).map((l: { digest: string }) => l.digest).sort());
  });

  test('check finds a target that is not the source', async () => {
    const res = await checkImage({ source: ep('base/debian2:v1'), target: ep('nydus/busybox:v1-nydus') });
    expect(res.ok).toBe(false);
    expect(res.problems.some((p) => /only in source/.test(p))).toBe(true);
  });

  test('check finds a plain OCI image is not nydus', async () => {
    const res = await checkImage({ source: ep('library/busybox:v1'), target: ep('library/busybox:v1') });
    expect(res.ok).toBe(false);
    expect(res.problems.join('\n')).toMatch(/lacks containerd.io\/snapshot\/nydus-bootstrap/);
  });

  test('a missing source names registry, repository and status', async () => {
    await expect(convertImage({ source: ep('library/busybox:nope'), target: ep('nydus/x:y') }))
      .rejects.toThrow(`registry ${reg.host}, repository library/busybox: GET manifest nope: HTTP 404`);
  });
});
