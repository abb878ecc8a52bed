/**
 * A fresh machine loads every native addon: each system library an addon in node_modules links
 * must come from a package scripts/install-deps.sh installs or from the minimal Debian system.
 * This fails on a machine that happens to have the library too (libfuse2 slipped through that way).
 * Needs ldd and dpkg, nothing else (no root).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { REPO_ROOT } from './helpers/fixtures';
import { installedByScript, minimalSystemPackages, nativeLibProblems } from './helpers/native-libs';

const INSTALL = path.join(REPO_ROOT, 'scripts', 'install-deps.sh');
const NODE_MODULES = path.join(REPO_ROOT, 'node_modules');

test('every library a native addon loads is installed by install-deps.sh or the base system', () => {
  expect(nativeLibProblems(INSTALL, NODE_MODULES)).toEqual([]);
});

test('the minimal system is libc and friends, not libfuse2', () => {
  const base = minimalSystemPackages();
  expect(base.has('libc6')).toBe(true);
  expect(base.has('libfuse2')).toBe(false);
});

test('a copy of install-deps.sh without libfuse2 is caught, naming the library and the addon', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'install-deps-'));
  try {
    const scratch = path.join(dir, 'install-deps.sh');
    const text = fs.readFileSync(INSTALL, 'utf8');
    const without = text.split('\n').filter((l) => l.trim() !== 'libfuse2').join('\n');
    expect(without).not.toBe(text); // the line was there to remove
    fs.writeFileSync(scratch, without);
    expect(installedByScript(scratch).has('libfuse2')).toBe(false);
    const problems = nativeLibProblems(scratch, NODE_MODULES);
    expect(problems).toEqual(
      expect.arrayContaining([expect.stringMatching(/fuse-native\/.*\.node loads libfuse\.so\.2 from the Debian package libfuse2, which install-deps\.sh does not install/)]),
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
