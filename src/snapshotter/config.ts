/**
 * containerd-nydus-grpc's config.toml, parsed once into a typed, validated object. The keys follow
 * upstream nydus-snapshotter (version 1); errors name the file, the key and the reason.
 *
 *   version = 1
 *   root = "/var/lib/containerd/io.containerd.snapshotter.v1.nydus"
 *   address = "/run/containerd-nydus/containerd-nydus-grpc.sock"
 *   daemon_mode = "multiple"          # dedicated/multiple (one nydusd per image, upstream's default) | shared | none
 *   [daemon]      nydusd_path, nydusd_config (JSON template), log_level,
 *                 recover_policy = "restart" | "failover" | "none", failover_policy = "resend" | "flush" | "none"
 *                 (failover needs daemon_mode "shared"; dedicated daemons restart, with a warning)
 *                 fs_driver = "fusedev" | "erofs" (kernel EROFS mode; "fscache" is refused: no on-demand fscache)
 *   [remote.mirrors_config] dir      # certs.d directory watched and pushed to every daemon
 *   [remote.auth] enable_cri_keychain, image_service_address   # CRI image service proxy (cri-image-proxy.ts)
 *   [cache_manager] disable, cache_dir ("" = <root>/cache), max_size_mb   # collected on Cleanup past max
 *   [log]         level, log_to_stdout, dir ("" = <root>/logs)
 *   [metrics]     address = "127.0.0.1:9110"         # Prometheus at /v1/metrics; "" = off
 *   [system]      enable, address = "/run/containerd-nydus/system.sock"   # system.ts: hot upgrade
 *   [snapshot]    enable_nydus_overlayfs, nydus_overlayfs_path, enable_kata_volume  # kata-mounts.ts
 *                 mount_on_pull = false   # ours, not upstream's: mount an image when its bootstrap layer
 *                                         # is committed, not at the container's Prepare (snapshotter.ts)
 *
 * Every other key of upstream's config (src/snapshotter/upstream-keys.ts) is validated as upstream
 * does and, where this implementation behaves differently, named in one warning line each
 * (`config.warnings`); keys upstream does not know either are warned as unknown.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parse } from 'smol-toml';
import { DEFAULT_IMAGE_SERVICE_ADDRESS } from './cri-image-proxy';
import { checkUpstreamKeys } from './upstream-keys';

export type DaemonMode = 'shared' | 'dedicated' | 'none';
export type RecoverPolicy = 'restart' | 'failover' | 'none';
export type FailoverPolicy = 'resend' | 'flush' | 'none';
/** fusedev: nydusd serves each image over FUSE; erofs: the kernel's EROFS over nydusd's blob view. */
export type FsDriver = 'fusedev' | 'erofs';

export interface SnapshotterConfig {
  version: 1;
  root: string;
  address: string;
  daemonMode: DaemonMode;
  daemon: { nydusdPath: string; nydusdConfig: string; recoverPolicy: RecoverPolicy; failoverPolicy: FailoverPolicy; logLevel: string; fsDriver: FsDriver };
  mirrorsDir: string;
  /** [remote.auth]: the CRI keychain (the socket also serves a proxy of CRI's ImageService). */
  criKeychain: { enable: boolean; imageServiceAddress: string };
  cache: { disable: boolean; dir: string; maxSizeMb: number };
  log: { level: string; logToStdout: boolean; dir: string };
  metrics: { address: string };
  /** The system controller (src/snapshotter/system.ts): hot upgrade and the daemon list. */
  system: { enable: boolean; address: string };
  /** [snapshot]: mounts for VM runtimes (kata-mounts.ts). */
  snapshot: { enableNydusOverlayfs: boolean; nydusOverlayfsPath: string; enableKataVolume: boolean; mountOnPull: boolean };
  /** One line per upstream key accepted but not honoured here (the CLI logs them at start). */
  warnings: string[];
}

export const DEFAULT_ROOT = '/var/lib/containerd/io.containerd.snapshotter.v1.nydus';
export const DEFAULT_ADDRESS = '/run/containerd-nydus/containerd-nydus-grpc.sock';
/** ./bin/nydusd of this checkout: the snapshotter and the daemon ship together. */
export const DEFAULT_NYDUSD = path.resolve(__dirname, '../../bin/nydusd');
export const DEFAULT_NYDUSD_CONFIG = path.resolve(__dirname, '../../config/nydusd.json');
/** The root ends up in unix socket paths (108 bytes): keep room for socket/<id>/api.sock. */
const MAX_ROOT_LEN = 70;
const LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'];

/** Upstream's default when `daemon_mode` is not set: "multiple", i.e. one nydusd per image. */
export const DEFAULT_DAEMON_MODE: DaemonMode = 'dedicated';

export class ConfigError extends Error {
  constructor(file: string, key: string, reason: string) {
    super(`${file}: ${key}: ${reason}`);
    this.name = 'ConfigError';
  }
}

type Table = Record<string, unknown>;

class Reader {
  constructor(
    private readonly file: string,
    private readonly t: Table,
    private readonly prefix = '',
  ) {}

  private name(k: string): string {
    return this.prefix ? `${this.prefix}.${k}` : k;
  }

  table(k: string): Reader {
    const v = this.t[k];
    if (v === undefined) return new Reader(this.file, {}, this.name(k));
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ConfigError(this.file, this.name(k), 'must be a table');
    return new Reader(this.file, v as Table, this.name(k));
  }

  str(k: string, def: string): string {
    const v = this.t[k];
    if (v === undefined) return def;
    if (typeof v !== 'string') throw new ConfigError(this.file, this.name(k), `must be a string, got ${JSON.stringify(v)}`);
    return v;
  }

  bool(k: string, def: boolean): boolean {
    const v = this.t[k];
    if (v === undefined) return def;
    if (typeof v !== 'boolean') throw new ConfigError(this.file, this.name(k), `must be true or false, got ${JSON.stringify(v)}`);
    return v;
  }

  int(k: string, def: number): number {
    const v = this.t[k];
    if (v === undefined) return def;
    const n = typeof v === 'bigint' ? Number(v) : v;
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 0) throw new ConfigError(this.file, this.name(k), `must be a non-negative integer, got ${String(v)}`);
    return n;
  }

  oneOf<T extends string>(k: string, def: T, allowed: readonly T[], aliases: Record<string, T> = {}): T {
    const v = this.str(k, def);
    const a = aliases[v] ?? v;
    if (!(allowed as readonly string[]).includes(a)) {
      const also = Object.keys(aliases).length ? ` (or ${Object.keys(aliases).join(', ')})` : '';
      throw new ConfigError(this.file, this.name(k), `must be one of ${allowed.join(', ')}${also}, got ${JSON.stringify(v)}`);
    }
    return a as T;
  }
}

/** Command-line values that override the file (upstream's flag precedence). */
export interface ConfigOverrides {
  root?: string;
  address?: string;
  nydusdConfig?: string;
  logLevel?: string;
  logToStdout?: boolean;
  daemonMode?: string;
  nydusdPath?: string;
  nydusImagePath?: string;
  fsDriver?: string;
  nydusOverlayfsPath?: string;
}

/** Puts command-line values into the parsed file, so they are checked and warned like file keys. */
function applyOverrides(doc: Table, over: ConfigOverrides): void {
  const set = (table: string, key: string, v: string | undefined): void => {
    if (v === undefined) return;
    const t = doc[table];
    doc[table] = { ...(typeof t === 'object' && t !== null && !Array.isArray(t) ? (t as Table) : {}), [key]: v };
  };
  set('daemon', 'nydusd_path', over.nydusdPath);
  set('daemon', 'nydusimage_path', over.nydusImagePath);
  set('daemon', 'fs_driver', over.fsDriver);
  set('snapshot', 'nydus_overlayfs_path', over.nydusOverlayfsPath);
}

function snapshotKeys(t: Reader): SnapshotterConfig['snapshot'] {
  return {
    enableNydusOverlayfs: t.bool('enable_nydus_overlayfs', false),
    nydusOverlayfsPath: t.str('nydus_overlayfs_path', 'nydus-overlayfs') || 'nydus-overlayfs',
    enableKataVolume: t.bool('enable_kata_volume', false),
    mountOnPull: t.bool('mount_on_pull', false),
  };
}

/** Parses config text; `file` is only used in error messages. */
export function parseConfig(text: string, file: string, over: ConfigOverrides = {}): SnapshotterConfig {
  let doc: Table;
  try {
    doc = parse(text) as Table;
  } catch (err) {
    throw new ConfigError(file, '(toml)', (err as Error).message.split('\n')[0]);
  }
  applyOverrides(doc, over);
  const r = new Reader(file, doc);
  const version = r.int('version', 1);
  if (version !== 1) throw new ConfigError(file, 'version', `unsupported configuration version ${version} (must be 1)`);
  const root = path.resolve(over.root ?? r.str('root', DEFAULT_ROOT));
  if (root.length > MAX_ROOT_LEN) throw new ConfigError(file, 'root', `path longer than ${MAX_ROOT_LEN} bytes (it is part of unix socket paths)`);
  const address = path.resolve(over.address ?? r.str('address', DEFAULT_ADDRESS));
  const modeReader = over.daemonMode !== undefined ? new Reader('--daemon-mode', { daemon_mode: over.daemonMode }) : r;
  const daemonMode = modeReader.oneOf<DaemonMode>('daemon_mode', DEFAULT_DAEMON_MODE, ['shared', 'dedicated', 'none'], { multiple: 'dedicated' });
  const d = r.table('daemon');
  const logT = r.table('log');
  const level = over.logLevel ?? logT.str('level', 'info');
  if (!LEVELS.includes(level)) throw new ConfigError(over.logLevel ? '--log-level' : file, 'log.level', `must be one of ${LEVELS.join(', ')}`);
  const warnings: string[] = [];
  // Failover keeps one FUSE connection per daemon in the daemon manager (docs/snapshotter.md); a
  // dedicated daemon is restarted instead.
  let recoverPolicy = d.oneOf<RecoverPolicy>('recover_policy', 'restart', ['restart', 'failover', 'none']);
  if (recoverPolicy === 'failover' && daemonMode !== 'shared') {
    warnings.push(`${file}: daemon.recover_policy: "failover" needs daemon_mode "shared" here (one FUSE connection per daemon kept by the snapshotter); ${daemonMode} daemons use "restart"`);
    recoverPolicy = 'restart';
  }
  const fsDriver = d.str('fs_driver', 'fusedev');
  if (fsDriver === 'fscache') {
    throw new ConfigError(file, 'daemon.fs_driver', '"fscache" needs the kernel\'s EROFS on-demand fscache (CONFIG_EROFS_FS_ONDEMAND), which this snapshotter does not use; use fs_driver = "erofs" (kernel EROFS over nydusd\'s blob files)');
  }
  // Failover keeps a FUSE connection; kernel EROFS mounts are not on it (the manager remounts the
  // blob view instead), so erofs keeps its mode and recovers by restart.
  if (fsDriver === 'erofs' && recoverPolicy === 'failover') {
    warnings.push(`${file}: daemon.recover_policy: "failover" applies to FUSE mounts; with fs_driver "erofs" daemons use "restart"`);
    recoverPolicy = 'restart';
  }
  const cacheT = r.table('cache_manager');
  const cfg: SnapshotterConfig = {
    version: 1,
    root,
    address,
    daemonMode,
    daemon: {
      nydusdPath: path.resolve(d.str('nydusd_path', DEFAULT_NYDUSD)),
      nydusdConfig: path.resolve(over.nydusdConfig ?? d.str('nydusd_config', DEFAULT_NYDUSD_CONFIG)),
      recoverPolicy,
      failoverPolicy: d.oneOf<FailoverPolicy>('failover_policy', 'resend', ['none', 'resend', 'flush']),
      logLevel: d.str('log_level', level),
      // blockdev, nodev and proxy are warned about by upstream-keys.ts and served as fusedev.
      fsDriver: fsDriver === 'erofs' ? 'erofs' : 'fusedev',
    },
    mirrorsDir: r.table('remote').table('mirrors_config').str('dir', ''),
    criKeychain: {
      enable: r.table('remote').table('auth').bool('enable_cri_keychain', false),
      imageServiceAddress: r.table('remote').table('auth').str('image_service_address', '') || DEFAULT_IMAGE_SERVICE_ADDRESS,
    },
    cache: {
      disable: cacheT.bool('disable', false),
      dir: path.resolve(root, cacheT.str('cache_dir', '') || 'cache'),
      maxSizeMb: cacheT.int('max_size_mb', 0),
    },
    log: { level, logToStdout: over.logToStdout ?? logT.bool('log_to_stdout', false), dir: path.resolve(root, logT.str('dir', '') || 'logs') },
    metrics: { address: r.table('metrics').str('address', '') },
    system: { enable: r.table('system').bool('enable', false), address: path.resolve(r.table('system').str('address', '/run/containerd-nydus/system.sock')) },
    snapshot: snapshotKeys(r.table('snapshot')),
    warnings,
  };
  warnings.push(...checkUpstreamKeys(doc, file, (k, reason) => new ConfigError(file, k, reason)));
  if (cfg.mirrorsDir && !fs.existsSync(cfg.mirrorsDir)) throw new ConfigError(file, 'remote.mirrors_config.dir', `${cfg.mirrorsDir} does not exist`);
  if (cfg.metrics.address && !/^[^:]*:\d+$/.test(cfg.metrics.address)) throw new ConfigError(file, 'metrics.address', `must be host:port, got ${JSON.stringify(cfg.metrics.address)}`);
  return cfg;
}

/** Reads and parses a config file; a missing file is an error that names it. */
export function loadConfig(file: string, over: ConfigOverrides = {}): SnapshotterConfig {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(file, '(file)', `cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  return parseConfig(text, file, over);
}
