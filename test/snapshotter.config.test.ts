/**
 * config.toml parsing: defaults, upstream keys, CLI overrides, and one-line errors naming the file
 * and key. The shipped config/config.toml must parse.
 */
import * as path from 'node:path';
import * as fs from 'node:fs';
import { parse } from 'smol-toml';
import { DEFAULT_ADDRESS, DEFAULT_ROOT, loadConfig, parseConfig } from '../src/snapshotter/config';
import { REPO_ROOT } from './helpers/fixtures';

describe('config.toml', () => {
  test('defaults', () => {
    const c = parseConfig('', 'x.toml');
    expect(c).toMatchObject({ version: 1, root: DEFAULT_ROOT, address: DEFAULT_ADDRESS, daemonMode: 'shared' });
    expect(c.daemon.recoverPolicy).toBe('restart');
    expect(c.cache.dir).toBe(path.join(DEFAULT_ROOT, 'cache'));
    expect(c.metrics.address).toBe('');
  });

  test('the shipped config/config.toml and config/nydusd.json parse', () => {
    const c = loadConfig(path.join(REPO_ROOT, 'config', 'config.toml'));
    expect(c.daemonMode).toBe('shared');
    expect(c.daemon.nydusdConfig).toBe('/etc/nydus/nydusd.json');
    expect(JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'config', 'nydusd.json'), 'utf8')).device.backend.type).toBe('registry');
  });

  test('deploy/: the DaemonSet ConfigMaps, the containerd snippet and the systemd unit agree with the defaults', () => {
    const yaml = fs.readFileSync(path.join(REPO_ROOT, 'deploy', 'kubernetes', 'nydus-snapshotter.yaml'), 'utf8');
    // A literal block: the lines after `name: |`, indented four spaces.
    const block = (name: string): string => {
      const lines = yaml.split('\n');
      const i = lines.findIndex((l) => l.trim() === `${name}: |`);
      const out: string[] = [];
      for (const l of lines.slice(i + 1)) {
        if (l.trim() && !l.startsWith('    ')) break;
        out.push(l.slice(4));
      }
      return out.join('\n');
    };
    fs.mkdirSync('/tmp/nydus-deploy-test-certs', { recursive: true }); // the mirrors dir must exist
    const c = parseConfig(block('config.toml').replace('/etc/containerd/certs.d', '/tmp/nydus-deploy-test-certs'), 'configmap');
    expect(c.address).toBe(DEFAULT_ADDRESS);
    expect(c.metrics.address).toBe('0.0.0.0:9110');
    expect(JSON.parse(block('nydusd.json')).device.backend.type).toBe('registry');
    const snippet = parse(fs.readFileSync(path.join(REPO_ROOT, 'deploy', 'containerd-config.toml'), 'utf8')) as any;
    expect(snippet.proxy_plugins.nydus).toEqual({ type: 'snapshot', address: DEFAULT_ADDRESS });
    expect(snippet.plugins['io.containerd.grpc.v1.cri'].containerd.disable_snapshot_annotations).toBe(false);
    expect(fs.readFileSync(path.join(REPO_ROOT, 'deploy', 'containerd-nydus-grpc.service'), 'utf8')).toMatch(/^KillMode=process$/m);
  });

  test('upstream keys and aliases', () => {
    const c = parseConfig(
      `version = 1
root = "/tmp/r"
daemon_mode = "multiple"
[daemon]
recover_policy = "none"
[cache_manager]
max_size_mb = 512
[log]
level = "debug"
[metrics]
address = "127.0.0.1:9110"`,
      'x.toml',
    );
    expect(c.daemonMode).toBe('dedicated');
    expect(c.daemon.recoverPolicy).toBe('none');
    expect(c.cache).toMatchObject({ dir: '/tmp/r/cache', maxSizeMb: 512 });
    expect(c.log.level).toBe('debug');
    expect(c.metrics.address).toBe('127.0.0.1:9110');
  });

  test('command-line values override the file', () => {
    const c = parseConfig('root = "/tmp/a"\naddress = "/tmp/a.sock"', 'x.toml', { root: '/tmp/b', address: '/tmp/b.sock', logLevel: 'warn', daemonMode: 'none' });
    expect(c).toMatchObject({ root: '/tmp/b', address: '/tmp/b.sock', daemonMode: 'none' });
    expect(c.log.level).toBe('warn');
  });

  test.each([
    ['version = 2', /x\.toml: version: unsupported configuration version 2/],
    ['daemon_mode = "fast"', /x\.toml: daemon_mode: must be one of shared, dedicated, none/],
    ['[daemon]\nrecover_policy = "failover"', /x\.toml: daemon\.recover_policy: "failover" needs fd passing/],
    ['root = 5', /x\.toml: root: must be a string/],
    [`root = "/${'x'.repeat(80)}"`, /x\.toml: root: path longer than 70 bytes/],
    ['[metrics]\naddress = "nope"', /x\.toml: metrics\.address: must be host:port/],
    ['[remote.mirrors_config]\ndir = "/does/not/exist"', /x\.toml: remote\.mirrors_config\.dir: \/does\/not\/exist does not exist/],
    ['version = ', /x\.toml: \(toml\): /],
  ])('%s is rejected with a one-line error', (text, re) => {
    let msg = '';
    try {
      parseConfig(text, 'x.toml');
    } catch (e) {
      msg = (e as Error).message;
    }
    expect(msg).toMatch(re);
    expect(msg).not.toContain('\n');
  });

  test('a missing file is named', () => {
    expect(() => loadConfig('/nonexistent/config.toml')).toThrow('/nonexistent/config.toml: (file): cannot read: ENOENT');
  });
});
