/** The test registries themselves: each flavour accepts a real skopeo push and records what it saw. */
import { pullThroughCache, startRegistry, TestRegistry } from './helpers/registry';
import { pushImage, skopeoInspect } from './helpers/images';

describe('test registries (docker-registry + skopeo)', () => {
  const regs: TestRegistry[] = [];
  afterAll(async () => { for (const r of regs) await r.stop(); });

  test.each(['none', 'basic', 'token'] as const)('auth=%s accepts a push and records requests', async (auth) => {
    const reg = await startRegistry({ auth });
    regs.push(reg);
    const anon = await fetch(`${reg.url}/v2/`);
    expect(anon.status).toBe(auth === 'none' ? 200 : 401);
    if (auth === 'token') expect(anon.headers.get('www-authenticate')).toContain(`realm="${reg.tokenRealm}"`);
    if (auth === 'basic') expect(anon.headers.get('www-authenticate')).toMatch(/^Basic /);
    const ref = await pushImage(reg, 'busybox', 'test/busybox', 'v1');
    const manifest = await skopeoInspect(reg, ref);
    expect(manifest.layers).toHaveLength(1);
    const puts = reg.requests().filter((r) => r.method === 'PUT' && r.path.includes('/manifests/v1'));
    expect(puts.map((r) => r.status)).toContain(201);
    if (auth === 'token') expect(reg.tokenRequests().some((t) => t.account === reg.username && t.status === 200)).toBe(true);
  });

  test('wrong password is refused by the basic registry', async () => {
    const reg = regs.find((r) => r.username && !r.tokenRealm)!;
    await expect(pushImage({ host: reg.host, username: reg.username, password: 'wrong' }, 'busybox', 'test/busybox', 'v2')).rejects.toThrow(/unauthorized|401/i);
  });

  test('pull-through cache serves the origin image', async () => {
    const origin = regs[0];
    const cache = await pullThroughCache(origin.url);
    regs.push(cache);
    const m = await skopeoInspect(cache, `${cache.host}/test/busybox:v1`);
    expect(m.layers).toHaveLength(1);
    expect(origin.requests().some((r) => r.path.startsWith('/v2/test/busybox/manifests/v1') && r.status === 200)).toBe(true);
  });
});
