/**
 * certs.d and nydusd JSON mirror config: parsing, errors naming file/line/reason, last good config
 * kept, lookup order, and the chokidar watcher picking up add/change/delete.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CertsDir, effectiveMirrors, hostDirCandidates } from '../src/mirrors/certs-dir';
import { parseHostsToml } from '../src/mirrors/hosts-toml';
import { mirrorFromJson, mirrorsFromJson, mirrorToJson, proxyFromJson } from '../src/mirrors/nydus-json';
import { MirrorConfigError } from '../src/mirrors/types';
import { CertsWatcher } from '../src/mirrors/watcher';
import { MirrorsSync } from '../src/mirrors/push';
import { DaemonManager } from '../src/snapshotter/daemons';
import { CRI_IMAGE_REF } from '../src/snapshotter/labels';
import type { MetaLayer } from '../src/snapshotter/snapshotter';
import { MetaStore } from '../src/snapshotter/store';
import { REPO_ROOT } from './helpers/fixtures';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mirrors-config-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function write(dir: string, host: string, text: string): string {
  fs.mkdirSync(path.join(dir, host), { recursive: true });
  const f = path.join(dir, host, 'hosts.toml');
  // write-then-rename, as editors and config managers do
  fs.writeFileSync(`${f}.tmp`, text);
  fs.renameSync(`${f}.tmp`, f);
  return f;
}

async function until<T>(what: string, fn: () => T | undefined, ms = 5000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('hosts.toml', () => {
  test('the repo examples parse: Dragonfly mirror with header and auth_through=false; pull-through cache', () => {
    const certs = new CertsDir(path.join(REPO_ROOT, 'certs.d'));
    expect(certs.reload().errors).toEqual([]);
    const hub = certs.mirrorsFor('index.docker.io');
    expect(hub).toHaveLength(1);
    expect(hub[0]).toMatchObject({
      host: 'http://127.0.0.1:65001',
      headers: { 'X-Dragonfly-Registry': 'https://index.docker.io' },
      authThrough: false,
      pingUrl: 'http://127.0.0.1:40901/server/ping',
      healthCheckInterval: 5,
      failureLimit: 5,
    });
    expect(certs.hostsFor('docker.io')?.server).toBe('https://registry-1.docker.io');
    const priv = certs.mirrorsFor('registry.internal.example:5000');
    expect(priv[0]).toMatchObject({ host: 'https://cache.internal.example:5001', authThrough: true, ca: ['/etc/ssl/certs/internal-ca.pem'], failureLimit: 3 });
    expect(priv[0].pingUrl).toBe('https://cache.internal.example:5001/v2/');
  });

  test('containerd keys: order, capabilities, skip_verify, relative ca and client, override_path, header arrays', () => {
    const text = `server = "https://origin.example"
[host."mirror-b.example:5000"]
  capabilities = ["pull"]
  skip_verify = true
  ca = ["ca.pem"]
  client = [["c.crt", "c.key"]]
  [host."mirror-b.example:5000".header]
    X-A = ["one", "two"]
[host."http://a.example/api"]
  override_path = true
  capabilities = ["resolve"]
`;
    const p = parseHostsToml(text, '/etc/certs.d/origin.example/hosts.toml');
    expect(p.mirrors.map((m) => m.host)).toEqual(['https://mirror-b.example:5000', 'http://a.example/api']);
    expect(p.mirrors[0]).toMatchObject({
      skipVerify: true,
      ca: ['/etc/certs.d/origin.example/ca.pem'],
      client: { cert: '/etc/certs.d/origin.example/c.crt', key: '/etc/certs.d/origin.example/c.key' },
      headers: { 'X-A': 'one' },
      capabilities: ['pull'],
    });
    expect(p.mirrors[1]).toMatchObject({ overridePath: true, pingUrl: 'http://a.example/api/' });
    expect(p.warnings.join('\n')).toMatch(/hosts\.toml:8: header X-A has 2 values/);
  });

  test.each([
    ['[host."http://m"\nx = 1\n', /hosts\.toml:1:\d+: invalid TOML/],
    ['[host."http://m"]\n  failure_limit = "five"\n', /hosts\.toml:2: failure_limit must be a positive integer/],
    ['\n[host."http://m"]\n  capabilities = ["pull", "fly"]\n', /hosts\.toml:3: unknown capability "fly"/],
    ['[host."ftp://m"]\n', /hosts\.toml:1: unsupported scheme ftp:/],
    ['[host."http://m"]\n  skip_verify = "yes"\n', /hosts\.toml:2: skip_verify must be true or false/],
  ])('error names file, line and reason: %j', (text, re) => {
    let err: unknown;
    try {
      parseHostsToml(text, '/x/hosts.toml');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(MirrorConfigError);
    expect((err as Error).message).toMatch(re);
    expect((err as Error).message).not.toContain('\n');
  });

  test('lookup: host:port dir, docker.io aliases, then _default; last good kept; delete removes', () => {
    const dir = path.join(tmp, 'lookup');
    write(dir, '_default', '[host."http://fallback:1"]\n');
    write(dir, 'docker.io', '[host."http://hub-mirror:1"]\n');
    const f = write(dir, '127.0.0.1:5000', '[host."http://local-mirror:1"]\n');
    const certs = new CertsDir(dir);
    expect(certs.reload().errors).toEqual([]);
    expect(hostDirCandidates('index.docker.io')).toEqual(['index.docker.io', 'docker.io', 'registry-1.docker.io', '_default']);
    expect(certs.mirrorsFor('index.docker.io')[0].host).toBe('http://hub-mirror:1');
    expect(certs.mirrorsFor('127.0.0.1:5000')[0].host).toBe('http://local-mirror:1');
    expect(certs.mirrorsFor('quay.io')[0].host).toBe('http://fallback:1');

    fs.writeFileSync(f, '[host."http://local-mirror:1"\n');
    const r = certs.reload();
    expect(r.errors.map((e) => e.message)).toEqual([expect.stringMatching(new RegExp(`^${f}:1:\\d+: invalid TOML`))]);
    expect(r.changed).toBe(false);
    expect(certs.mirrorsFor('127.0.0.1:5000')[0].host).toBe('http://local-mirror:1');

    fs.rmSync(path.join(dir, '127.0.0.1:5000'), { recursive: true });
    expect(certs.reload().changed).toBe(true);
    expect(certs.mirrorsFor('127.0.0.1:5000')[0].host).toBe('http://fallback:1');
  });

  test('a host:port registry is looked up first in containerd\'s host_port_ directory', () => {
    const dir = path.join(tmp, 'portdir');
    write(dir, '127.0.0.1:5000', '[host."http://colon-mirror:1"]\n');
    write(dir, '127.0.0.1_5000_', '[host."http://underscore-mirror:1"]\n');
    write(dir, 'reg.example:443', '[host."http://only-colon:1"]\n');
    const certs = new CertsDir(dir);
    expect(certs.reload().errors).toEqual([]);
    expect(hostDirCandidates('127.0.0.1:5000')).toEqual(['127.0.0.1_5000_', '127.0.0.1:5000', '_default']);
    expect(hostDirCandidates('quay.io')).toEqual(['quay.io', '_default']);
    expect(certs.mirrorsFor('127.0.0.1:5000')[0].host).toBe('http://underscore-mirror:1');
    expect(certs.mirrorsFor('reg.example:443')[0].host).toBe('http://only-colon:1');
  });

  test('top-level ca and skip_verify are the registry\'s own TLS settings; header, client, capabilities are named', () => {
    const text = [
      'server = "https://reg.example:5000"',
      'ca = "certs/reg-ca.pem"',
      'skip_verify = true',
      'client = "certs/client.pem"',
      'capabilities = ["pull", "resolve"]',
      'colour = "blue"',
      '',
      '[header]',
      '  X-Tenant = "team-a"',
      '',
      '[host."http://mirror:1"]',
      '  capabilities = ["pull"]',
      '',
    ].join('\n');
    const h = parseHostsToml(text, '/etc/certs.d/reg.example_5000_/hosts.toml');
    expect(h.serverTls).toEqual({ ca: ['/etc/certs.d/reg.example_5000_/certs/reg-ca.pem'], skipVerify: true });
    expect(h.mirrors.map((m) => m.host)).toEqual(['http://mirror:1']);
    expect(h.warnings).toEqual([
      '/etc/certs.d/reg.example_5000_/hosts.toml:6: unknown top-level key colour ignored',
      '/etc/certs.d/reg.example_5000_/hosts.toml:8: top-level [header] (X-Tenant) is not sent: requests to the registry itself carry no extra headers here',
      '/etc/certs.d/reg.example_5000_/hosts.toml:4: top-level client certificate is not used: the registry itself is read without a client certificate',
      '/etc/certs.d/reg.example_5000_/hosts.toml:5: top-level capabilities is not used: the registry itself is always read at /v2 for pulls',
    ]);
    expect(parseHostsToml('[host."http://m:1"]\n', '/h.toml').serverTls).toBeUndefined();
    expect(() => parseHostsToml('skip_verify = "yes"\n', '/h.toml')).toThrow('/h.toml:1: skip_verify must be true or false');
    expect(() => parseHostsToml('ca = 3\n', '/h.toml')).toThrow('/h.toml:1: ca must be a path or an array of paths');
  });

  test('the snapshotter puts a registry\'s top-level ca / skip_verify into its instance config', async () => {
    const dir = path.join(tmp, 'server-tls');
    write(dir, 'reg.example_5000_', 'ca = "reg-ca.pem"\nskip_verify = true\n[host."http://mirror:1"]\n');
    const root = path.join(tmp, 'sn-root');
    fs.mkdirSync(root, { recursive: true });
    const sync = new MirrorsSync(dir);
    await sync.start();
    const store = new MetaStore(path.join(root, 'metadata.db'));
    try {
      const dm = new DaemonManager({ root, store, mode: 'shared', nydusdPath: '/bin/false', template: { device: { backend: { type: 'registry', config: { ca_cert_files: ['/etc/own.pem'] } } } }, recoverPolicy: 'restart', cacheDir: path.join(root, 'cache'), logLevel: 'info', mirrors: sync });
      // instanceConfig is what mount() sends to nydusd; called directly so no daemon has to run.
      const inst = (dm as unknown as { instanceConfig(m: MetaLayer): { config: { device: { backend: { config: Record<string, unknown> } } } } }).instanceConfig({
        snapshotId: '5',
        bootstrap: '/nonexistent',
        labels: { [CRI_IMAGE_REF]: 'reg.example:5000/app:1' },
      });
      expect(inst.config.device.backend.config).toMatchObject({ host: 'reg.example:5000', ca_cert_files: ['/etc/own.pem', path.join(dir, 'reg.example_5000_', 'reg-ca.pem')], skip_verify: true });
      dm.close();
    } finally {
      store.close();
      await sync.close();
    }
  });

  test('certs.d replaces JSON mirrors only when it has at least one entry', () => {
    const json = mirrorsFromJson([{ host: 'http://json-mirror:1' }]);
    const toml = parseHostsToml('[host."http://toml-mirror:1"]\n', '/h.toml').mirrors;
    expect(effectiveMirrors(json, toml)[0].host).toBe('http://toml-mirror:1');
    expect(effectiveMirrors(json, [])[0].host).toBe('http://json-mirror:1');
  });
});

describe('nydusd JSON', () => {
  test('mirror defaults follow nydusd and round-trip through the API shape', () => {
    const m = mirrorFromJson({ host: 'http://127.0.0.1:65001', headers: { 'X-Dragonfly-Registry': 'https://index.docker.io' } }, 'mirrors[0]');
    expect(m).toMatchObject({ authThrough: false, healthCheckInterval: 5, failureLimit: 5, pingUrl: 'http://127.0.0.1:65001/v2/' });
    expect(mirrorFromJson(mirrorToJson(m), 'x')).toEqual(m);
  });

  test('proxy defaults and errors', () => {
    expect(proxyFromJson({ url: 'http://127.0.0.1:65001', ping_url: 'http://127.0.0.1:40901/server/ping' })).toEqual({
      url: 'http://127.0.0.1:65001', pingUrl: 'http://127.0.0.1:40901/server/ping', fallback: true, checkInterval: 5, useHttp: false, checkPauseElapsed: 300,
    });
    expect(proxyFromJson({ url: '' })).toBeUndefined();
    expect(() => mirrorsFromJson([{ host: 'http://m', failure_limit: 0 }], 'device.backend.config.mirrors')).toThrow(
      'device.backend.config.mirrors[0].failure_limit: expected a positive integer, got 0',
    );
    expect(() => proxyFromJson({ url: 'http://p', fallback: 'no' })).toThrow('proxy.fallback: expected true or false');
  });
});

describe('watcher', () => {
  test('add, change, broken file and delete reach onChange/onError within 2 s', async () => {
    const dir = path.join(tmp, 'watch');
    fs.mkdirSync(dir, { recursive: true });
    let current: string[] = [];
    let changes = 0;
    const errors: string[] = [];
    const w = new CertsWatcher(dir, {
      debounceMs: 100,
      onChange: (c) => {
        changes++;
        current = c.mirrorsFor('reg.example').map((m) => m.host);
      },
      onError: (e) => errors.push(e.message),
    });
    try {
      await w.start();
      expect(current).toEqual([]);
      write(dir, 'reg.example', '[host."http://m1:1"]\n');
      await until('add', () => (current[0] === 'http://m1:1' ? true : undefined), 2000);
      write(dir, 'reg.example', '[host."http://m2:1"]\n[host."http://m3:1"]\n');
      await until('change', () => (current.length === 2 ? true : undefined), 2000);
      expect(current).toEqual(['http://m2:1', 'http://m3:1']);
      const before = changes;
      write(dir, 'reg.example', '[host."http://m4:1"]\n  failure_limit = -1\n');
      await until('error', () => (errors.length ? true : undefined), 2000);
      expect(errors[0]).toMatch(/reg\.example\/hosts\.toml:2: failure_limit must be a positive integer/);
      expect(changes).toBe(before);
      expect(w.certs.mirrorsFor('reg.example').map((m) => m.host)).toEqual(['http://m2:1', 'http://m3:1']);
      fs.rmSync(path.join(dir, 'reg.example', 'hosts.toml'));
      await until('delete', () => (current.length === 0 ? true : undefined), 2000);
    } finally {
      await w.close();
    }
  });
});
