/** nydusd's v1 JSON config: defaults, both backends, pass-through extension points, errors naming the key. */
import { parseNydusdConfig, parseNydusdConfigText } from '../src/daemon/config';

const registry = {
  device: {
    backend: { type: 'registry', config: { scheme: 'http', host: '127.0.0.1:5000', repo: 'library/debian', timeout: 10, retry_limit: 2, mirrors: [{ host: 'http://127.0.0.1:65001' }], proxy: { url: 'http://127.0.0.1:65001' } } },
    cache: { type: 'blobcache', config: { work_dir: '/var/cache/nydus' } },
  },
  mode: 'direct',
  digest_validate: true,
  amplify_io: 262144,
  fs_prefetch: { enable: true, threads_count: 4, merging_size: 131072, bandwidth_rate: 1048576, prefetch_all: false },
  p2p: { enable: true },
};

test('a registry config parses into typed values with upstream defaults', () => {
  const { config, warnings } = parseNydusdConfig(registry, 'cfg.json');
  expect(warnings).toEqual([]);
  expect(config.backend.type).toBe('registry');
  if (config.backend.type !== 'registry') throw new Error('unreachable');
  expect(config.backend.config).toMatchObject({ scheme: 'http', host: '127.0.0.1:5000', repo: 'library/debian', timeout: 10, connectTimeout: 5, retryLimit: 2, skipVerify: false });
  expect(config.backend.config.mirrors).toEqual([{ host: 'http://127.0.0.1:65001' }]);
  expect(config.backend.config.proxy).toEqual({ url: 'http://127.0.0.1:65001' });
  expect(config.p2p).toEqual({ enable: true });
  expect(config.cache).toEqual({ type: 'blobcache', workDir: '/var/cache/nydus', validate: false });
  expect(config.digestValidate).toBe(true);
  expect(config.amplifyIo).toBe(262144);
  expect(config.fsPrefetch).toEqual({ enable: true, threadsCount: 4, mergingSize: 131072, bandwidthRate: 1048576, prefetchAll: false });
});

test('a minimal localfs config gets the defaults', () => {
  const { config } = parseNydusdConfig({ device: { backend: { type: 'localfs', config: { dir: '/blobs' } } } });
  expect(config.backend).toEqual({ type: 'localfs', config: { dir: '/blobs', altDirs: [], blobFile: undefined } });
  expect(config.amplifyIo).toBe(1 << 20);
  expect(config.fsPrefetch).toEqual({ enable: false, threadsCount: 8, mergingSize: 1 << 20, bandwidthRate: 0, prefetchAll: true });
  expect(config.cache.workDir).toBe('.');
});

test('unknown keys are warnings that name the key', () => {
  const { warnings } = parseNydusdConfig({ device: { backend: { type: 'localfs', config: { dir: '/b', colour: 'red' } } }, turbo: true }, 'c.json');
  expect(warnings).toEqual(['c.json: device.backend.config.colour: unknown key, ignored', 'c.json: turbo: unknown key, ignored']);
});

test.each([
  [{ device: { backend: { type: 'registry', config: { host: 5000, repo: 'a' } } } }, 'c.json: device.backend.config.host: expected a string, got number'],
  [{ device: { backend: { type: 'registry', config: { repo: 'a' } } } }, 'c.json: device.backend.config.host: is required for the registry backend'],
  [{ device: { backend: { type: 'oss', config: {} } } }, 'c.json: device.backend.type: unsupported backend "oss" (registry or localfs)'],
  [{ device: { backend: { type: 'localfs', config: { dir: '/b' } } }, amplify_io: '1M' }, 'c.json: amplify_io: expected a number, got string'],
  [{ device: { backend: { type: 'localfs', config: { dir: '/b' } } }, fs_prefetch: { enable: 'yes' } }, 'c.json: fs_prefetch.enable: expected true or false, got string'],
  [{ device: { backend: { type: 'localfs', config: { dir: '/b' } } }, fs_prefetch: { threads_count: 0 } }, 'c.json: fs_prefetch.threads_count: must be at least 1, got 0'],
  [{ device: { backend: { type: 'registry', config: { host: 'h', repo: 'r', mirrors: {} } } } }, 'c.json: device.backend.config.mirrors: expected an array, got object'],
  [{ device: { backend: { type: 'registry', config: { host: 'h', repo: 'r', auth: 'bm9jb2xvbg==' } } } }, 'c.json: device.backend.config.auth: must be base64 of "user:password"'],
  [{ device: { backend: { type: 'localfs', config: { dir: '/b' } }, cache: { type: 'fscache' } } }, 'c.json: device.cache.type: unsupported cache type "fscache" (blobcache or filecache)'],
  [[], 'c.json: (root): expected a JSON object, got array'],
])('bad config %# is one clear error', (raw, msg) => {
  expect(() => parseNydusdConfig(raw, 'c.json')).toThrow(msg);
});

test('invalid JSON text names the file', () => {
  expect(() => parseNydusdConfigText('{"device": ', 'x.json')).toThrow(/^x\.json: \(root\): invalid JSON/);
});

test('credentials never appear in errors', () => {
  const auth = Buffer.from('alice:s3cret').toString('base64');
  try {
    parseNydusdConfig({ device: { backend: { type: 'registry', config: { host: 1, repo: 'r', auth } } } });
  } catch (e) {
    expect((e as Error).message).not.toContain(auth);
    expect((e as Error).message).not.toContain('s3cret');
    return;
  }
  throw new Error('expected an error');
});
