/**
 * `npm ci` on a fresh machine refuses a lock file that misses a package another locked package
 * names, optional ones included ("Missing: X from lock file"): a napi-rs addon's per-platform
 * binaries are optional dependencies, and a version published for only some platforms leaves the
 * others out of the lock. The machine the lock was made on installs fine; a fresh clone does not.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { REPO_ROOT } from './helpers/fixtures';

interface LockedPackage {
  version?: string;
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
}

/** Where npm would find `name` for the package at `from` (node_modules lookup upwards), or undefined. */
function resolve(packages: Record<string, LockedPackage>, from: string, name: string): string | undefined {
  let dir = from;
  for (;;) {
    const key = dir === '' ? `node_modules/${name}` : `${dir}/node_modules/${name}`;
    if (packages[key]) return key;
    if (dir === '') return undefined;
    const i = dir.lastIndexOf('/node_modules/');
    dir = i < 0 ? '' : dir.slice(0, i);
  }
}

test('package-lock.json holds every dependency, optional ones included, that a locked package names', () => {
  const lock = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, LockedPackage> };
  const missing: string[] = [];
  for (const [at, pkg] of Object.entries(lock.packages)) {
    for (const name of Object.keys({ ...pkg.dependencies, ...pkg.optionalDependencies })) {
      if (!resolve(lock.packages, at, name)) missing.push(`${name} (named by ${at || 'package.json'})`);
    }
  }
  expect(missing).toEqual([]);
});
