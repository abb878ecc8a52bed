/**
 * nydusd: mount a RAFS v6 image read-only over FUSE, fetching its data lazily. Takes upstream
 * nydusd's command line (what nydus-snapshotter's command.go builds):
 *
 *   nydusd [fuse] --config CFG --bootstrap B --mountpoint M [--apisock S] ...   one image at M
 *   nydusd [fuse] --mountpoint M --apisock S [--config CFG] ...                  API-only start:
 *       instances mounted with `POST /api/v1/mount?mountpoint=/ID` appear at M/ID
 *   nydusd [singleton] --apisock S [--config CFG]                                API-only, host paths
 *   common: --id ID --thread-num N --log-level L --log-file F --log-rotation-size N
 *           --supervisor SOCK --failover-policy none|resend|flush --upgrade --prefetch-files FILE
 *
 * --supervisor STATE (with --mountpoint, --apisock): run under a supervisor that mounted the FUSE
 * connection and passed it as descriptor 3, which it keeps; STATE is the failover state file
 * (upstream: the supervisor's socket; docs/nydusd.md "Failover"). --upgrade: start as the
 * successor of a daemon on that connection, waiting for `PUT /api/v1/daemon/fuse/takeover`.
 * --failover-policy resend|flush|none: what the successor does with the requests its predecessor
 * read and never answered (FUSE_NOTIFY_RESEND; flush fails them; none leaves them).
 *
 * Accepted but not honoured (one warning line each): --thread-num (one event loop),
 * --log-rotation-size, --rlimit-nofile, --writable, --fscache. Refused with one line: --shared-dir
 * (passthroughfs), virtiofs.
 */
import '../daemon/heap';
import { Command, Option } from 'commander';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomUUID } from 'node:crypto';
import { Daemon } from '../daemon/daemon';
import { applyImagePullAuth } from '../daemon/sources';
import { localfsDirConfig, NydusdConfig, parseNydusdConfigFile } from '../daemon/config';
import { logger, setLogFile, setLogLevel } from '../util/log';
import type { FailoverPolicy } from '../fuse/session';

const log = logger('nydusd');

function fail(msg: string): never {
  process.stderr.write(`nydusd: error: ${msg}\n`);
  process.exit(1);
}

interface Opts {
  config?: string;
  mountpoint?: string;
  bootstrap?: string;
  apisock?: string;
  id?: string;
  prefetchFiles?: string;
  logLevel: string;
  logFile?: string;
  logRotationSize?: string;
  mirrorsDir?: string;
  threadNum?: string;
  fuseThreads?: string;
  supervisor?: string;
  upgrade?: boolean;
  failoverPolicy: string;
  localfsDir?: string;
  sharedDir?: string;
  virtualMountpoint: string;
  writable?: boolean;
  rlimitNofile?: string;
  fscache?: string;
  fscacheThreads?: string;
  fscacheTag?: string;
}

/** Upstream's `--prefetch-files`: a file naming one path a line; blank lines skipped. */
function readPrefetchList(file: string): string[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    fail(`--prefetch-files: ${file}: not a readable file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); it must list one path a line`);
  }
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
}

/** The descriptor a supervisor passes the FUSE connection as (the first after stdio). */
const SUPERVISOR_FD = 3;

/** The descriptor, when it is a /dev/fuse connection (character device 10:229). */
function supervisorFd(): number | undefined {
  try {
    const st = fs.fstatSync(SUPERVISOR_FD);
    return st.isCharacterDevice() && st.rdev === ((10 << 8) | 229) ? SUPERVISOR_FD : undefined;
  } catch {
    return undefined;
  }
}

function threads(flag: string, v: string | undefined): void {
  if (v === undefined) return;
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < 1 || n > 1024) fail(`${flag}: invalid thread number ${JSON.stringify(v)}, valid range: [1-1024]`);
  log.warn(`${flag} ${v}: accepted, not used: this nydusd serves FUSE requests from one event loop`);
}

async function main(): Promise<void> {
  const program = new Command('nydusd')
    .description('Lazy FUSE filesystem over RAFS v6 images, with blob cache, prefetch and an HTTP API')
    .option('-C, --config <file>', 'nydusd config: v1 JSON or v2 TOML/JSON (device.backend, device.cache, fs_prefetch, ...)')
    .option('-M, --mountpoint <dir>', 'FUSE mountpoint; without --bootstrap, API mounts at /ID land under it')
    .option('-B, --bootstrap <file>', 'the image bootstrap (RAFS v6 metadata)')
    .option('-m, --virtual-mountpoint <path>', 'where under --mountpoint the --bootstrap image appears', '/')
    .option('-D, --localfs-dir <dir>', 'localfs backend and cache in this directory (instead of --config)')
    .option('-s, --shared-dir <dir>', 'passthroughfs (not supported)')
    .option('-A, --apisock <path>', 'unix socket for the HTTP API')
    .option('--id <id>', 'daemon id reported by the API')
    .option('--supervisor <file>', 'run under a supervisor that holds the FUSE connection (given as fd 3); failover state file')
    .option('--upgrade', 'start as the successor of a supervised daemon; wait for PUT /api/v1/daemon/fuse/takeover')
    .addOption(new Option('--failover-policy <policy>', 'FUSE failover policy').choices(['none', 'resend', 'flush']).default('resend'))
    .option('--thread-num <n>', 'FUSE worker threads (accepted; one event loop serves FUSE)')
    .option('--fuse-threads <n>', 'same as --thread-num')
    .option('--writable', 'mount read-write (accepted; RAFS is read-only)')
    .option('--prefetch-files <file>', 'file listing paths to prefetch (one a line) instead of the image table')
    .option('--mirrors-dir <dir>', 'certs.d directory (<registry>/hosts.toml) watched for mirrors, applied live')
    .option('-l, --log-level <level>', 'trace, debug, info, warn or error', 'info')
    .option('-L, --log-file <file>', 'append log lines to this file (".log" added when it has no extension)')
    .option('--log-rotation-size <mb>', 'log rotation size in MB (accepted; logs are not rotated)')
    .option('--rlimit-nofile <n>', 'open file limit (accepted; not changed)')
    .option('-F, --fscache <dir>', 'singleton: fscache work dir (not supported)')
    .option('--fscache-tag <tag>', 'singleton: fscache tag (not supported)')
    .option('--fscache-threads <n>', 'singleton: fscache threads (not supported)')
    .argument('[mode]', 'fuse (default) or singleton (an API-only daemon)')
    // Bad flags are one line, like every other start error.
    .configureOutput({ outputError: (msg, write) => write(`nydusd: ${msg.trim()}\n`) })
    .parse();
  const o = program.opts<Opts>();
  const mode = program.args[0] ?? 'fuse';
  if (mode === 'virtiofs') fail('virtiofs mode is not supported (fuse or singleton)');
  if (mode !== 'fuse' && mode !== 'singleton') fail(`unsupported mode ${JSON.stringify(mode)} (fuse or singleton)`);
  if (!['trace', 'debug', 'info', 'warn', 'error'].includes(o.logLevel)) fail(`--log-level: expected trace, debug, info, warn or error, got ${o.logLevel}`);
  setLogLevel(o.logLevel);
  if (o.logFile) setLogFile(path.extname(o.logFile) ? o.logFile : `${o.logFile}.log`);

  if (o.sharedDir) fail('--shared-dir: passthroughfs is not supported (RAFS images only)');
  if (mode === 'singleton' && (o.bootstrap || o.mountpoint)) fail('singleton mode takes no --bootstrap or --mountpoint (mount through the API)');
  if (o.fscache || o.fscacheTag || o.fscacheThreads) log.warn('--fscache: the fscache (EROFS on-demand) service is not supported; instances are served over FUSE through the API');
  if (o.bootstrap && !o.mountpoint) fail('--bootstrap needs --mountpoint (the FUSE mountpoint)');
  if (!o.bootstrap && !o.apisock) fail('a daemon without --bootstrap is driven through its API and needs --apisock');
  if (o.prefetchFiles && !o.bootstrap) fail('--prefetch-files needs --bootstrap (API mounts carry prefetch_files in the request)');
  if (o.config && o.localfsDir) fail('--config and --localfs-dir exclude each other');
  if (!path.isAbsolute(o.virtualMountpoint)) fail(`--virtual-mountpoint: must start with /, got ${o.virtualMountpoint}`);
  threads('--thread-num', o.threadNum);
  threads('--fuse-threads', o.fuseThreads);
  // Upstream's snapshotter passes --supervisor with a socket and no descriptor: run unsupervised then.
  const fuseFd = o.supervisor ? supervisorFd() : undefined;
  if (o.supervisor && fuseFd === undefined) log.warn(`--supervisor: accepted; no FUSE connection at descriptor ${SUPERVISOR_FD} (upstream's supervisor socket protocol is not spoken), so this daemon mounts on its own and cannot fail over`);
  if (fuseFd !== undefined && (!o.mountpoint || !o.apisock || o.bootstrap || mode !== 'fuse')) fail('--supervisor needs --mountpoint and --apisock, and no --bootstrap: a supervised daemon mounts its instances through the API');
  if (o.upgrade && fuseFd === undefined) fail(`--upgrade needs --supervisor and the FUSE connection at descriptor ${SUPERVISOR_FD}`);
  if (o.logRotationSize && o.logRotationSize !== '0') log.warn(`--log-rotation-size ${o.logRotationSize}: accepted; log files are not rotated (leave it to logrotate)`);
  if (o.rlimitNofile) log.warn(`--rlimit-nofile ${o.rlimitNofile}: accepted; the open file limit is the one this process inherited`);
  if (o.writable) log.warn('--writable: accepted; RAFS mounts are read-only');

  let config: NydusdConfig | undefined;
  if (o.config) {
    try {
      const parsed = parseNydusdConfigFile(o.config);
      config = parsed.config;
      applyImagePullAuth(config);
      for (const w of parsed.warnings) log.warn(w);
    } catch (e) {
      fail((e as Error).message);
    }
  } else if (o.localfsDir) {
    config = localfsDirConfig(path.resolve(o.localfsDir));
  }
  if (o.bootstrap && !config) fail('--config (or --localfs-dir) is required with --bootstrap');
  if (o.mirrorsDir && !fs.statSync(o.mirrorsDir, { throwIfNoEntry: false })?.isDirectory()) fail(`--mirrors-dir: ${o.mirrorsDir}: not a directory`);
  const prefetch = o.prefetchFiles ? readPrefetchList(o.prefetchFiles) : undefined;
  const mountRoot = o.mountpoint ? path.resolve(o.mountpoint) : undefined;
  const supervised = o.supervisor && fuseFd !== undefined ? { fd: SUPERVISOR_FD, statePath: path.resolve(o.supervisor), upgrade: o.upgrade === true, policy: o.failoverPolicy as FailoverPolicy } : undefined;
  const daemon = new Daemon({ id: o.id ?? config?.id ?? randomUUID(), apisock: o.apisock, defaultConfig: config, mirrorsDir: o.mirrorsDir, mountRoot, supervised });
  let stopping = false;
  const stop = (sig: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal: sig }, 'shutting down');
    daemon.shutdown().then(
      () => process.exit(0),
      (e) => {
        log.error({ err: (e as Error).message }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  try {
    await daemon.listen();
    if (mountRoot && !o.bootstrap && !supervised) fs.mkdirSync(mountRoot, { recursive: true });
    if (o.bootstrap && config) {
      await daemon.mount(daemon.hostMountpoint(o.virtualMountpoint), o.bootstrap, config, prefetch, false);
      daemon.state = 'READY';
    }
    if (supervised?.upgrade) {
      // A successor stays in INIT until the supervisor hands it the state (takeover) and starts it.
      log.info({ id: daemon.opts.id, apisock: o.apisock }, 'nydusd waiting for takeover');
      return;
    }
    await daemon.supervised?.start();
    daemon.run();
    log.info({ id: daemon.opts.id, apisock: o.apisock, mountpoint: o.mountpoint }, 'nydusd running');
  } catch (e) {
    await daemon.shutdown().catch(() => undefined);
    fail((e as Error).message);
  }
}

main().catch((e) => fail((e as Error).message));
