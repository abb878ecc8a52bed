/**
 * Acceptance 3: through a proxy that resets a connection, answers 500 or cuts a body short on every
 * Nth request, a conversion (pulling from and pushing to the faulty endpoint) still completes, and
 * the result checks when read back directly. Through a proxy that corrupts a blob, convert and
 * check fail with one line naming the blob, the expected and the actual digest.
 */
import { checkImage, convertImage } from '../src/convert';
import { RegistryClient } from '../src/registry';
import { startRegistry, TestRegistry } from './helpers/registry';
import { pushImage } from './helpers/images';
import { FaultProxy, startFaultProxy } from './helpers/faultproxy';

jest.setTimeout(10 * 60_000);

describe('nydusify convert through a faulty network', () => {
  let reg: TestRegistry;
  let proxy: FaultProxy;
  beforeAll(async () => {
    reg = await startRegistry();
    await pushImage(reg, 'debian-2layer', 'src/debian2', 'v1');
    await pushImage(reg, 'busybox', 'src/busybox', 'v1');
  });
  afterAll(async () => { await proxy?.close(); await reg?.stop(); });

  test.each([
    ['every 4th request reset or 500', 4, ['reset', '500'] as const, 'busybox'],
    ['every 5th request truncated, reset or 500', 5, ['truncate', 'reset', '500'] as const, 'debian2'],
  ])('%s', async (_name, every, faults, image) => {
    proxy = await startFaultProxy(reg.url, { every, faults: [...faults] });
    const via = (ref: string) => ({ ref: `${proxy.host}/${ref}`, plainHttp: true, retryLimit: 8 });
    const res = await convertImage({ source: via(`src/${image}:v1`), target: via(`nydus/${image}:faulty`), parallelism: 2 });
    expect(res.manifest.layers.length).toBeGreaterThan(1);
    const injected = proxy.injected.reset + proxy.injected['500'] + proxy.injected.truncate;
    process.stderr.write(`fault proxy: ${proxy.total()} requests, injected ${JSON.stringify(proxy.injected)}\n`);
    expect(injected).toBeGreaterThanOrEqual(2);
    expect(injected).toBeLessThanOrEqual(Math.floor(proxy.total() / every));
    if (faults.length === 3) expect(proxy.injected.truncate).toBeGreaterThan(0);
    await proxy.close();
    const direct = (ref: string) => ({ ref: `${reg.host}/${ref}`, plainHttp: true });
    const check = await checkImage({ source: direct(`src/${image}:v1`), target: direct(`nydus/${image}:faulty`) });
    expect(check.problems).toEqual([]);
    expect(check.ok).toBe(true);
  });

  test('a corrupted blob fails convert and check with the blob, expected and actual digest', async () => {
    const direct = (ref: string) => ({ ref: `${reg.host}/${ref}`, plainHttp: true });
    const client = new RegistryClient({ registry: reg.host, insecure: true, noDockerConfig: true });
    const mismatch = (digest: string) => new RegExp(`GET blob ${digest}: HTTP 200: content digest sha256:[0-9a-f]{64} \\(\\d+ bytes\\) does not match the expected ${digest}$`);
    // Each proxy inverts one byte in the middle of every GET of the one blob it is given.
    const corrupting = (digest: string) => startFaultProxy(reg.url, { every: 1, faults: ['corrupt'], match: (method, p) => method === 'GET' && p.endsWith(`/blobs/${digest}`) });
    try {
      const layer = (await client.getManifest('src/busybox', 'v1')).json.layers[0].digest as string;
      proxy = await corrupting(layer);
      const via = (ref: string) => ({ ref: `${proxy.host}/${ref}`, plainHttp: true });
      const err = await convertImage({ source: via('src/busybox:v1'), target: direct('nydus/busybox:corrupt') }).catch((e) => e);
      expect(err.message).toMatch(new RegExp(`^layer 1 \\(${layer}\\): `));
      expect(err.message).toMatch(mismatch(layer));
      expect(err.message).not.toContain('\n');
      expect(await client.getManifest('nydus/busybox', 'corrupt').catch((e) => e.status)).toBe(404);
      // check reads the source layers through the corrupting proxy.
      await convertImage({ source: direct('src/busybox:v1'), target: direct('nydus/busybox:clean') });
      await expect(checkImage({ source: via('src/busybox:v1'), target: direct('nydus/busybox:clean') })).rejects.toThrow(mismatch(layer));
      await proxy.close();
      // check downloads the target's nydus blob through the corrupting proxy.
      const blob = (await client.getManifest('nydus/busybox', 'clean')).json.layers[0].digest as string;
      proxy = await corrupting(blob);
      const res = await checkImage({ source: direct('src/busybox:v1'), target: { ref: `${proxy.host}/nydus/busybox:clean`, plainHttp: true } });
      expect(res.ok).toBe(false);
      expect(res.problems).toHaveLength(1);
      expect(res.problems[0]).toMatch(mismatch(blob));
      expect(proxy.injected.corrupt).toBe(1);
      await proxy.close();
    } finally {
      await client.close();
    }
  });
});
