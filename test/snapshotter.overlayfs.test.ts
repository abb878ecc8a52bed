/**
 * `[snapshot] enable_nydus_overlayfs = true` with real containerd 1.6, runc and the kernel's
 * overlayfs: container mounts over a nydus image are `fuse.nydus-overlayfs` with an `extraoption`
 * for VM runtimes; containerd runs mount.fuse, which runs ./bin/nydus-overlayfs (found in PATH as
 * `nydus-overlayfs`), which mounts the plain overlay runc needs. A plain OCI image through the
 * same snapshotter keeps its plain overlay mounts.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { describeWith, testWith } from './helpers/capabilities';
import { Containerd, startContainerd } from './helpers/containerd';
import { REPO_ROOT } from './helpers/fixtures';
import { pushImage, skopeoInspect } from './helpers/images';
import { startRegistry, TestRegistry } from './helpers/registry';
import { parseConfig } from '../src/snapshotter/config';
import { chainIds } from '../src/ctr/snapshot-labels';
import { decodeExtraOption, encodeExtraOption, vmMountMode, withoutSecrets } from '../src/snapshotter/kata-mounts';
import { runSnapshotter, RunningSnapshotter } from '../src/snapshotter/run';

const run = promisify(execFile);
const HELPER = path.join(REPO_ROOT, 'bin', 'nydus-overlayfs');
/** Where deploy/ installs the helper (in PATH for containerd, its shims and ctr). */
const INSTALLED = '/usr/local/bin/nydus-overlayfs';

/** `mount -t TYPE SOURCE TARGET -o OPTS` as `ctr snapshots mounts` prints it. */
function parseMountLine(out: string): { type: string; source: string; options: string[] } {
  const m = /^mount -t (\S+) (\S+) \S+ -o (\S+)$/m.exec(out);
  if (!m) throw new Error(`no mount line in ${JSON.stringify(out)}`);
  return { type: m[1], source: m[2], options: m[3].split(',') };
}

describeWith(['root', 'fuse', 'containerd'], 'nydus-overlayfs through containerd and runc', () => {
  let dir: string;
  let reg: TestRegistry | undefined;
  let sn: RunningSnapshotter | undefined;
  let ctd: Containerd | undefined;
  let ociRef: string;
  let nydusRef: string;
  let helperLog: string;
  let installed = false;

  const helperLines = (): string[] => (fs.existsSync(helperLog) ? fs.readFileSync(helperLog, 'utf8').split('\n').filter(Boolean) : []);
  const ctrRemote = (args: string[]) => run(path.join(REPO_ROOT, 'bin', 'ctr-remote'), ['-a', ctd!.address, '-n', ctd!.namespace, ...args], { timeout: 10 * 60_000 });

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'snovl-'));
    reg = await startRegistry();
    ociRef = await pushImage(reg, 'busybox', 'oci/busybox');
    nydusRef = `${reg.host}/nydus/busybox:latest`;
    await run(path.join(REPO_ROOT, 'bin', 'nydusify'), ['convert', '--source', ociRef, '--target', nydusRef, '--plain-http'], { timeout: 10 * 60_000, maxBuffer: 1 << 24 });
    const cfg = parseConfig(
      `daemon_mode = "shared"\n[daemon]\nnydusd_config = "${path.join(REPO_ROOT, 'config', 'nydusd.json')}"\n[snapshot]\nenable_nydus_overlayfs = true\n`,
      'test',
      { root: path.join(dir, 'root'), address: path.join(dir, 'nydus.sock') },
    );
    sn = await runSnapshotter(cfg);
    // mount.fuse (run by containerd, its shim and ctr) finds the helper in PATH. For this test's
    // duration only, the installed name runs ./bin/nydus-overlayfs with its log turned on.
    helperLog = path.join(dir, 'nydus-overlayfs.log');
    if (fs.existsSync(INSTALLED)) throw new Error(`${INSTALLED} exists already; this test will not replace it`);
    fs.writeFileSync(INSTALLED, `#!/bin/sh\nNYDUS_OVERLAYFS_LOG='${helperLog}' exec '${HELPER}' "$@"\n`, { mode: 0o755 });
    installed = true;
    ctd = await startContainerd({ snapshotterSocket: cfg.address });
    await ctrRemote(['images', 'rpull', '--plain-http', nydusRef]);
    await ctd.ctr(['images', 'pull', '--plain-http', '--snapshotter', 'nydus', ociRef]);
  }, 20 * 60_000);

  afterAll(async () => {
    await ctd?.stop();
    if (installed) fs.rmSync(INSTALLED, { force: true });
    await sn?.close(true);
    await reg?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  }, 120_000);

  test('a nydus container mounts through the helper; Mounts carry the image bootstrap, config and snapshot dir', async () => {
    await ctd!.ctr(['run', '-d', '--snapshotter', 'nydus', nydusRef, 'ovl-nydus', '/bin/busybox', 'sleep', '600']);
    try {
      const rootfs = path.join(ctd!.dir, 'state', 'io.containerd.runtime.v2.task', ctd!.namespace, 'ovl-nydus', 'rootfs');
      // The helper did the rootfs mount, and what it mounted is a plain overlay.
      expect(helperLines().some((l) => l.includes(`mounted overlay at ${rootfs} `))).toBe(true);
      const mnt = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((l) => l.split(' ')[4] === rootfs);
      expect(mnt).toMatch(/ - overlay overlay /);
      expect(mnt).not.toContain('extraoption');
      const ex = await ctd!.ctr(['tasks', 'exec', '--exec-id', 'e1', 'ovl-nydus', '/bin/busybox', 'sh', '-c', 'echo via-helper-$((6*7))']);
      expect(ex.stdout.trim()).toBe('via-helper-42');

      const m = parseMountLine((await ctd!.ctr(['snapshots', '--snapshotter', 'nydus', 'mounts', '/tmp/x', 'ovl-nydus'])).stdout);
      expect(m.type).toBe('fuse.nydus-overlayfs');
      expect(m.source).toBe('overlay');
      const extras = m.options.filter((o) => o.startsWith('extraoption='));
      expect(extras).toHaveLength(1);
      const extra = decodeExtraOption(extras[0]);
      const snRoot = path.join(dir, 'root');
      // source: the bootstrap in the nydus bootstrap layer's snapshot.
      expect(extra.source).toMatch(new RegExp(`^${snRoot}/snapshots/\\d+/fs/image/image\\.boot$`));
      expect(fs.statSync(extra.source).size).toBeGreaterThan(1408);
      expect(extra.fs_version).toBe('v6');
      // snapshotdir: the container's own snapshot, whose fs is the overlay's upper dir.
      expect(m.options).toContain(`upperdir=${extra.snapshotdir}/fs`);
      expect(extra.snapshotdir).toMatch(new RegExp(`^${snRoot}/snapshots/\\d+$`));
      // config: the nydusd config the image's instance runs with.
      const config = JSON.parse(extra.config);
      expect(config.device.backend.type).toBe('registry');
      expect(config.device.backend.config).toMatchObject({ host: reg!.host, repo: 'nydus/busybox', scheme: 'http' });
      expect(config.device.cache.config.work_dir).toBe(path.join(snRoot, 'cache'));
    } finally {
      await ctd!.ctr(['tasks', 'kill', '-s', 'SIGKILL', 'ovl-nydus']).catch(() => undefined);
    }
  });

  test('a view of the nydus image is a fuse.nydus-overlayfs mount that util-linux mount performs through the helper', async () => {
    const chain = chainIds((await skopeoInspect(reg!, nydusRef, 'config')).rootfs.diff_ids as string[]);
    await ctd!.ctr(['snapshots', '--snapshotter', 'nydus', 'view', 'ovl-view', chain[chain.length - 1]]);
    const target = fs.mkdtempSync(path.join(dir, 'view-'));
    try {
      const m = parseMountLine((await ctd!.ctr(['snapshots', '--snapshotter', 'nydus', 'mounts', target, 'ovl-view'])).stdout);
      expect(m.type).toBe('fuse.nydus-overlayfs');
      expect(m.options.some((o) => o.startsWith('upperdir='))).toBe(false);
      const extra = decodeExtraOption(m.options.find((o) => o.startsWith('extraoption='))!);
      // The helper mounts overlays only: a read-only view gets its own empty dir as a second lower.
      expect(m.options).toContain(`lowerdir=${path.join(dir, 'root', 'mnt', path.basename(path.dirname(path.dirname(path.dirname(extra.source)))))}:${extra.snapshotdir}/fs`);
      // What `ctr snapshots mounts` prints is a command a user can run.
      await run('mount', ['-t', m.type, m.source, target, '-o', m.options.join(',')]);
      try {
        expect((await fs.promises.stat(path.join(target, 'bin', 'busybox'))).size).toBeGreaterThan(0);
        expect(helperLines().some((l) => l.includes(`mounted overlay at ${target} (2 lower dirs, 1 nydus option(s) dropped)`))).toBe(true);
      } finally {
        await run('umount', [target]);
      }
    } finally {
      await ctd!.ctr(['snapshots', '--snapshotter', 'nydus', 'rm', 'ovl-view']);
    }
  });

  test('a plain OCI image through the same snapshotter keeps plain overlay mounts', async () => {
    const before = helperLines().length;
    const out = await ctd!.ctr(['run', '--rm', '--snapshotter', 'nydus', ociRef, 'ovl-oci-1', '/bin/busybox', 'sh', '-c', 'echo plain-$((6*7))']);
    expect(out.stdout.trim()).toBe('plain-42');
    expect(helperLines()).toHaveLength(before);
    // busybox has one layer: its chain ID is its DiffID.
    const [diffId] = (await skopeoInspect(reg!, ociRef, 'config')).rootfs.diff_ids as string[];
    await ctd!.ctr(['snapshots', '--snapshotter', 'nydus', 'prepare', 'ovl-oci-active', diffId]);
    const m = parseMountLine((await ctd!.ctr(['snapshots', '--snapshotter', 'nydus', 'mounts', '/tmp/x', 'ovl-oci-active'])).stdout);
    expect(m.type).toBe('overlay');
    expect(m.options.some((o) => o.startsWith('extraoption='))).toBe(false);
    await ctd!.ctr(['snapshots', '--snapshotter', 'nydus', 'rm', 'ovl-oci-active']);
  });
});

describe('[snapshot] keys', () => {
  const mode = (toml: string) => vmMountMode(parseConfig(toml, 'test.toml').snapshot);

  test('off by default; enable_nydus_overlayfs names the helper; enable_kata_volume wins, with a warning', () => {
    expect(mode('')).toEqual({});
    expect(mode('[snapshot]\nenable_nydus_overlayfs = true')).toEqual({ nydusOverlayfs: { helper: 'nydus-overlayfs' } });
    expect(mode('[snapshot]\nenable_nydus_overlayfs = true\nnydus_overlayfs_path = "/opt/nydus/bin/nydus-overlayfs"')).toEqual({ nydusOverlayfs: { helper: '/opt/nydus/bin/nydus-overlayfs' } });
    const kata = mode('[snapshot]\nenable_nydus_overlayfs = true\nenable_kata_volume = true');
    expect(kata.nydusOverlayfs).toBeUndefined();
    expect(kata.warning).toMatch(/^enable_kata_volume: .*plain overlay$/);
    expect(() => mode('[snapshot]\nenable_nydus_overlayfs = "yes"')).toThrow('test.toml: snapshot.enable_nydus_overlayfs: must be true or false, got "yes"');
  });
});

describe('extraoption', () => {
  test('carries the nydusd config without credentials, and round-trips', () => {
    const config = {
      device: {
        backend: {
          type: 'registry',
          config: {
            host: 'reg.example:5000', repo: 'app', auth: 'YWxpY2U6cHc=', registry_token: 'tok',
            mirrors: [{ host: 'http://m:65001', headers: { Authorization: 'Basic eA==', 'X-Dragonfly-Registry': 'https://reg.example:5000' } }],
          },
        },
        cache: { type: 'blobcache', config: { work_dir: '/c' } },
      },
      mode: 'direct',
    };
    const clean = withoutSecrets(config) as typeof config;
    expect(JSON.stringify(clean)).not.toMatch(/YWxpY2U6cHc=|tok|Basic eA==/);
    expect(clean.device.backend.config).toEqual({ host: 'reg.example:5000', repo: 'app', mirrors: [{ host: 'http://m:65001', headers: { 'X-Dragonfly-Registry': 'https://reg.example:5000' } }] });
    const extra = { source: '/r/snapshots/2/fs/image/image.boot', config: JSON.stringify(clean), snapshotdir: '/r/snapshots/5', fs_version: 'v6' as const };
    const opt = encodeExtraOption(extra);
    expect(opt).toMatch(/^extraoption=[A-Za-z0-9+/]+=*$/);
    expect(decodeExtraOption(opt)).toEqual(extra);
  });
});

describe('nydus-overlayfs helper on its own', () => {
  const helper = (args: string[]): Promise<{ code: number; stderr: string }> =>
    new Promise((resolve) => execFile(HELPER, args, { timeout: 60_000 }, (err, _out, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? -1) : 0, stderr })));

  test('bad arguments end with one line', async () => {
    for (const [args, msg] of [
      [['tmpfs', '/tmp', '-o', 'lowerdir=/a'], 'invalid filesystem source "tmpfs" for overlayfs'],
      [['overlay', '/tmp', '-o', 'extraoption=e30='], 'empty overlayfs mount options'],
      [['overlay'], 'expected "overlay <target>"'],
    ] as const) {
      const r = await helper([...args]);
      expect(r.code).toBe(1);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toContain(`nydus-overlayfs: ${msg}`);
    }
  });

  testWith(['root'], 'drops nydus options and mounts an overlay whose options exceed one page (relative paths)', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ovlh-'));
    const target = path.join(dir, 'merged');
    try {
      // Long absolute paths with a long common parent: only the relative form fits in a page.
      const snapshots = path.join(dir, 'c'.repeat(200), 'snapshots');
      const lowers: string[] = [];
      for (let i = 0; i < 60; i++) {
        const l = path.join(snapshots, String(i), 'fs');
        fs.mkdirSync(l, { recursive: true });
        fs.writeFileSync(path.join(l, `f${i}`), String(i));
        lowers.push(l);
      }
      for (const d of ['up/fs', 'up/work']) fs.mkdirSync(path.join(snapshots, d), { recursive: true });
      fs.mkdirSync(target);
      const opts = [`lowerdir=${lowers.join(':')}`, `upperdir=${snapshots}/up/fs`, `workdir=${snapshots}/up/work`, 'extraoption=eyJzb3VyY2UiOiIifQ==', 'io.katacontainers.volume=e30=', 'suid'];
      expect(opts.join(',').length).toBeGreaterThan(4096);
      const r = await helper(['overlay', target, '-o', opts.join(',')]);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(fs.readFileSync(path.join(target, 'f0'), 'utf8')).toBe('0');
      expect(fs.readFileSync(path.join(target, 'f59'), 'utf8')).toBe('59');
      const line = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((l) => l.split(' ')[4] === target)!;
      expect(line).toMatch(/ - overlay overlay /);
      expect(line).not.toMatch(/extraoption|katacontainers/);
    } finally {
      await run('umount', [target]).catch(() => undefined);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
