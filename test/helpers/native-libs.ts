/**
 * Which system libraries the native addons in node_modules load, and whether a fresh Debian machine
 * gets them from `scripts/install-deps.sh`.
 *
 * Contract: `nativeLibProblems(installScript)` walks every `*.node` file under node_modules that is
 * an ELF object for this machine, resolves its shared libraries with `ldd`, and returns one line per
 * problem: a library `ldd` cannot find, or a library whose Debian package (`dpkg -S`) is neither in
 * the list the script prints with `--print-packages` nor part of the minimal Debian system (the
 * packages that are Essential or of priority required, and everything they depend on). An empty
 * list means a fresh machine that ran the script can load every addon.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 << 20 });
}

/** Every `*.node` file below `dir`, links not followed. */
export function findAddons(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile() && e.name.endsWith('.node')) out.push(p);
    }
  };
  walk(dir);
  return out.sort();
}

/** ldd's view of one addon: library name to resolved path, or null when not found. Empty for files
 * that are not dynamic objects of this machine (prebuilds for other platforms). */
export function sharedLibs(addon: string): Map<string, string | null> {
  let text: string;
  try {
    text = run('ldd', [addon]);
  } catch {
    return new Map(); // "not a dynamic executable": another platform's prebuild
  }
  const libs = new Map<string, string | null>();
  for (const line of text.split('\n')) {
    const m = /^\s*(\S+)\s+=>\s+(not found|\/\S+)/.exec(line);
    if (m) libs.set(m[1], m[2] === 'not found' ? null : m[2]);
  }
  return libs;
}

const owners = new Map<string, string | undefined>();

/** The Debian package that owns `file` (or the file its symlinks lead to), or undefined. Cached:
 * dpkg -S reads the whole file list, and the addons share most of their libraries. */
export function owningPackage(file: string): string | undefined {
  if (owners.has(file)) return owners.get(file);
  let owner: string | undefined;
  // dpkg knows a file by the path its package shipped; on merged-/usr systems that may be the
  // /lib or the /usr/lib spelling of the resolved file, and ldconfig's soname links belong to none.
  const real = fs.realpathSync(file);
  const named = path.join(path.dirname(file), path.basename(real));
  const spellings = [file, real, named].flatMap((p) => [p, p.startsWith('/usr/') ? p.slice(4) : `/usr${p}`]);
  for (const p of [...new Set(spellings)]) {
    try {
      owner = run('dpkg', ['-S', p]).split('\n')[0].split(':')[0];
      break;
    } catch {
      // not this spelling
    }
  }
  owners.set(file, owner);
  return owner;
}

/** Installed packages that a minimal Debian system has: Essential or priority required, closed over
 * Depends and Pre-Depends. */
export function minimalSystemPackages(): Set<string> {
  const rows = run('dpkg-query', ['-W', '-f=${Package}\t${Essential}\t${Priority}\t${Pre-Depends}, ${Depends}\n']);
  const deps = new Map<string, string[]>();
  const queue: string[] = [];
  for (const row of rows.split('\n')) {
    if (!row) continue;
    const [pkg, essential, priority, rel] = row.split('\t');
    const names = rel
      .split(/[,|]/)
      .map((s) => s.trim().split(/[\s(:]/)[0])
      .filter(Boolean);
    deps.set(pkg, names);
    if (essential === 'yes' || priority === 'required') queue.push(pkg);
  }
  const seen = new Set<string>();
  while (queue.length) {
    const p = queue.pop()!;
    if (seen.has(p) || !deps.has(p)) continue;
    seen.add(p);
    queue.push(...deps.get(p)!);
  }
  return seen;
}

export function installedByScript(installScript: string): Set<string> {
  return new Set(run('bash', [installScript, '--print-packages']).split('\n').filter(Boolean));
}

export function nativeLibProblems(installScript: string, nodeModules: string): string[] {
  const wanted = installedByScript(installScript);
  const base = minimalSystemPackages();
  const problems: string[] = [];
  for (const addon of findAddons(nodeModules)) {
    const rel = path.relative(nodeModules, addon);
    for (const [lib, where] of sharedLibs(addon)) {
      if (where === null) {
        problems.push(`${rel} loads ${lib}, which is not installed on this machine`);
        continue;
      }
      if (path.resolve(where).startsWith(path.resolve(nodeModules) + path.sep)) continue; // shipped with the module
      const pkg = owningPackage(where);
      if (pkg === undefined) {
        problems.push(`${rel} loads ${lib} from ${where}, which no Debian package provides (installed by hand?)`);
        continue;
      }
      if (wanted.has(pkg) || base.has(pkg)) continue;
      problems.push(`${rel} loads ${lib} from the Debian package ${pkg}, which ${path.basename(installScript)} does not install`);
    }
  }
  return problems;
}
