/**
 * nydusctl with upstream's verbs (info, set log-level, metrics backend|cache|fsstats [-I], mount,
 * umount, -r) and ours (backend, cache, files, pattern, --json, --id), against a real shared nydusd
 * serving the upstream v6 fixture from a localfs backend.
 */
import { execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { UPSTREAM_FIXTURES } from './helpers/fixtures';
import { nydusdBin, NydusdHandle, startNydusd } from './helpers/nydusd';
import { describeWith } from './helpers/capabilities';

const run = promisify(execFile);

describeWith(['root', 'fuse'], 'nydusctl', () => {
  let tmp: string;
  let d: NydusdHandle;
  let mnt: string;
  const ctl = (...args: string[]) => run(nydusdBin('nydusctl'), ['-S', d.apisock, ...args], { encoding: 'utf8', timeout: 30_000 });
  const fails = (...args: string[]) => ctl(...args).then(() => ({ code: 0, stderr: '' }), (e: { code: number; stderr: string }) => e);

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nydusctl-'));
    mnt = path.join(tmp, 'mnt');
    d = await startNydusd({ dir: path.join(tmp, 'd') });
    d.mountpoints.add(mnt);
  });
  afterAll(async () => {
    await d?.cleanup();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  test('mount -s -c -m -t rafs mounts through the API; the tree reads', async () => {
    const cfg = path.join(tmp, 'instance.json');
    fs.writeFileSync(cfg, JSON.stringify({ device: { backend: { type: 'localfs', config: { dir: path.join(UPSTREAM_FIXTURES, 'blobs') } }, cache: { type: 'blobcache', config: { work_dir: path.join(tmp, 'cache') } } }, digest_validate: true }));
    await ctl('mount', '-s', path.join(UPSTREAM_FIXTURES, 'rafs-v6-2.2.boot'), '-c', cfg, '-m', mnt, '-t', 'rafs');
    expect(fs.readdirSync(mnt).sort()).toEqual(['lib.rs', 'sync_io.rs']);
    expect(fs.readFileSync(path.join(mnt, 'lib.rs'), 'utf8')).toHaveLength(16931);
    const bad = await fails('mount', '-s', 'x', '-c', cfg, '-m', path.join(tmp, 'm2'), '-t', 'passthrough_fs');
    expect(bad).toMatchObject({ code: 1, stderr: 'nydusctl: error: mount: --type passthrough_fs is not supported (only rafs)\n' });
  });

  test('info (human and -r), metrics fsstats|backend|cache, our per-file verbs', async () => {
    expect((await ctl('info')).stdout).toContain('State:   RUNNING');
    const raw = JSON.parse((await ctl('-r', 'info')).stdout);
    expect(Object.keys(raw.backend_collection)).toEqual([mnt]);
    expect(JSON.parse((await ctl('--raw', 'metrics', 'fsstats')).stdout).data_read).toBeGreaterThan(0);
    expect(JSON.parse((await ctl('metrics', 'backend', '--raw')).stdout).read_amount_total).toBeGreaterThan(0);
    expect((await ctl('metrics', 'cache')).stdout).toMatch(/^Hits\/misses:/m);
    expect((await ctl('metrics')).stdout).toMatch(/^Reads:\s+\d+/m);
    expect((await ctl('files', '--id', mnt)).stdout).toMatch(/\/lib\.rs/);
    expect(JSON.parse((await ctl('backend', '--json', '--id', mnt)).stdout).sources.localfs.bytes).toBeGreaterThan(0);
    const bad = await fails('metrics', 'nonsense');
    expect(bad).toMatchObject({ code: 1, stderr: 'nydusctl: error: metrics: unknown category "nonsense" (backend, cache, fsstats)\n' });
  });

  test('set log-level changes the daemon level; a bad value is one line', async () => {
    await ctl('set', 'log-level', 'debug');
    fs.readFileSync(path.join(mnt, 'sync_io.rs')); // a read the debug level logs
    expect((await fails('set', 'log-level', 'loud')).stderr).toBe('nydusctl: error: set log-level: expected trace, debug, info, warn, error, got "loud"\n');
    expect((await fails('set', 'colour', 'blue')).stderr).toBe('nydusctl: error: set: unknown kind "colour" (log-level)\n');
    await ctl('set', 'log-level', 'info');
  });

  test('metrics backend -I 1 prints a sample every second until interrupted', async () => {
    const p = spawn(nydusdBin('nydusctl'), ['-S', d.apisock, 'metrics', 'backend', '-I', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (b: Buffer) => (out += b.toString()));
    const deadline = Date.now() + 20_000;
    while ((out.match(/Backend read bandwidth/g) ?? []).length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    p.kill('SIGINT');
    await new Promise((r) => p.once('exit', r));
    expect((out.match(/Backend read bandwidth: +\d+ KB\/s/g) ?? []).length).toBeGreaterThanOrEqual(2);
  });

  test('umount -m removes the instance', async () => {
    await ctl('umount', '-m', mnt);
    expect(Object.keys(JSON.parse((await ctl('-r', 'info')).stdout).backend_collection)).toEqual([]);
  });
});
