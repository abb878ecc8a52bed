/**
 * A fresh machine loads every native addon: each system library an addon in node_modules links
 * must come from a package scripts/install-deps.sh installs or from the minimal Debian system.
 * This fails on a machine that happens to have the library too (libfuse2 slipped through that way).
 * Needs ldd and dpkg, nothing else (no root); the checker's own test also needs gcc and libfuse3.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { REPO_ROOT } from './helpers/fixtures';
import { installedByScript, minimalSystemPackages, nativeLibProblems } from './helpers/native-libs';

const INSTALL = path.join(REPO_ROOT, 'scripts', 'install-deps.sh');
const NODE_MODULES = path.join(REPO_ROOT, 'node_modules');
const LIBFUSE3 = '/usr/lib/x86_64-linux-gnu/libfuse3.so.3';

test('every library a native addon loads is installed by install-deps.sh or the base system', () => {
  expect(nativeLibProblems(INSTALL, NODE_MODULES)).toEqual([]);
});

test('the minimal system is libc and friends, not a FUSE library', () => {
  const base = minimalSystemPackages();
  expect(base.has('libc6')).toBe(true);
  expect(base.has('libfuse3-3')).toBe(false);
});

// An addon that links a library outside the base system (libfuse3, from the fuse3 package's
// dependency libfuse3-3): the checker names it unless the install script lists that package.
(fs.existsSync(LIBFUSE3) ? test : test.skip)('an addon linking a library the script does not install is named, with library and package', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'native-libs-'));
  try {
    const modules = path.join(dir, 'node_modules');
    fs.mkdirSync(path.join(modules, 'fake-addon'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'addon.c'), 'int fuse_version(void);\nint probe(void) { return fuse_version(); }\n');
    execFileSync('gcc', ['-shared', '-fPIC', '-o', path.join(modules, 'fake-addon', 'binding.node'), path.join(dir, 'addon.c'), LIBFUSE3]);
    const text = fs.readFileSync(INSTALL, 'utf8');
    const withIt = path.join(dir, 'with.sh');
    fs.writeFileSync(withIt, text.replace(/^PKGS=\(\n/m, 'PKGS=(\n  libfuse3-3\n'));
    expect(installedByScript(withIt).has('libfuse3-3')).toBe(true);
    expect(nativeLibProblems(withIt, modules)).toEqual([]);
    expect(installedByScript(INSTALL).has('libfuse3-3')).toBe(false);
    expect(nativeLibProblems(INSTALL, modules)).toEqual([
      'fake-addon/binding.node loads libfuse3.so.3 from the Debian package libfuse3-3, which install-deps.sh does not install',
    ]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
