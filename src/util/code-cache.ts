/**
 * A V8 code cache for the CommonJS modules a short-lived command loads (Node 20 has no
 * `module.enableCompileCache`): each module compiled after `installCodeCache` is compiled with the
 * bytecode V8 produced for it in an earlier run, instead of being parsed and compiled again.
 *
 * Contract:
 *  - The cache is one file, `<dir>/<name>-<node version>-<arch>.bin`, written at exit (atomically,
 *    mode 0600) by a run that ends with status 0 and compiled a module the file had no usable entry
 *    for. It holds V8's cached data as of exit, so it includes the functions compiled while the
 *    command ran, not only the modules' top levels. Entries of files that are gone or changed are
 *    dropped when it is written.
 *  - An entry is used only for the same path whose size, mtime and ctime (a file written again
 *    always gets a new ctime, even when a tool such as npm fixes its mtime) are unchanged; V8
 *    itself rejects data of another V8 version or flags. A rejected or stale entry is compiled
 *    from source as usual and replaced.
 *  - `dir` must be a directory (created 0700 if missing) that is not a symlink, is owned by this
 *    process's user and gives group and others no access: bytecode found there is run without
 *    further checks, so nobody else may be able to write it. Otherwise, as on any error reading
 *    or writing the cache, modules load from source as before and nothing is written.
 *  - Behaviour of the loaded code is unchanged: the same wrapper parameters, `require` and module
 *    objects as Node's loader. Files that may call `import()` (a vm.Script on Node 20 cannot),
 *    files starting with `#!` and runs under the inspector or a policy are left to Node's loader.
 */
import * as fs from 'node:fs';
import Module from 'node:module';
import * as path from 'node:path';
import * as vm from 'node:vm';

/** How the modules of this run were compiled. */
export interface CodeCacheStats {
  /** Compiled from cached data V8 accepted. */
  hits: number;
  /** No entry for the file, or the file changed since. */
  misses: number;
  /** An entry V8 refused (other V8 version or flags, damaged data). */
  rejected: number;
}

interface Entry {
  file: string;
  key: string;
  data: Buffer;
}

interface Compiled {
  file: string;
  key: string;
  script: vm.Script;
  /** The cache's bytes were accepted: they can be written back as they are. */
  reused?: Buffer;
}

const MAGIC = 'nydus-ts code cache 1\n';
/** Anything that looks like `import(` (in code, a string or a comment: then the file is just not cached). */
const DYNAMIC_IMPORT = /\bimport\s*\(/;

/** The entry's key: what must not change for its bytecode to stay valid. */
function fileKey(st: fs.Stats): string {
  return `${st.size}:${st.mtimeMs}:${st.ctimeMs}:${st.ino}`;
}

/** The directory, if it is safe to run bytecode from it (created 0700 when missing). */
function safeDir(dir: string): boolean {
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const st = fs.lstatSync(dir);
    const uid = process.geteuid?.() ?? -1;
    return st.isDirectory() && st.uid === uid && (st.mode & 0o077) === 0;
  } catch {
    return false;
  }
}

/** Entries of a cache file; an unreadable or malformed file gives none. */
function readEntries(file: string): Map<string, Entry> {
  const out = new Map<string, Entry>();
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch {
    return out;
  }
  try {
    if (buf.toString('latin1', 0, MAGIC.length) !== MAGIC) return out;
    const indexLen = buf.readUInt32LE(MAGIC.length);
    let off = MAGIC.length + 4 + indexLen;
    const index = JSON.parse(buf.toString('utf8', MAGIC.length + 4, off)) as { file: string; key: string; length: number }[];
    for (const e of index) {
      if (off + e.length > buf.length) return new Map();
      out.set(e.file, { file: e.file, key: e.key, data: buf.subarray(off, off + e.length) });
      off += e.length;
    }
  } catch {
    return new Map();
  }
  return out;
}

function writeEntries(file: string, entries: Entry[]): void {
  const index = Buffer.from(JSON.stringify(entries.map((e) => ({ file: e.file, key: e.key, length: e.data.length }))));
  const len = Buffer.alloc(4);
  len.writeUInt32LE(index.length);
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    fs.writeFileSync(tmp, Buffer.concat([Buffer.from(MAGIC, 'latin1'), len, index, ...entries.map((e) => e.data)]), { mode: 0o600 });
    fs.renameSync(tmp, file);
  } catch {
    fs.rmSync(tmp, { force: true });
  }
}

/** `require` for `mod`, as Node's loader makes it. */
function makeRequire(mod: Module): NodeJS.Require {
  const M = Module as unknown as {
    _resolveFilename(request: string, parent: Module, isMain: boolean, options?: { paths?: string[] }): string;
    _resolveLookupPaths(request: string, parent: Module): string[] | null;
    _extensions: NodeJS.RequireExtensions;
    _cache: NodeJS.Dict<NodeJS.Module>;
  };
  const require = ((id: string) => mod.require(id)) as NodeJS.Require;
  const resolve = ((request: string, options?: { paths?: string[] }) => M._resolveFilename(request, mod, false, options)) as NodeJS.RequireResolve;
  resolve.paths = (request: string) => M._resolveLookupPaths(request, mod);
  require.resolve = resolve;
  require.main = mainModule;
  require.extensions = M._extensions;
  require.cache = M._cache;
  return require;
}

let stats: CodeCacheStats | undefined;
/** The program's main module (what `require.main` is in every module). */
const mainModule = require.main;

/** Counts of this run, or undefined when no cache is installed. */
export function codeCacheStats(): CodeCacheStats | undefined {
  return stats && { ...stats };
}

/**
 * Compiles the modules loaded from now on with the cache `<dir>/<name>-…bin` (see the contract
 * above). Returns false, changing nothing, when the directory is unsafe or unusable.
 */
export function installCodeCache(dir: string, name: string): boolean {
  if (stats || process.execArgv.some((a) => /^--(inspect|experimental-policy|policy-integrity)/.test(a))) return false;
  if (!safeDir(dir)) return false;
  const cacheFile = path.join(dir, `${name}-${process.version}-${process.arch}.bin`);
  const old = readEntries(cacheFile);
  const compiled: Compiled[] = [];
  const run: CodeCacheStats = { hits: 0, misses: 0, rejected: 0 };
  stats = run;
  const proto = Module.prototype as unknown as { _compile(content: string, filename: string): unknown };
  const nodeCompile = proto._compile;
  proto._compile = function (this: Module, content: string, filename: string): unknown {
    let st: fs.Stats;
    try {
      st = fs.statSync(filename);
    } catch {
      return nodeCompile.call(this, content, filename);
    }
    if (content.startsWith('#!') || DYNAMIC_IMPORT.test(content)) return nodeCompile.call(this, content, filename);
    const key = fileKey(st);
    const entry = old.get(filename);
    const cachedData = entry?.key === key ? entry.data : undefined;
    const script = new vm.Script(Module.wrap(content), { filename, cachedData });
    const accepted = cachedData !== undefined && !script.cachedDataRejected;
    if (accepted) run.hits++;
    else if (cachedData) run.rejected++;
    else run.misses++;
    compiled.push({ file: filename, key, script, reused: accepted ? cachedData : undefined });
    const fn = script.runInThisContext({ displayErrors: true }) as (...args: unknown[]) => unknown;
    return fn.call(this.exports, this.exports, makeRequire(this), this, filename, path.dirname(filename));
  };
  process.once('exit', (code) => {
    if (code !== 0 || compiled.every((c) => c.reused)) return;
    // Entries of files this run did not load stay while their files are unchanged (another
    // command path may need them); those of removed or rewritten files go.
    const entries = new Map([...old].filter(([file, e]) => {
      try {
        return fileKey(fs.statSync(file)) === e.key;
      } catch {
        return false;
      }
    }));
    for (const c of compiled) {
      try {
        entries.set(c.file, { file: c.file, key: c.key, data: c.reused ?? c.script.createCachedData() });
      } catch {
        entries.delete(c.file);
      }
    }
    writeEntries(cacheFile, [...entries.values()]);
  });
  return true;
}
