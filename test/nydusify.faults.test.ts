/**
 * Acceptance 3: through a proxy that resets a connection, answers 500 or cuts a body short on every
 * Nth request, a conversion (pulling from and pushing to the faulty endpoint) still completes, and
 * the result checks when read back directly.
 */
import { checkImage, convertImage } from '../src/convert';
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
    const via = (ref: string) => ({ ref: `${proxy.host}/${ref}`, insecure: true, retryLimit: 8 });
    const res = await convertImage({ source: via(`src/${image}:v1`), target: via(`nydus/${image}:faulty`), parallelism: 2 });
    expect(res.manifest.layers.length).toBeGreaterThan(1);
    const injected = proxy.injected.reset + proxy.injected['500'] + proxy.injected.truncate;
    process.stderr.write(`fault proxy: ${proxy.total()} requests, injected ${JSON.stringify(proxy.injected)}\n`);
    expect(injected).toBeGreaterThanOrEqual(2);
    expect(injected).toBeLessThanOrEqual(Math.floor(proxy.total() / every));
    if (faults.length === 3) expect(proxy.injected.truncate).toBeGreaterThan(0);
    await proxy.close();
    const direct = (ref: string) => ({ ref: `${reg.host}/${ref}`, insecure: true });
    const check = await checkImage({ source: direct(`src/${image}:v1`), target: direct(`nydus/${image}:faulty`) });
    expect(check.problems).toEqual([]);
    expect(check.ok).toBe(true);
  });
});
