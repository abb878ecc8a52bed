/**
 * nydusd needs no FUSE library, only the kernel's /dev/fuse:
 *  - it mounts and reads an image with no libfuse mapped into its process;
 *  - with /dev/fuse not the FUSE device, `--help`, config errors and an API-only start work, and a
 *    mount fails with one line naming /dev/fuse and what to do.
 * The broken /dev/fuse is arranged inside a private mount namespace of the daemon (`unshare -m`
 * with /dev/null bound over it), so nothing else on the machine is affected.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ApiError } from '../src/daemon/client';
import { UPSTREAM_FIXTURES } from './helpers/fixtures';
import { forceUnmount, nydusdBin, NydusdHandle, startNydusd } from './helpers/nydusd';
import { describeWith } from './helpers/capabilities';

/** Runs the rest of the command line with /dev/null bound over `file` in a private mount namespace. */
const hiding = (file: string) => ['unshare', '-m', '--propagation', 'private', 'sh', '-c', `mount --bind /dev/null ${file} && exec "$@"`, 'hide'];
const HIDE = hiding('/dev/fuse');
const ONE_LINE = /^nydusd: error: FUSE transport unavailable: \/dev\/fuse is not the FUSE device \(character device 1:3, want 10:229\); load the fuse kernel module \(modprobe fuse\) or give the container \/dev\/fuse$/;

describeWith(['root', 'fuse'], 'nydusd without a FUSE library', () => {
  test('mounts and reads an image with no libfuse mapped into the process', async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nydusd-nolib-'));
    const mnt = path.join(tmp, 'mnt');
    let d: NydusdHandle | undefined;
    try {
      const config = { device: { backend: { type: 'localfs', config: { dir: path.join(UPSTREAM_FIXTURES, 'blobs') } }, cache: { type: 'blobcache', config: { work_dir: path.join(tmp, 'cache') } } }, mode: 'direct' };
      d = await startNydusd({ dir: path.join(tmp, 'd'), config, bootstrap: path.join(UPSTREAM_FIXTURES, 'rafs-v6-2.2.boot'), mountpoint: mnt });
      // bin/nydusd execs node, so the spawned pid is the daemon itself.
      const maps = fs.readFileSync(`/proc/${d.proc.pid}/maps`, 'utf8');
      expect(maps).toMatch(/\/node\b|node$/m); // the right process
      expect(maps.split('\n').filter((l) => /libfuse/.test(l))).toEqual([]);
      expect(fs.readdirSync(mnt).sort()).toEqual(['lib.rs', 'sync_io.rs']);
      expect(fs.readFileSync(path.join(mnt, 'lib.rs'), 'utf8')).toHaveLength(16931);
    } finally {
      await d?.cleanup();
      forceUnmount(mnt);
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});

describeWith(['root', 'fuse'], 'nydusd without a usable /dev/fuse', () => {
  let tmp: string;
  const config = () => ({
    device: { backend: { type: 'localfs', config: { dir: path.join(UPSTREAM_FIXTURES, 'blobs') } }, cache: { type: 'blobcache', config: { work_dir: path.join(tmp, 'cache') } } },
    mode: 'direct',
    digest_validate: true,
  });
  const run = (args: string[]) => spawnSync(HIDE[0], [...HIDE.slice(1), nydusdBin(), ...args], { encoding: 'utf8', timeout: 60_000 });

  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nydusd-nofuse-'));
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  test('--help and a config error need no FUSE device', () => {
    const help = run(['--help']);
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/--bootstrap/);
    const cfg = path.join(tmp, 'bad.json');
    fs.writeFileSync(cfg, '{ "device": ');
    const bad = run(['--config', cfg, '--bootstrap', path.join(UPSTREAM_FIXTURES, 'rafs-v6-2.2.boot'), '--mountpoint', path.join(tmp, 'm0')]);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/bad\.json/);
    expect(bad.stderr).not.toMatch(/dev\/fuse|at .*\.js/);
  });

  test('a mount from the command line ends in one line naming /dev/fuse and the fix', () => {
    const cfg = path.join(tmp, 'ok.json');
    fs.writeFileSync(cfg, JSON.stringify(config()));
    const r = run(['--config', cfg, '--bootstrap', path.join(UPSTREAM_FIXTURES, 'rafs-v6-2.2.boot'), '--mountpoint', path.join(tmp, 'm1'), '--apisock', path.join(tmp, 'cli.sock')]);
    expect(r.status).toBe(1);
    const errors = r.stderr.split('\n').filter((l) => l.startsWith('nydusd: error:'));
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(ONE_LINE);
    expect(r.stderr).not.toMatch(/^\s+at /m); // no stack trace
  });

  test('an API-only daemon runs; a mount through the API answers with the same line', async () => {
    let d: NydusdHandle | undefined;
    try {
      d = await startNydusd({ dir: path.join(tmp, 'api'), wrap: HIDE });
      expect((await d.client.daemonInfo()).state).toBe('RUNNING');
      const err = await d.client.mount(path.join(tmp, 'm2'), path.join(UPSTREAM_FIXTURES, 'rafs-v6-2.2.boot'), config()).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(ApiError);
      expect((err as Error).message).toMatch(/\/dev\/fuse is not the FUSE device .*modprobe fuse/);
      expect((await d.client.daemonInfo()).state).toBe('RUNNING'); // the daemon stays up
    } finally {
      await d?.cleanup();
    }
  });
});
