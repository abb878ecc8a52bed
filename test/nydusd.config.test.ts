/** nydusd's v1 JSON config: defaults, both backends, pass-through extension points, errors naming the key. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { localfsDirConfig, nydusdConfigAsV1, parseNydusdConfig, parseNydusdConfigFile, parseNydusdConfigText } from '../src/daemon/config';
import { REPO_ROOT } from './helpers/fixtures';

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

test('kernel EROFS mode: cache type "erofs" in v1 JSON and v2 TOML ([cache.erofs] or [cache.filecache] work_dir)', () => {
  const v1 = parseNydusdConfig({ device: { backend: { type: 'localfs', config: { dir: '/b' } }, cache: { type: 'erofs', config: { work_dir: '/c' } } } }, 'c.json');
  expect(v1.warnings).toEqual([]);
  expect(v1.config.cache).toEqual({ type: 'erofs', workDir: '/c', validate: false });
  const v2 = parseNydusdConfigText('version = 2\n[backend]\ntype = "localfs"\n[backend.localfs]\ndir = "/b"\n[cache]\ntype = "erofs"\n[cache.erofs]\nwork_dir = "/e"\n', 'c.toml');
  expect(v2.warnings).toEqual([]);
  expect(v2.config.cache).toEqual({ type: 'erofs', workDir: '/e', validate: false });
  const v2f = parseNydusdConfigText('version = 2\n[backend]\ntype = "localfs"\n[backend.localfs]\ndir = "/b"\n[cache]\ntype = "erofs"\n[cache.filecache]\nwork_dir = "/f"\n', 'c.toml');
  expect(v2f.config.cache).toEqual({ type: 'erofs', workDir: '/f', validate: false });
});

test('unknown keys are warnings that name the key', () => {
  const { warnings } = parseNydusdConfig({ device: { backend: { type: 'localfs', config: { dir: '/b', colour: 'red' } } }, turbo: true }, 'c.json');
  expect(warnings).toEqual(['c.json: device.backend.config.colour: unknown key, ignored', 'c.json: turbo: unknown key, ignored']);
});

test.each([
  [{ device: { backend: { type: 'registry', config: { host: 5000, repo: 'a' } } } }, 'c.json: device.backend.config.host: expected a string, got number'],
  [{ device: { backend: { type: 'registry', config: { repo: 'a' } } } }, 'c.json: device.backend.config.host: is required for the registry backend'],
  [{ device: { backend: { type: 'oss', config: {} } } }, 'c.json: device.backend.config.endpoint: is required for the oss backend'],
  [{ device: { backend: { type: 's3', config: {} } } }, 'c.json: device.backend.config.region: is required for the s3 backend'],
  [{ device: { backend: { type: 'localdisk', config: {} } } }, 'c.json: device.backend.type: the "localdisk" (local disk (GPT partitions)) backend is not supported'],
  [{ device: { backend: { type: 'http-proxy', config: {} } } }, 'c.json: device.backend.type: the "http-proxy" (local HTTP proxy) backend is not supported'],
  [{ device: { backend: { type: 'ftp', config: {} } } }, 'c.json: device.backend.type: unsupported backend "ftp" (registry, localfs, s3 or oss)'],
  [{ device: { backend: { type: 'localfs', config: { dir: '/b' } }, cache: { config: { enable_encryption: true } } } }, 'c.json: device.cache.config.enable_encryption: cache encryption is not supported by this nydusd'],
  [{ device: { backend: { type: 'localfs', config: { dir: '/b' } } }, amplify_io: '1M' }, 'c.json: amplify_io: expected a number, got string'],
  [{ device: { backend: { type: 'localfs', config: { dir: '/b' } } }, fs_prefetch: { enable: 'yes' } }, 'c.json: fs_prefetch.enable: expected true or false, got string'],
  [{ device: { backend: { type: 'localfs', config: { dir: '/b' } } }, fs_prefetch: { threads_count: 0 } }, 'c.json: fs_prefetch.threads_count: must be at least 1, got 0'],
  [{ device: { backend: { type: 'registry', config: { host: 'h', repo: 'r', mirrors: {} } } } }, 'c.json: device.backend.config.mirrors: expected an array, got object'],
  [{ device: { backend: { type: 'registry', config: { host: 'h', repo: 'r', auth: 'bm9jb2xvbg==' } } } }, 'c.json: device.backend.config.auth: must be base64 of "user:password"'],
  [{ device: { backend: { type: 'localfs', config: { dir: '/b' } }, cache: { type: 'fscache' } } }, 'c.json: device.cache.type: fscache needs the kernel\'s on-demand fscache (CONFIG_EROFS_FS_ONDEMAND), which this nydusd does not use; use "erofs"'],
  [{ device: { backend: { type: 'localfs', config: { dir: '/b' } }, cache: { type: 'tmpfs' } } }, 'c.json: device.cache.type: unsupported cache type "tmpfs" (blobcache, filecache or erofs)'],
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

describe('upstream config files', () => {
  const fixture = (name: string) => path.join(REPO_ROOT, 'test', 'fixtures', 'compat', name);

  test('v1 JSON with every key of upstream\'s fusedev/localfs configs: no warnings, every value applied', () => {
    const { config, warnings } = parseNydusdConfigFile(fixture('nydusd-v1-all-keys.json'));
    expect(warnings).toEqual([]);
    expect(config.id).toBe('compat-v1');
    expect(config.backend.type).toBe('registry');
    if (config.backend.type !== 'registry') throw new Error('unreachable');
    expect(config.backend.config).toMatchObject({ scheme: 'http', host: '127.0.0.1:5000', repo: 'library/app', auth: 'dXNlcjpwYXNz', registryToken: 'opaque-token', retryLimit: 2 });
    expect(config.backend.config.proxy).toEqual({ url: 'http://127.0.0.1:65001', fallback: true });
    expect(config.fsPrefetch).toEqual({ enable: true, threadsCount: 8, mergingSize: 1048576, bandwidthRate: 0, prefetchAll: true });
  });

  test('localfs readahead/readahead_sec (older upstream configs) are accepted with one warning each', () => {
    const f = fixture('nydusd-localfs-readahead.json');
    const { config, warnings } = parseNydusdConfigFile(f);
    expect(config.backend).toEqual({ type: 'localfs', config: { dir: '/srv/blobs', altDirs: [], blobFile: undefined } });
    expect(warnings).toEqual([
      `${f}: device.backend.config.readahead = true: accepted, not used: blob data is read on demand, chunk by chunk (no readahead file)`,
      `${f}: device.backend.config.readahead_sec = 10: accepted, not used: blob data is read on demand, chunk by chunk (no readahead file)`,
    ]);
  });

  test('v2 TOML with every key of upstream\'s v2 sample maps onto the same settings, warnings name v2 keys', () => {
    const f = fixture('nydusd-v2-all-keys.toml');
    const { config, warnings } = parseNydusdConfigFile(f);
    expect(config.id).toBe('compat-v2');
    if (config.backend.type !== 'registry') throw new Error(`backend ${config.backend.type}`);
    expect(config.backend.config).toMatchObject({
      scheme: 'http', host: '127.0.0.1:5000', repo: 'library/app', auth: 'dXNlcjpwYXNz', skipVerify: true,
      caCertFiles: ['/etc/ssl/private-ca.pem'], timeout: 30, connectTimeout: 8, retryLimit: 4, registryToken: 'opaque-token',
    });
    expect(config.backend.config.proxy).toMatchObject({ url: 'http://127.0.0.1:65001', fallback: false, check_interval: 7, use_http: true });
    expect(config.cache).toEqual({ type: 'blobcache', workDir: '/var/cache/nydus-compat', validate: true });
    expect(config.digestValidate).toBe(true);
    expect(config.amplifyIo).toBe(524288);
    expect(config.accessPattern).toBe(true);
    expect(config.fsPrefetch).toEqual({ enable: true, threadsCount: 6, mergingSize: 131072, bandwidthRate: 2000000, prefetchAll: false });
    expect(warnings).toEqual([
      `${f}: cache.prefetch.enable = true: accepted, not used: prefetch follows rafs.prefetch (per image), not per blob`,
      `${f}: backend.registry.proxy.dragonfly_scheduler_endpoint = "http://127.0.0.1:8002": accepted, not used: blobs go through the proxy URL; the Dragonfly scheduler is not contacted directly`,
      `${f}: backend.registry.blob_url_scheme = "https": accepted, not used: blobs are fetched with the registry's scheme (http)`,
      `${f}: backend.registry.blob_redirected_host = "blobs.example.test": accepted, not used: blobs are fetched from 127.0.0.1:5000 (and the registry's own redirects are followed)`,
      `${f}: cache.compressed = true: accepted, not used: chunks are cached uncompressed (upstream no longer uses this key either)`,
    ]);
  });

  test('the same v2 config as JSON parses to the same result', () => {
    const tomlFile = fixture('nydusd-v2-all-keys.toml');
    const doc = parseToml(fs.readFileSync(tomlFile, 'utf8'));
    const viaJson = parseNydusdConfigText(JSON.stringify(doc), 'v2.json');
    const viaToml = parseNydusdConfigFile(tomlFile);
    expect(viaJson.config).toEqual(viaToml.config);
    expect(viaJson.warnings.map((w) => w.replace('v2.json: ', ''))).toEqual(viaToml.warnings.map((w) => w.replace(`${tomlFile}: `, '')));
  });

  test('v2 errors and unknown keys use the v2 names', () => {
    expect(() => parseNydusdConfigText('version = 2\n[backend]\ntype = "localdisk"\n[backend.localdisk]\ndevice_path = "x"', 'v2.toml')).toThrow(
      'v2.toml: backend.type: the "localdisk" (local disk (GPT partitions)) backend is not supported by this nydusd; use registry, localfs, s3 or oss',
    );
    expect(() => parseNydusdConfigText('version = 2\n[backend]\ntype = "oss"\n[backend.oss]\nendpoint = "x"', 'v2.toml')).toThrow('v2.toml: backend.oss.bucket_name: is required for the oss backend');
    expect(() => parseNydusdConfigText('version = 2\n[backend]\ntype = "registry"\n[backend.registry]\nhost = "h"', 'v2.toml')).toThrow('v2.toml: backend.registry.repo: is required for the registry backend');
    expect(() => parseNydusdConfigText('version = 2\n[backend]\ntype = "localfs"\n[backend.localfs]\ndir = "/b"\n[rafs.prefetch]\nthreads = 0', 'v2.toml')).toThrow('v2.toml: rafs.prefetch.threads: must be at least 1, got 0');
    const { warnings } = parseNydusdConfigText('version = 2\ncolour = 1\n[backend]\ntype = "localfs"\n[backend.localfs]\ndir = "/b"\nspeed = 2\n[rafs]\nenable_xattr = false', 'v2.toml');
    expect(warnings).toEqual([
      'v2.toml: colour: unknown key, ignored',
      "v2.toml: rafs.enable_xattr = false: accepted, not used: the image's extended attributes are always served",
      'v2.toml: backend.localfs.speed: unknown key, ignored',
    ]);
  });

  test('a v2 nydusd_config template becomes the v1 object the snapshotter fills in', () => {
    const f = fixture('nydusd-v2-all-keys.toml');
    const v1 = nydusdConfigAsV1(fs.readFileSync(f, 'utf8'), f) as any;
    expect(v1.device.backend.type).toBe('registry');
    expect(v1.device.backend.config.host).toBe('127.0.0.1:5000');
    expect(v1.fs_prefetch.threads_count).toBe(6);
    expect(parseNydusdConfig(v1).config).toEqual(parseNydusdConfigFile(f).config);
    const json = fixture('nydusd-v1-all-keys.json');
    expect(nydusdConfigAsV1(fs.readFileSync(json, 'utf8'), json)).toEqual(JSON.parse(fs.readFileSync(json, 'utf8')));
    expect(() => nydusdConfigAsV1('version = ', 'bad.toml')).toThrow(/^bad\.toml: \(root\): neither JSON nor valid TOML/);
  });

  test('upstream\'s `nydusd --localfs-dir` config: blobs and cache in that directory', () => {
    expect(localfsDirConfig('/srv/x')).toMatchObject({ backend: { type: 'localfs', config: { dir: '/srv/x' } }, cache: { workDir: '/srv/x' } });
  });
});
