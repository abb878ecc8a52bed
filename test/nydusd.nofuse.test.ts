/**
 * nydusd on a machine without the FUSE library: `--help`, config errors and an API-only start work,
 * and a mount fails with one line naming the missing library and the Debian package to install.
 * The library is hidden only inside a private mount namespace of the daemon (`unshare -m` with
 * /dev/null bound over libfuse.so.2's file), so nothing else on the machine is affected.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ApiError } from '../src/daemon/client';
import { UPSTREAM_FIXTURES } from './helpers/fixtures';
import { nydusdBin, NydusdHandle, startNydusd } from './helpers/nydusd';
import { describeWith } from './helpers/capabilities';

/** The file libfuse.so.2 resolves to on this machine, or undefined when there is none to hide. */
function libfuseFile(): string | undefined {
  const r = spawnSync('sh', ['-c', 'ldconfig -p | awk \'/libfuse\\.so\\.2 /{print $NF; exit}\''], { encoding: 'utf8' });
  const p = r.stdout.trim();
  return p && fs.existsSync(p) ? fs.realpathSync(p) : undefined;
}

const LIB = libfuseFile();
/** Runs the rest of the command line with libfuse.so.2 unloadable (a private bind mount of /dev/null). */
const HIDE = LIB ? ['unshare', '-m', '--propagation', 'private', 'sh', '-c', `mount --bind /dev/null ${LIB} && exec "$@"`, 'hide-libfuse'] : [];
const ONE_LINE = /^nydusd: error: FUSE transport unavailable: libfuse\.so\.2 cannot be loaded \([^)]*\); install the Debian package libfuse2 \(scripts\/install-deps\.sh does\)$/;

describeWith(['root', 'fuse'], 'nydusd without libfuse.so.2', () => {
  let tmp: string;
  const config = () => ({
    device: { backend: { type: 'localfs', config: { dir: path.join(UPSTREAM_FIXTURES, 'blobs') } }, cache: { type: 'blobcache', config: { work_dir: path.join(tmp, 'cache') } } },
    mode: 'direct',
    digest_validate: true,
  });
  const run = (args: string[]) => spawnSync(HIDE[0], [...HIDE.slice(1), nydusdBin(), ...args], { encoding: 'utf8', timeout: 60_000 });

  beforeAll(() => {
    expect(LIB).toBeDefined(); // the probe said FUSE loads, so the library is there to hide
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nydusd-nofuse-'));
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  test('--help and a config error need no FUSE library', () => {
    const help = run(['--help']);
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/--bootstrap/);
    const cfg = path.join(tmp, 'bad.json');
    fs.writeFileSync(cfg, '{ "device": ');
    const bad = run(['--config', cfg, '--bootstrap', path.join(UPSTREAM_FIXTURES, 'rafs-v6-2.2.boot'), '--mountpoint', path.join(tmp, 'm0')]);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/bad\.json/);
    expect(bad.stderr).not.toMatch(/libfuse|at .*\.js/);
  });

  test('a mount from the command line ends in one line naming libfuse.so.2 and libfuse2', () => {
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
      expect((err as Error).message).toMatch(/libfuse\.so\.2 cannot be loaded .*install the Debian package libfuse2/);
      expect((await d.client.daemonInfo()).state).toBe('RUNNING'); // the daemon stays up
    } finally {
      await d?.cleanup();
    }
  });
});
