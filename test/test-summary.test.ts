/**
 * The suite says what it skipped: run as an unprivileged user, the root-only tests of two test files
 * are skipped and scripts/jest-summary.js (what scripts/test.sh prints) names each with the
 * capability it lacked; run as root, the same files skip nothing. Jest runs inside this test on two
 * small files (about 20 s each).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { REPO_ROOT } from './helpers/fixtures';
import { testWith } from './helpers/capabilities';

jest.setTimeout(5 * 60_000);
const FILES = ['test/nydusd.upstream.test.ts', 'test/format.upstream.test.ts'];

/** Runs Jest on FILES as `user` (undefined: this process's user) and returns the summary's lines. */
function summaryAs(user: string | undefined): string[] {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'summary-'));
  try {
    fs.chmodSync(dir, 0o777); // the unprivileged run writes its result and caches here
    const json = path.join(dir, 'jest.json');
    const jest = [path.join(REPO_ROOT, 'node_modules', '.bin', 'jest'), '--runInBand', '--ci', `--cacheDirectory=${path.join(dir, 'cache')}`, '--json', `--outputFile=${json}`, ...FILES];
    const cmd = user ? ['runuser', '-u', user, '--', ...jest] : jest;
    const r = spawnSync(cmd[0], cmd.slice(1), { cwd: REPO_ROOT, encoding: 'utf8', timeout: 4 * 60_000, env: { ...process.env, HOME: dir } });
    expect(fs.existsSync(json)).toBe(true);
    const s = spawnSync('node', [path.join(REPO_ROOT, 'scripts', 'jest-summary.js'), json], { cwd: REPO_ROOT, encoding: 'utf8' });
    expect(s.status).toBe(0);
    return s.stdout.trim().split('\n').concat(r.status === 0 ? [] : [`jest exit ${r.status}`]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

testWith(['root'], 'as nobody: a skipped count above zero, each skipped suite named with what it needed', () => {
  const lines = summaryAs('nobody');
  const last = lines.filter((l) => /^\d+ passed, \d+ failed, \d+ skipped$/.test(l)).pop();
  expect(last).toBeDefined();
  const [, passed, failed, skipped] = /^(\d+) passed, (\d+) failed, (\d+) skipped$/.exec(last!)!.map(Number);
  expect(failed).toBe(0);
  expect(passed).toBeGreaterThan(0); // the parts that need no privilege still ran
  expect(skipped).toBeGreaterThan(0);
  expect(lines).toContain('skipped:');
  expect(lines).toEqual(expect.arrayContaining([expect.stringMatching(/^ {2}test\/nydusd\.upstream\.test\.ts › .*\[skipped: needs root[^\]]*\] \(\d+ tests?\)$/)]));
  expect(lines).toEqual(expect.arrayContaining([expect.stringMatching(/^ {2}test\/format\.upstream\.test\.ts › .*\[skipped: needs root[^\]]*\] \(1 test\)$/)]));
});

testWith(['root', 'fuse', 'erofs', 'loop'], 'as root on a machine set up by install-deps.sh: 0 skipped', () => {
  const lines = summaryAs(undefined);
  expect(lines).not.toContain('skipped:');
  expect(lines[lines.length - 1]).toMatch(/^\d+ passed, 0 failed, 0 skipped$/);
});
