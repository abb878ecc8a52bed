/**
 * containerd-nydus-grpc's config.toml, parsed once into a typed, validated object. The keys follow
 * upstream nydus-snapshotter (version 1); errors name the file, the key and the reason.
 *
 *   version = 1
 *   root = "/var/lib/containerd/io.containerd.snapshotter.v1.nydus"
 *   address = "/run/containerd-nydus/containerd-nydus-grpc.sock"
 *   daemon_mode = "shared"            # shared (one nydusd) | dedicated (one per image) | none
 *   [daemon]      nydusd_path, nydusd_config (JSON template), recover_policy = "restart" | "none"
 *   [remote.mirrors_config] dir      # certs.d directory watched and pushed to every daemon
 *   [cache_manager] disable, cache_dir, max_size_mb   # blob cache collected on Cleanup past max
 *   [log]         level, log_to_stdout, dir
 *   [metrics]     address = "127.0.0.1:9110"         # Prometheus at /v1/metrics; "" = off
 *   [snapshot]    enable_nydus_overlayfs, nydus_overlayfs_path, enable_kata_volume  # kata-mounts.ts
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parse } from 'smol-toml';

export type DaemonMode = 'shared' | 'dedicated' | 'none';
export type RecoverPolicy = 'restart' | 'none';

export interface SnapshotterConfig {
  version: 1;
  root: string;
  address: string;
  daemonMode: DaemonMode;
  daemon: { nydusdPath: string; nydusdConfig: string; recoverPolicy: RecoverPolicy; logLevel: string };
  mirrorsDir: string;
  cache: { disable: boolean; dir: string; maxSizeMb: number };
  log: { level: string; logToStdout: boolean; dir: string };
  metrics: { address: string };
  /** [snapshot]: mounts for VM runtimes (kata-mounts.ts). */
  snapshot: { enableNydusOverlayfs: boolean; nydusOverlayfsPath: string; enableKataVolume: boolean };
}

export const DEFAULT_ROOT = '/var/lib/containerd/io.containerd.snapshotter.v1.nydus';
export const DEFAULT_ADDRESS = '/run/containerd-nydus/containerd-nydus-grpc.sock';
/** ./bin/nydusd of this checkout: the snapshotter and the daemon ship together. */
export const DEFAULT_NYDUSD = path.resolve(__dirname, '../../bin/nydusd');
export const DEFAULT_NYDUSD_CONFIG = path.resolve(__dirname, '../../config/nydusd.json');
/** The root ends up in unix socket paths (108 bytes): keep room for socket/<id>/api.sock. */
const MAX_ROOT_LEN = 70;
const LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'];

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
    if (!(allowed as readonly string[]).includes(a)) throw new ConfigError(this.file, this.name(k), `must be one of ${allowed.join(', ')}, got ${JSON.stringify(v)}`);
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
}

function snapshotKeys(t: Reader): SnapshotterConfig['snapshot'] {
  return {
    enableNydusOverlayfs: t.bool('enable_nydus_overlayfs', false),
    nydusOverlayfsPath: t.str('nydus_overlayfs_path', 'nydus-overlayfs') || 'nydus-overlayfs',
    enableKataVolume: t.bool('enable_kata_volume', false),
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
  const r = new Reader(file, doc);
  const version = r.int('version', 1);
  if (version !== 1) throw new ConfigError(file, 'version', `unsupported configuration version ${version} (must be 1)`);
  const root = path.resolve(over.root ?? r.str('root', DEFAULT_ROOT));
  if (root.length > MAX_ROOT_LEN) throw new ConfigError(file, 'root', `path longer than ${MAX_ROOT_LEN} bytes (it is part of unix socket paths)`);
  const address = path.resolve(over.address ?? r.str('address', DEFAULT_ADDRESS));
  const modeReader = over.daemonMode !== undefined ? new Reader('--daemon-mode', { daemon_mode: over.daemonMode }) : r;
  const daemonMode = modeReader.oneOf<DaemonMode>('daemon_mode', 'shared', ['shared', 'dedicated', 'none'], { multiple: 'dedicated' });
  const d = r.table('daemon');
  const logT = r.table('log');
  const level = over.logLevel ?? logT.str('level', 'info');
  if (!LEVELS.includes(level)) throw new ConfigError(over.logLevel ? '--log-level' : file, 'log.level', `must be one of ${LEVELS.join(', ')}`);
  const recoverPolicy = d.str('recover_policy', 'restart');
  if (recoverPolicy === 'failover') {
    throw new ConfigError(file, 'daemon.recover_policy', '"failover" needs fd passing over unix sockets, which this implementation does not have; use "restart"');
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
      recoverPolicy: d.oneOf<RecoverPolicy>('recover_policy', 'restart', ['restart', 'none']),
      logLevel: d.str('log_level', level),
    },
    mirrorsDir: r.table('remote').table('mirrors_config').str('dir', ''),
    cache: {
      disable: cacheT.bool('disable', false),
      dir: path.resolve(root, cacheT.str('cache_dir', 'cache')),
      maxSizeMb: cacheT.int('max_size_mb', 0),
    },
    log: { level, logToStdout: over.logToStdout ?? logT.bool('log_to_stdout', false), dir: path.resolve(root, logT.str('dir', 'logs')) },
    metrics: { address: r.table('metrics').str('address', '') },
    snapshot: snapshotKeys(r.table('snapshot')),
  };
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
