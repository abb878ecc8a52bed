/**
 * Spawns ./bin/nydusd for tests (needs `npm run build`): writes the config to a fresh temp dir,
 * puts the API socket there, waits until `GET /api/v1/daemon` says RUNNING, and cleans up
 * (SIGKILL, lazy unmount of every mountpoint it used, rm -rf of the temp dir) in `cleanup()`, which
 * is safe to call twice and after a failed start.
 *
 *   const d = await startNydusd({ config, bootstrap, mountpoint });   // single image
 *   const s = await startNydusd({ config: undefined });                // shared daemon, mount via API
 *   await s.client.mount(dir, bootstrapPath, config);
 *   afterAll(() => d.cleanup());
 */
import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { NydusdClient, DaemonInfo } from '../../src/daemon/client';
import { mountAt } from '../../src/fuse/mount-table';
import { detachSync } from '../../src/fuse/unmount';
import { REPO_ROOT } from './fixtures';

export interface StartOptions {
  /** nydusd JSON config (object); omitted for a shared daemon without a default config. */
  config?: unknown;
  bootstrap?: string;
  mountpoint?: string;
  id?: string;
  /** Reuse a directory (API socket, log) across restarts; a fresh temp dir when omitted. */
  dir?: string;
  extraArgs?: string[];
  logLevel?: string;
  /** A command that runs nydusd (e.g. `unshare -m ...`); it must exec it, so signals reach nydusd. */
  wrap?: string[];
  /** Give up waiting for RUNNING after this many ms (default 60 s). */
  startTimeoutMs?: number;
  /** Variables added to (or, when undefined, removed from) the test's environment for nydusd. */
  env?: Record<string, string | undefined>;
}

export interface NydusdHandle {
  proc: ChildProcess;
  dir: string;
  apisock: string;
  logFile: string;
  client: NydusdClient;
  mountpoints: Set<string>;
  /** Resolves with the exit code (or signal name) once the process is gone. */
  exited: Promise<number | string>;
  /** SIGTERM and wait (bounded) for exit; returns the exit code. */
  stop(timeoutMs?: number): Promise<number | string>;
  /** SIGKILL and wait for exit; leaves mounts behind like a crash does. */
  kill9(): Promise<number | string>;
  log(): string;
  cleanup(): Promise<void>;
}

export function nydusdBin(name = 'nydusd'): string {
  return path.join(REPO_ROOT, 'bin', name);
}

/** Lazy-unmounts whatever is mounted at `dir` (up to two stacked mounts); never throws. */
export function forceUnmount(dir: string): void {
  for (let i = 0; i < 2 && mountAt(dir); i++) if (!detachSync(dir)) break;
}

export function isMounted(dir: string): boolean {
  return mountAt(dir) !== undefined;
}

export async function startNydusd(opts: StartOptions): Promise<NydusdHandle> {
  const dir = opts.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'nydusd-test-'));
  fs.mkdirSync(dir, { recursive: true });
  const apisock = path.join(dir, 'api.sock');
  const logFile = path.join(dir, 'nydusd.log');
  const args = ['--apisock', apisock, '--log-level', opts.logLevel ?? 'info'];
  if (opts.config !== undefined) {
    const cfg = path.join(dir, 'config.json');
    fs.writeFileSync(cfg, JSON.stringify(opts.config, null, 2));
    args.push('--config', cfg);
  }
  if (opts.bootstrap) args.push('--bootstrap', opts.bootstrap);
  if (opts.mountpoint) args.push('--mountpoint', opts.mountpoint);
  if (opts.id) args.push('--id', opts.id);
  args.push(...(opts.extraArgs ?? []));
  const logFd = fs.openSync(logFile, 'a');
  const argv = [...(opts.wrap ?? []), nydusdBin(), ...args];
  const env: NodeJS.ProcessEnv = { ...process.env, ...opts.env };
  for (const [k, v] of Object.entries(opts.env ?? {})) if (v === undefined) delete env[k];
  const proc = spawn(argv[0], argv.slice(1), { stdio: ['ignore', logFd, logFd], env });
  fs.closeSync(logFd);
  const exited = new Promise<number | string>((resolve) => proc.on('exit', (code, sig) => resolve(code ?? sig ?? -1)));
  let gone = false;
  void exited.then(() => (gone = true));
  const client = new NydusdClient(apisock, 10_000);
  const mountpoints = new Set<string>();
  if (opts.mountpoint) mountpoints.add(opts.mountpoint);
  const waitExit = async (ms: number): Promise<number | string> =>
    Promise.race([exited, new Promise<number | string>((r) => setTimeout(() => r('timeout'), ms).unref())]);
  const handle: NydusdHandle = {
    proc,
    dir,
    apisock,
    logFile,
    client,
    mountpoints,
    exited,
    async stop(timeoutMs = 20_000) {
      if (!gone) proc.kill('SIGTERM');
      return waitExit(timeoutMs);
    },
    async kill9() {
      if (!gone) proc.kill('SIGKILL');
      return waitExit(10_000);
    },
    log: () => (fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8') : ''),
    async cleanup() {
      if (!gone) {
        proc.kill('SIGKILL');
        await waitExit(10_000);
      }
      for (const m of mountpoints) forceUnmount(m);
      if (!opts.dir) fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  const deadline = Date.now() + (opts.startTimeoutMs ?? 60_000);
  let last = '';
  for (let i = 0; i < 2000 && Date.now() < deadline; i++) {
    if (gone) break;
    try {
      const info: DaemonInfo = await client.daemonInfo();
      if (info.state === 'RUNNING') return handle;
      last = `state ${info.state}`;
    } catch (e) {
      last = (e as Error).message;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const log = handle.log();
  await handle.cleanup();
  throw new Error(`nydusd did not reach RUNNING (${gone ? 'exited' : last}); log:\n${log.slice(-4000)}`);
}

/**
 * A blob made in memory for pipeline and FUSE tests: `datas` become chunks (zstd unless
 * `compressor: 'none'`), laid out back to back in the returned `bytes` (the blob file).
 */
export interface TestBlob {
  blob: import('../../src/format/model').BlobInfo;
  chunks: import('../../src/format/model').ChunkInfo[];
  bytes: Buffer;
}

export function makeTestBlob(datas: Buffer[], opts: { compressor?: 'none' | 'zstd'; blobIndex?: number; chunkSize?: number } = {}): TestBlob {
  // Loaded lazily so helpers that only spawn nydusd do not need the format module.
  const { compressChunk } = require('../../src/format/codec') as typeof import('../../src/format/codec');
  const { chunkDigest } = require('../../src/format/digest') as typeof import('../../src/format/digest');
  const { createHash } = require('node:crypto') as typeof import('node:crypto');
  const compressor = opts.compressor ?? 'zstd';
  const parts: Buffer[] = [];
  const chunks: TestBlob['chunks'] = [];
  let coff = 0;
  let uoff = 0;
  datas.forEach((d, index) => {
    const c = compressChunk(compressor, d);
    chunks.push({
      digest: chunkDigest('sha256', d),
      blobIndex: opts.blobIndex ?? 0,
      index,
      flags: c.compressed ? 1 : 0,
      compressedOffset: coff,
      compressedSize: c.data.length,
      uncompressedOffset: uoff,
      uncompressedSize: d.length,
    });
    parts.push(c.data);
    coff += c.data.length;
    uoff += Math.ceil(d.length / 4096) * 4096;
  });
  const bytes = Buffer.concat(parts);
  const blobId = createHash('sha256').update(bytes).digest('hex');
  return {
    blob: {
      blobId,
      compressor,
      digester: 'sha256',
      chunkSize: opts.chunkSize ?? Math.max(4096, ...datas.map((d) => d.length)),
      chunkCount: datas.length,
      compressedSize: coff,
      uncompressedSize: uoff,
      features: 0,
      ciOffset: 0,
      ciCompressedSize: 0,
      ciUncompressedSize: 0,
      ciCompressor: 'none',
    },
    chunks,
    bytes,
  };
}

/**
 * A comparable description of every entry under `root`: type, mode, owner, size, mtime (seconds),
 * rdev, link target, xattrs (hex), sha256 of content, and a hard-link group (the first path sharing
 * the inode). Two trees are equal as images go when their descriptions are equal. Asynchronous all
 * the way down, so a FUSE server or registry front in the calling process keeps answering.
 */
export async function describeTree(root: string, opts: { content?: boolean } = {}): Promise<Map<string, string>> {
  const { createHash } = require('node:crypto') as typeof import('node:crypto');
  const fsp = fs.promises;
  const out = new Map<string, string>();
  const firstPathOfIno = new Map<number, string>();
  const xattrs = await readXattrs(root);
  const visit = async (rel: string): Promise<void> => {
    const abs = rel ? path.join(root, rel) : root;
    const st = await fsp.lstat(abs);
    const type = st.isDirectory() ? 'dir' : st.isFile() ? 'file' : st.isSymbolicLink() ? 'symlink' : st.isCharacterDevice() ? 'chr' : st.isBlockDevice() ? 'blk' : st.isFIFO() ? 'fifo' : 'sock';
    const parts = [type, (st.mode & 0o7777).toString(8), `${st.uid}:${st.gid}`, `mtime=${Math.floor(st.mtimeMs / 1000)}`];
    if (type !== 'dir') parts.push(`size=${st.size}`);
    if (type === 'chr' || type === 'blk') parts.push(`rdev=${st.rdev}`);
    if (type === 'symlink') parts.push(`-> ${await fsp.readlink(abs)}`);
    if (type === 'file') {
      if (st.nlink > 1) {
        const first = firstPathOfIno.get(st.ino);
        if (first) parts.push(`hardlink=${first}`);
        else firstPathOfIno.set(st.ino, rel);
        parts.push(`nlink=${st.nlink}`);
      }
      if (opts.content !== false) parts.push(`sha256=${createHash('sha256').update(await fsp.readFile(abs)).digest('hex')}`);
    }
    const x = xattrs.get(rel || '.');
    if (x) parts.push(`xattrs=${x}`);
    out.set(rel || '/', parts.join(' '));
    if (type === 'dir') for (const n of (await fsp.readdir(abs)).sort()) await visit(rel ? `${rel}/${n}` : n);
  };
  await visit('');
  return out;
}

/** xattrs of every entry under root (no dereference), by relative path, as one sorted string each. */
async function readXattrs(root: string): Promise<Map<string, string>> {
  const { execFile } = require('node:child_process') as typeof import('node:child_process');
  const text = await new Promise<string>((resolve) =>
    execFile('getfattr', ['-h', '-R', '-P', '-d', '-m', '-', '-e', 'hex', '.'], { cwd: root, encoding: 'utf8', maxBuffer: 256 << 20 }, (_e, stdout) => resolve(String(stdout ?? ''))),
  );
  const out = new Map<string, string>();
  let cur: string | undefined;
  let vals: string[] = [];
  const flush = () => {
    if (cur !== undefined && vals.length) out.set(cur.replace(/^\.\//, '') || '.', vals.sort().join(','));
    vals = [];
  };
  for (const line of text.split('\n')) {
    if (line.startsWith('# file: ')) {
      flush();
      cur = line.slice(8);
    } else if (line.includes('=')) vals.push(line);
  }
  flush();
  return out;
}
