/**
 * config.toml parsing: defaults, upstream keys, CLI overrides, and one-line errors naming the file
 * and key. The shipped config/config.toml must parse.
 */
import { spawn } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';
import * as fs from 'node:fs';
import { parse } from 'smol-toml';
import { DEFAULT_ADDRESS, DEFAULT_ROOT, loadConfig, parseConfig } from '../src/snapshotter/config';
import { REPO_ROOT } from './helpers/fixtures';

describe('config.toml', () => {
  test('defaults', () => {
    const c = parseConfig('', 'x.toml');
    // Upstream's default daemon_mode is "multiple" (one nydusd per image).
    expect(c).toMatchObject({ version: 1, root: DEFAULT_ROOT, address: DEFAULT_ADDRESS, daemonMode: 'dedicated' });
    expect(c.warnings).toEqual([]);
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
    ['[daemon]\nrecover_policy = "sometimes"', /x\.toml: daemon\.recover_policy: must be one of restart, failover, none, got "sometimes"/],
    ['[daemon]\nfs_driver = "ext4"', /x\.toml: daemon\.fs_driver: must be one of fusedev, erofs, fscache/],
    ['[daemon]\nthreads_number = 2000', /x\.toml: daemon\.threads_number: nydusd worker thread number 2000 is too big, max 1024/],
    ['[daemon]\nfailover_policy = "retry"', /x\.toml: daemon\.failover_policy: must be one of none, resend, flush/],
    ['[cache_manager]\ngc_period = "a day"', /x\.toml: cache_manager\.gc_period: must be a duration/],
    ['[remote.auth]\nenable_cri_keychain = true\nenable_kubeconfig_keychain = true', /can't be set at the same time/],
    ['[image]\nvalidate_signature = true', /x\.toml: image\.validate_signature: image signature validation is not implemented/],
    ['[snapshot]\nsync_remove = "yes"', /x\.toml: snapshot\.sync_remove: must be true or false/],
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

  test('recover_policy "failover" with failover_policy is taken in shared mode; dedicated daemons restart, with one warning line', () => {
    const c = parseConfig('daemon_mode = "shared"\n[daemon]\nrecover_policy = "failover"\nfailover_policy = "flush"', 'x.toml');
    expect(c.daemon.recoverPolicy).toBe('failover');
    expect(c.daemon.failoverPolicy).toBe('flush');
    expect(c.warnings).toEqual([]);
    const d = parseConfig('daemon_mode = "dedicated"\n[daemon]\nrecover_policy = "failover"', 'x.toml');
    expect(d.daemon.recoverPolicy).toBe('restart');
    expect(d.daemon.failoverPolicy).toBe('resend');
    expect(d.warnings).toEqual(['x.toml: daemon.recover_policy: "failover" needs daemon_mode "shared" here (one FUSE connection per daemon kept by the snapshotter); dedicated daemons use "restart"']);
  });

  test('cache_dir and log dir "" mean <root>/cache and <root>/logs (upstream), relative paths are under root', () => {
    const c = parseConfig('root = "/tmp/r"\n[cache_manager]\ncache_dir = ""\n[log]\ndir = ""', 'x.toml');
    expect(c.cache.dir).toBe('/tmp/r/cache');
    expect(c.log.dir).toBe('/tmp/r/logs');
    expect(parseConfig('root = "/tmp/r"\n[cache_manager]\ncache_dir = "blobs"', 'x.toml').cache.dir).toBe('/tmp/r/blobs');
    expect(parseConfig('root = "/tmp/r"\n[cache_manager]\ncache_dir = "/srv/c"', 'x.toml').cache.dir).toBe('/srv/c');
  });

  test('metrics.address ":9110" (upstream\'s shipped value: every interface) is accepted', () => {
    expect(parseConfig('[metrics]\naddress = ":9110"', 'x.toml').metrics.address).toBe(':9110');
  });

  test('a key neither upstream nor this snapshotter knows is warned as unknown', () => {
    expect(parseConfig('colour = "blue"\n[daemon]\nspeed = 3', 'x.toml').warnings).toEqual(['x.toml: colour: unknown key, ignored', 'x.toml: daemon.speed: unknown key, ignored']);
  });

  test('upstream command-line flags go through the same checks as the file', () => {
    const c = parseConfig('', 'x.toml', { nydusdPath: '/opt/nydusd', fsDriver: 'nodev' });
    expect(c.daemon.nydusdPath).toBe('/opt/nydusd');
    expect(c.daemon.fsDriver).toBe('fusedev');
    expect(c.warnings).toEqual(['x.toml: daemon.fs_driver = "nodev": not supported, ignored: "nodev" is not supported; rafs instances are served over FUSE ("fusedev")']);
  });

  test('fs_driver "erofs" selects kernel EROFS mode without a warning; "fscache" is one clear error suggesting "erofs"', () => {
    const c = parseConfig('[daemon]\nfs_driver = "erofs"', 'x.toml');
    expect(c.daemon.fsDriver).toBe('erofs');
    expect(c.warnings).toEqual([]);
    expect(parseConfig('', 'x.toml').daemon.fsDriver).toBe('fusedev');
    expect(() => parseConfig('', 'x.toml', { fsDriver: 'fscache' })).toThrow(/^x\.toml: daemon\.fs_driver: "fscache" needs the kernel's EROFS on-demand fscache \(CONFIG_EROFS_FS_ONDEMAND\).*; use fs_driver = "erofs"/);
  });

  test('[snapshot] mount_on_pull (ours) is off by default, taken without a warning, and must be a boolean', () => {
    expect(parseConfig('', 'x.toml').snapshot.mountOnPull).toBe(false);
    const c = parseConfig('[snapshot]\nmount_on_pull = true', 'x.toml');
    expect(c.snapshot.mountOnPull).toBe(true);
    expect(c.warnings).toEqual([]);
    expect(() => parseConfig('[snapshot]\nmount_on_pull = "yes"', 'x.toml')).toThrow(/^x\.toml: snapshot\.mount_on_pull: /);
  });

  test('fs_driver "erofs" with recover_policy "failover" keeps erofs and recovers by restart, with one warning line', () => {
    const c = parseConfig('daemon_mode = "shared"\n[daemon]\nfs_driver = "erofs"\nrecover_policy = "failover"', 'x.toml');
    expect(c.daemon.fsDriver).toBe('erofs');
    expect(c.daemon.recoverPolicy).toBe('restart');
    expect(c.warnings).toEqual(['x.toml: daemon.recover_policy: "failover" applies to FUSE mounts; with fs_driver "erofs" daemons use "restart"']);
  });

  test('a missing file is named', () => {
    expect(() => loadConfig('/nonexistent/config.toml')).toThrow('/nonexistent/config.toml: (file): cannot read: ENOENT');
  });
});

describe('upstream nydus-snapshotter config.toml keys', () => {
  // The file sets every key of upstream's SnapshotterConfig (config/config.go); each one this
  // snapshotter does not honour must come out as one warning naming it, and nothing else may.
  test('a config with every upstream key parses, honoured keys applied, the rest warned by name', () => {
    const file = path.join(REPO_ROOT, 'test', 'fixtures', 'compat', 'snapshotter-all-keys.toml');
    const c = loadConfig(file);
    expect(c).toMatchObject({ root: '/tmp/nydus-compat-root', daemonMode: 'dedicated' });
    expect(c.daemon).toMatchObject({ nydusdPath: '/opt/nydus/bin/nydusd', nydusdConfig: '/etc/nydus/nydusd-config.fusedev.json', recoverPolicy: 'restart' });
    expect(c.cache.dir).toBe('/tmp/nydus-compat-root/cache');
    expect(c.log).toMatchObject({ level: 'debug', logToStdout: true, dir: '/tmp/nydus-compat-root/logs' });
    const keys = c.warnings.map((w) => w.slice(file.length + 2).split(/[ :]/)[0]);
    expect(keys).toEqual([
      'daemon.recover_policy',
      'cleanup_on_close',
      'system.debug.pprof_address',
      'daemon.nydusimage_path',
      'daemon.threads_number',
      'daemon.log_rotation_size',
      'cgroup.enable',
      'log.log_rotation_compress',
      'log.log_rotation_local_time',
      'log.log_rotation_max_age',
      'log.log_rotation_max_backups',
      'log.log_rotation_max_size',
      'metrics.hung_io_interval',
      'metrics.collect_interval',
      'remote.convert_vpc_registry',
      'remote.skip_ssl_verify',
      'remote.auth.enable_kubeconfig_keychain',
      'remote.auth.enable_kubelet_credential_providers',
      'remote.auth.credential_renewal_interval',
      'snapshot.sync_remove',
      'snapshot.enable_overlayfs_volatile',
      'cache_manager.gc_period',
      'experimental.enable_stargz',
      'experimental.enable_referrer_detect',
      'experimental.enable_index_detect',
      'experimental.enable_backend_source',
      'experimental.tarfs.enable_tarfs',
    ]);
    for (const w of c.warnings) expect(w).not.toContain('unknown key');
    expect(c.warnings).toContain(`${file}: snapshot.sync_remove = false: not supported, ignored: a snapshot's resources are always removed at Remove (as with sync_remove = true)`);
  });

  test('the same keys at values matching this snapshotter give no warnings', () => {
    const c = parseConfig(
      `daemon_mode = "shared"
cleanup_on_close = false
[system]
enable = false
[daemon]
fs_driver = "fusedev"
recover_policy = "restart"
threads_number = 0
log_rotation_size = 0
failover_policy = "resend"
[cgroup]
enable = false
memory_limit = ""
[remote]
convert_vpc_registry = false
skip_ssl_verify = false
[remote.auth]
enable_kubeconfig_keychain = false
enable_cri_keychain = false
credential_renewal_interval = "0s"
[snapshot]
enable_nydus_overlayfs = false
enable_kata_volume = false
sync_remove = true
[image]
validate_signature = false
[experimental]
enable_stargz = false
[experimental.tarfs]
enable_tarfs = false`,
      'x.toml',
    );
    expect(c.warnings).toEqual([]);
  });
});

describe('containerd-nydus-grpc started with an upstream config.toml', () => {
  // Spawns bin/containerd-nydus-grpc (needs `npm run build`): the every-key config, moved to a temp
  // root, starts serving and logs each warning once.
  test('it serves its socket and logs one warning line per key it does not honour', async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sn-upstream-'));
    const sock = path.join(tmp, 'grpc.sock');
    const text = fs
      .readFileSync(path.join(REPO_ROOT, 'test', 'fixtures', 'compat', 'snapshotter-all-keys.toml'), 'utf8')
      .replaceAll('/tmp/nydus-compat-root/grpc.sock', sock)
      .replaceAll('/tmp/nydus-compat-root', path.join(tmp, 'root'))
      .replace('/etc/nydus/nydusd-config.fusedev.json', path.join(REPO_ROOT, 'config', 'nydusd.json'))
      .replace('address = "127.0.0.1:9110"', 'address = "127.0.0.1:0"');
    const cfg = path.join(tmp, 'config.toml');
    fs.writeFileSync(cfg, text);
    const proc = spawn(path.join(REPO_ROOT, 'bin', 'containerd-nydus-grpc'), ['--config', cfg], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise((r) => proc.on('exit', r));
    try {
      const warnings = () => err.split('\n').filter((l) => l.includes('"level":40') && l.includes(cfg));
      const expected = loadConfig(cfg).warnings.length;
      // Log lines are written asynchronously: wait for them as well as for the socket.
      for (let i = 0; i < 300 && !(fs.existsSync(sock) && warnings().length >= expected); i++) await new Promise((r) => setTimeout(r, 100));
      expect(fs.existsSync(sock)).toBe(true);
      expect(warnings()).toHaveLength(expected);
      expect(expected).toBeGreaterThan(20);
      expect(err).toContain('daemon.recover_policy: \\"failover\\" needs daemon_mode \\"shared\\" here');
    } finally {
      proc.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000).unref())]);
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  }, 60_000);
});
