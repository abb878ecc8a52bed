/**
 * The shared launcher bin/_run finds dist/cli/<tool>.js without forking helpers on the usual path
 * (it is on the path of every cold start, issue 18), however the tool is reached: by its path, by a
 * relative path from inside bin/, through PATH, and through a symlink in another directory (then
 * it resolves the link with readlink). A tool missing from dist/ ends with one line. For nydusd it
 * sets glibc's malloc settings for chunk buffers (docs/nydusd.md "Memory for chunk buffers"),
 * keeping whatever the caller already set.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { REPO_ROOT } from './helpers/fixtures';
import { startNydusd } from './helpers/nydusd';

const BIN = path.join(REPO_ROOT, 'bin');

function version(cmd: string, opts: { cwd?: string; path?: string } = {}): string {
  const r = spawnSync(cmd, ['--version'], { cwd: opts.cwd, encoding: 'utf8', timeout: 60_000, env: { ...process.env, PATH: opts.path ?? process.env.PATH } });
  expect([cmd, r.stderr]).toEqual([cmd, '']);
  return r.stdout.trim();
}

test('bin/ctr-remote runs by path, from inside bin/, through PATH and through a symlink elsewhere', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'launcher-'));
  try {
    fs.symlinkSync(path.join(BIN, 'ctr-remote'), path.join(dir, 'ctr-remote'));
    fs.symlinkSync(path.relative(dir, path.join(BIN, '_run')), path.join(dir, 'nydusctl'));
    expect(version(path.join(BIN, 'ctr-remote'))).toBe('0.1.0');
    expect(version('./ctr-remote', { cwd: BIN })).toBe('0.1.0');
    expect(version('../bin/ctr-remote', { cwd: BIN })).toBe('0.1.0');
    expect(version('ctr-remote', { path: `${BIN}:${process.env.PATH}` })).toBe('0.1.0');
    expect(version(path.join(dir, 'ctr-remote'))).toBe('0.1.0');
    expect(version('./ctr-remote', { cwd: dir })).toBe('0.1.0');
    expect(version('ctr-remote', { path: `${dir}:${process.env.PATH}` })).toBe('0.1.0');
    const ctl = spawnSync(path.join(dir, 'nydusctl'), ['--help'], { encoding: 'utf8', timeout: 60_000 });
    expect(ctl.stdout).toMatch(/^Usage: nydusctl/);
    fs.symlinkSync(path.join(BIN, '_run'), path.join(dir, 'no-such-tool'));
    const missing = spawnSync(path.join(dir, 'no-such-tool'), [], { encoding: 'utf8', timeout: 60_000 });
    expect(missing.status).toBe(127);
    expect(missing.stderr).toBe(`no-such-tool: ${REPO_ROOT}/dist/cli/no-such-tool.js is missing; run 'npm run build' in ${REPO_ROOT} first\n`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/** The environment of a running nydusd started through bin/nydusd with `env` changes. */
async function daemonEnv(env: Record<string, string | undefined>): Promise<Map<string, string>> {
  const d = await startNydusd({ env });
  try {
    const raw = fs.readFileSync(`/proc/${d.proc.pid}/environ`, 'utf8');
    return new Map(raw.split('\0').filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
  } finally {
    await d.cleanup();
  }
}

test("bin/nydusd gives the daemon its malloc settings and keeps the caller's own", async () => {
  const unset = { MALLOC_MMAP_THRESHOLD_: undefined, MALLOC_TRIM_THRESHOLD_: undefined, GLIBC_TUNABLES: undefined, MALLOC_ARENA_MAX: undefined };
  const plain = await daemonEnv(unset);
  expect([plain.get('MALLOC_MMAP_THRESHOLD_'), plain.get('MALLOC_TRIM_THRESHOLD_'), plain.get('GLIBC_TUNABLES'), plain.get('MALLOC_ARENA_MAX')]).toEqual([
    String(32 << 20),
    String(64 << 20),
    'glibc.malloc.hugetlb=1',
    '2',
  ]);
  // The caller's own values stay. (Another tunable of the caller's gets ours appended after a ':',
  // but /proc shows only the first tunable of a list: glibc cuts the original string in place as
  // it parses it.)
  const other = await daemonEnv({ ...unset, GLIBC_TUNABLES: 'glibc.malloc.tcache_count=0', MALLOC_TRIM_THRESHOLD_: '1048576' });
  expect([other.get('GLIBC_TUNABLES'), other.get('MALLOC_TRIM_THRESHOLD_'), other.get('MALLOC_MMAP_THRESHOLD_')]).toEqual(['glibc.malloc.tcache_count=0', '1048576', String(32 << 20)]);
  // The caller's own choice of huge pages stays as it is.
  const own = await daemonEnv({ ...unset, GLIBC_TUNABLES: 'glibc.malloc.hugetlb=0' });
  expect(own.get('GLIBC_TUNABLES')).toBe('glibc.malloc.hugetlb=0');
}, 120_000);
