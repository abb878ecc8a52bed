/**
 * The V8 code cache of src/util/code-cache.ts, in child processes running the built dist/ (fresh
 * module caches): a second run compiles from the cache and behaves the same; a module whose file
 * changed (even with its size and mtime restored, as npm's fixed mtimes would leave it) is
 * compiled from source and its new code runs, its old entry replaced; entries of removed files
 * are dropped; data V8 refuses (other flags) and a damaged cache file are ignored and replaced; a failed run writes nothing; a directory that is group- or
 * world-accessible, owned by someone else, a symlink or impossible to create disables the cache
 * and the modules load as before. Module semantics (require, require.resolve, require.main,
 * __filename, __dirname, stack traces) are unchanged under the cache, and a file calling import()
 * is left to Node's loader (a vm.Script on Node 20 cannot import()).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { REPO_ROOT } from './helpers/fixtures';

const CACHE_MODULE = path.join(REPO_ROOT, 'dist', 'util', 'code-cache.js');

interface RunResult {
  installed: boolean;
  value: string;
  stats?: { hits: number; misses: number; rejected: number };
  checks: Record<string, unknown>;
}

let work: string;
let mods: string;
let runner: string;

/** Runs the probe program with the cache in `dir`; `flags` are node's. */
function run(dir: string, opts: { exit?: number; flags?: string[] } = {}): RunResult {
  const r = spawnSync('node', [...(opts.flags ?? []), runner], {
    encoding: 'utf8',
    timeout: 60_000,
    env: { ...process.env, CC_DIR: dir, CC_EXIT: String(opts.exit ?? 0) },
  });
  const line = r.stdout.split('\n').find((l) => l.startsWith('{'));
  if (!line) throw new Error(`probe printed nothing: ${r.stderr}`);
  expect(r.status).toBe(opts.exit ?? 0);
  return JSON.parse(line) as RunResult;
}

const cacheFile = (dir: string): string => path.join(dir, `probe-${process.version}-${process.arch}.bin`);

/** The files a cache file has entries for (its index: a magic line, a 4-byte length, JSON). */
function indexedFiles(dir: string): string[] {
  const buf = fs.readFileSync(cacheFile(dir));
  const start = buf.indexOf('\n') + 1;
  const len = buf.readUInt32LE(start);
  return (JSON.parse(buf.toString('utf8', start + 4, start + 4 + len)) as { file: string }[]).map((e) => e.file);
}

beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'codecache-'));
  mods = path.join(work, 'mods');
  fs.mkdirSync(mods);
  fs.writeFileSync(path.join(mods, 'b.js'), "module.exports = { value: 'B1', fail() { throw new Error('boom'); } };\n");
  fs.writeFileSync(path.join(mods, 'c.mjs'), 'export const esm = 42;\n');
  // A file that calls import() is left to Node's own loader (not counted in the stats).
  fs.writeFileSync(path.join(mods, 'd.js'), "module.exports = () => import('./c.mjs');\n");
  fs.writeFileSync(path.join(mods, 'a.js'), [
    "const b = require('./b');",
    'module.exports = {',
    '  value: b.value,',
    '  checks: async () => {',
    '    let stack = "";',
    '    try { b.fail(); } catch (e) { stack = e.stack; }',
    '    return {',
    "      resolved: require.resolve('./b') === __dirname + '/b.js',",
    "      filename: __filename === __dirname + '/a.js',",
    '      main: require.main === process.mainModule,',
    "      cacheIsShared: require.cache[require.resolve('./b')].exports === b,",
    "      esm: (await require('./d')()).esm,",
    "      stackNamesFile: stack.includes(__dirname + '/b.js:1'),",
    '    };',
    '  },',
    '};',
    '',
  ].join('\n'));
  runner = path.join(work, 'run.js');
  fs.writeFileSync(runner, [
    `const { installCodeCache, codeCacheStats } = require(${JSON.stringify(CACHE_MODULE)});`,
    "const installed = installCodeCache(process.env.CC_DIR, 'probe');",
    `const a = require(${JSON.stringify(path.join(mods, 'a.js'))});`,
    'a.checks().then((checks) => {',
    '  console.log(JSON.stringify({ installed, value: a.value, stats: codeCacheStats(), checks }));',
    '  process.exitCode = Number(process.env.CC_EXIT);',
    '});',
    '',
  ].join('\n'));
});

afterAll(() => {
  fs.rmSync(work, { recursive: true, force: true });
});

const SEMANTICS = { resolved: true, filename: true, main: true, cacheIsShared: true, esm: 42, stackNamesFile: true };

test('a second run compiles from the cache, with the same module semantics; the cache is private', () => {
  const dir = path.join(work, 'cache-a', 'nested');
  const first = run(dir);
  expect(first).toMatchObject({ installed: true, value: 'B1', stats: { hits: 0, misses: 2, rejected: 0 }, checks: SEMANTICS });
  expect(fs.statSync(dir).mode & 0o777).toBe(0o700);
  expect(fs.statSync(cacheFile(dir)).mode & 0o777).toBe(0o600);
  const second = run(dir);
  expect(second).toMatchObject({ installed: true, value: 'B1', stats: { hits: 2, misses: 0, rejected: 0 }, checks: SEMANTICS });
});

test('a changed module is compiled from source even with its size and mtime restored', () => {
  const dir = path.join(work, 'cache-b');
  const b = path.join(mods, 'b.js');
  const text = fs.readFileSync(b, 'utf8');
  const NPM_MTIME = 499162500; // 1985-10-26T08:15:00Z, the mtime npm gives every file it unpacks
  fs.utimesSync(b, NPM_MTIME, NPM_MTIME);
  run(dir);
  expect(run(dir).stats).toEqual({ hits: 2, misses: 0, rejected: 0 });
  const before = fs.statSync(b);
  try {
    fs.writeFileSync(b, text.replace("'B1'", "'B2'")); // same length
    fs.utimesSync(b, NPM_MTIME, NPM_MTIME);
    expect(fs.statSync(b).size).toBe(before.size);
    expect(fs.statSync(b).mtimeMs).toBe(before.mtimeMs);
    const changed = run(dir);
    expect(changed).toMatchObject({ value: 'B2', stats: { hits: 1, misses: 1, rejected: 0 } });
    expect(run(dir)).toMatchObject({ value: 'B2', stats: { hits: 2, misses: 0, rejected: 0 } });
    // The rewritten file holds one entry per module: the stale one was replaced, not kept beside.
    expect(indexedFiles(dir).filter((f) => f === path.join(mods, 'b.js'))).toHaveLength(1);
  } finally {
    fs.writeFileSync(b, text);
  }
});

test('entries of files that are gone are dropped when the cache is written again', () => {
  const dir = path.join(work, 'cache-gone');
  const extra = path.join(mods, 'extra.js');
  fs.writeFileSync(extra, 'module.exports = 1;\n');
  const withExtra = path.join(work, 'run-extra.js');
  fs.writeFileSync(withExtra, [
    `const { installCodeCache } = require(${JSON.stringify(CACHE_MODULE)});`,
    "installCodeCache(process.env.CC_DIR, 'probe');",
    `require(${JSON.stringify(extra)});`,
    '',
  ].join('\n'));
  try {
    expect(spawnSync('node', [withExtra], { env: { ...process.env, CC_DIR: dir }, timeout: 60_000 }).status).toBe(0);
    expect(indexedFiles(dir)).toContain(extra);
  } finally {
    fs.rmSync(extra);
  }
  run(dir); // a and b are new: the file is written again, without the entry of extra.js
  expect(indexedFiles(dir).sort()).toEqual([path.join(mods, 'a.js'), path.join(mods, 'b.js')]);
  expect(run(dir).stats).toEqual({ hits: 2, misses: 0, rejected: 0 });
});

test('data V8 refuses and a damaged cache file are ignored and replaced; a failed run writes nothing', () => {
  const dir = path.join(work, 'cache-c');
  expect(run(dir, { exit: 3 }).stats).toEqual({ hits: 0, misses: 2, rejected: 0 });
  expect(fs.existsSync(cacheFile(dir))).toBe(false);
  run(dir);
  // Other V8 flags: V8 rejects the data (its flag hash differs); the modules still run right.
  const otherFlags = run(dir, { flags: ['--no-opt'] });
  expect(otherFlags).toMatchObject({ value: 'B1', stats: { hits: 0, misses: 0, rejected: 2 }, checks: SEMANTICS });
  expect(run(dir, { flags: ['--no-opt'] }).stats).toEqual({ hits: 2, misses: 0, rejected: 0 });
  for (const junk of [Buffer.from('not a cache'), Buffer.alloc(0), Buffer.concat([fs.readFileSync(cacheFile(dir)).subarray(0, 40)])]) {
    fs.writeFileSync(cacheFile(dir), junk, { mode: 0o600 });
    expect(run(dir)).toMatchObject({ value: 'B1', stats: { hits: 0, misses: 2, rejected: 0 }, checks: SEMANTICS });
    expect(run(dir).stats).toEqual({ hits: 2, misses: 0, rejected: 0 });
  }
});

test('a directory others can reach, owned by someone else, a symlink or impossible to create disables the cache', () => {
  const open = path.join(work, 'cache-open');
  fs.mkdirSync(open, { mode: 0o755 });
  fs.chmodSync(open, 0o755);
  const foreign = path.join(work, 'cache-foreign');
  fs.mkdirSync(foreign, { mode: 0o700 });
  const uid = process.geteuid!();
  if (uid === 0) fs.chownSync(foreign, 65534, 65534);
  const target = path.join(work, 'cache-target');
  fs.mkdirSync(target, { mode: 0o700 });
  const link = path.join(work, 'cache-link');
  fs.symlinkSync(target, link);
  const blocker = path.join(work, 'a-file');
  fs.writeFileSync(blocker, '');
  const cases = [open, link, path.join(blocker, 'cache'), ...(uid === 0 ? [foreign] : [])];
  for (const dir of cases) {
    const r = run(dir);
    expect([dir, r.installed, r.value, r.stats]).toEqual([dir, false, 'B1', undefined]);
    expect(r.checks).toEqual(SEMANTICS);
  }
  for (const dir of [open, target, foreign]) expect(fs.readdirSync(dir)).toEqual([]);
});
