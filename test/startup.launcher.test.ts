/**
 * The shared launcher bin/_run finds dist/cli/<tool>.js without forking helpers on the usual path
 * (it is on the path of every cold start, issue 18), however the tool is reached: by its path, by a
 * relative path from inside bin/, through PATH, and through a symlink in another directory (then
 * it resolves the link with readlink). A tool missing from dist/ ends with one line.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { REPO_ROOT } from './helpers/fixtures';

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
