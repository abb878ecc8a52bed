/**
 * nydusd's v1 JSON configuration ("device" style, what nydus-snapshotter writes), parsed once into a
 * typed object. Wrong types are errors naming the key (`device.backend.config.host: expected a
 * string, got number`); unknown keys are reported as warnings and otherwise ignored, because
 * upstream configs carry many options this daemon has no use for.
 *
 * `device.backend.config.mirrors`, `device.backend.config.proxy` and top-level `p2p` are kept as
 * validated pass-through values for the mirror and peer modules, which parse them themselves.
 */

export class ConfigError extends Error {
  constructor(
    public readonly key: string,
    reason: string,
    public readonly file?: string,
  ) {
    super(`${file ? `${file}: ` : ''}${key}: ${reason}`);
    this.name = 'ConfigError';
  }
}

export interface RegistryBackendConfig {
  scheme: 'http' | 'https';
  host: string;
  repo: string;
  /** base64 `user:pass`; never logged. */
  auth?: string;
  registryToken?: string;
  skipVerify: boolean;
  /** Seconds. */
  timeout: number;
  connectTimeout: number;
  retryLimit: number;
  mirrors?: unknown;
  proxy?: unknown;
  /** PEM CA files trusted for the registry and its token server (nydusd `ca_cert_files`). */
  caCertFiles?: string[];
}

export interface LocalfsBackendConfig {
  dir?: string;
  altDirs: string[];
  blobFile?: string;
}

export type BackendConfig = { type: 'registry'; config: RegistryBackendConfig } | { type: 'localfs'; config: LocalfsBackendConfig };

export interface CacheConfig {
  type: 'blobcache';
  workDir: string;
  /** Re-verify cached chunks on every read (`cache.validate`). */
  validate: boolean;
}

export interface PrefetchConfig {
  enable: boolean;
  threadsCount: number;
  mergingSize: number;
  /** Bytes per second for prefetch as a whole; 0 = unlimited. */
  bandwidthRate: number;
  prefetchAll: boolean;
}

export interface NydusdConfig {
  id?: string;
  backend: BackendConfig;
  cache: CacheConfig;
  digestValidate: boolean;
  amplifyIo: number;
  fsPrefetch: PrefetchConfig;
  accessPattern: boolean;
  p2p?: unknown;
}

export interface ParseResult {
  config: NydusdConfig;
  warnings: string[];
}

type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const typeName = (v: unknown): string => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v);

/** Reads typed fields of one JSON object and remembers which keys were used. */
class Fields {
  private readonly used = new Set<string>();
  constructor(
    private readonly o: Obj,
    private readonly where: string,
    private readonly file?: string,
  ) {}
  private key(k: string): string {
    return this.where ? `${this.where}.${k}` : k;
  }
  private get(k: string): unknown {
    this.used.add(k);
    return this.o[k];
  }
  fail(k: string, reason: string): never {
    throw new ConfigError(this.key(k), reason, this.file);
  }
  str(k: string): string | undefined {
    const v = this.get(k);
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'string') this.fail(k, `expected a string, got ${typeName(v)}`);
    return v;
  }
  bool(k: string, def: boolean): boolean {
    const v = this.get(k);
    if (v === undefined || v === null) return def;
    if (typeof v !== 'boolean') this.fail(k, `expected true or false, got ${typeName(v)}`);
    return v;
  }
  num(k: string, def: number, min = 0): number {
    const v = this.get(k);
    if (v === undefined || v === null) return def;
    if (typeof v !== 'number' || !Number.isFinite(v)) this.fail(k, `expected a number, got ${typeName(v)}`);
    if (v < min) this.fail(k, `must be at least ${min}, got ${v}`);
    return v;
  }
  obj(k: string): Fields | undefined {
    const v = this.get(k);
    if (v === undefined || v === null) return undefined;
    if (!isObj(v)) this.fail(k, `expected an object, got ${typeName(v)}`);
    return new Fields(v, this.key(k), this.file);
  }
  strList(k: string): string[] {
    const v = this.get(k);
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) this.fail(k, 'expected an array of strings');
    return v as string[];
  }
  /** A value handed on unparsed; only its JSON kind is checked. */
  passthrough(k: string, kind: 'object' | 'array' | 'object-or-array'): unknown {
    const v = this.get(k);
    if (v === undefined || v === null) return undefined;
    const ok = kind === 'object' ? isObj(v) : kind === 'array' ? Array.isArray(v) : isObj(v) || Array.isArray(v);
    if (!ok) this.fail(k, `expected ${kind === 'object-or-array' ? 'an object or array' : `an ${kind}`}, got ${typeName(v)}`);
    return v;
  }
  /** Marks keys as known without reading them (upstream options this daemon accepts and ignores). */
  accept(...keys: string[]): void {
    for (const k of keys) this.used.add(k);
  }
  unknown(): string[] {
    return Object.keys(this.o)
      .filter((k) => !this.used.has(k))
      .map((k) => this.key(k));
  }
}

export const DEFAULT_AMPLIFY_IO = 1 << 20;

/** Parses an already JSON-decoded v1 config. `file` is used in error messages. */
export function parseNydusdConfig(raw: unknown, file?: string): ParseResult {
  if (!isObj(raw)) throw new ConfigError('(root)', `expected a JSON object, got ${typeName(raw)}`, file);
  const warnings: string[] = [];
  const top = new Fields(raw, '', file);
  const device = top.obj('device') ?? top.fail('device', 'is required');
  const id = device.str('id');
  const backendF = device.obj('backend') ?? device.fail('backend', 'is required');
  const btype = backendF.str('type') ?? backendF.fail('type', 'is required (registry or localfs)');
  const bconf = backendF.obj('config') ?? backendF.fail('config', 'is required');
  let backend: BackendConfig;
  if (btype === 'registry') {
    const scheme = bconf.str('scheme') ?? 'https';
    const host = bconf.str('host') ?? bconf.fail('host', 'is required for the registry backend');
    const repo = bconf.str('repo') ?? bconf.fail('repo', 'is required for the registry backend');
    const auth = bconf.str('auth') || undefined;
    if (auth !== undefined && !Buffer.from(auth, 'base64').toString('utf8').includes(':')) bconf.fail('auth', 'must be base64 of "user:password"');
    backend = {
      type: 'registry',
      config: {
        scheme: scheme === 'http' ? 'http' : 'https',
        host,
        repo,
        auth,
        registryToken: bconf.str('registry_token') || undefined,
        skipVerify: bconf.bool('skip_verify', false),
        timeout: bconf.num('timeout', 5),
        connectTimeout: bconf.num('connect_timeout', 5),
        retryLimit: bconf.num('retry_limit', 0),
        mirrors: bconf.passthrough('mirrors', 'array'),
        proxy: bconf.passthrough('proxy', 'object'),
        caCertFiles: bconf.strList('ca_cert_files'),
      },
    };
    bconf.accept('blob_url_scheme', 'blob_redirected_host');
  } else if (btype === 'localfs') {
    const dir = bconf.str('dir');
    const blobFile = bconf.str('blob_file');
    if (!dir && !blobFile) bconf.fail('dir', 'is required for the localfs backend (or blob_file)');
    backend = { type: 'localfs', config: { dir, blobFile, altDirs: bconf.strList('alt_dirs') } };
  } else {
    return backendF.fail('type', `unsupported backend ${JSON.stringify(btype)} (registry or localfs)`);
  }
  warnings.push(...bconf.unknown(), ...backendF.unknown());

  const cacheF = device.obj('cache');
  let cache: CacheConfig = { type: 'blobcache', workDir: '.', validate: false };
  if (cacheF) {
    const ctype = cacheF.str('type') ?? 'blobcache';
    if (ctype !== 'blobcache' && ctype !== 'filecache') cacheF.fail('type', `unsupported cache type ${JSON.stringify(ctype)} (blobcache or filecache)`);
    if (cacheF.bool('compressed', false)) cacheF.fail('compressed', 'compressed caches are not supported');
    const cc = cacheF.obj('config');
    cache = { type: 'blobcache', workDir: cc?.str('work_dir') ?? '.', validate: cacheF.bool('validate', false) };
    cc?.accept('disable_indexed_map');
    warnings.push(...cacheF.unknown(), ...(cc?.unknown() ?? []));
  }
  device.accept('external_backends');
  warnings.push(...device.unknown());

  const mode = top.str('mode') ?? 'direct';
  if (mode !== 'direct' && mode !== 'cached') top.fail('mode', `expected "direct" or "cached", got ${JSON.stringify(mode)}`);
  const pf = top.obj('fs_prefetch');
  const fsPrefetch: PrefetchConfig = {
    enable: pf?.bool('enable', false) ?? false,
    threadsCount: pf?.num('threads_count', 8, 1) ?? 8,
    mergingSize: pf?.num('merging_size', 1 << 20, 0) ?? 1 << 20,
    bandwidthRate: pf?.num('bandwidth_rate', 0) ?? 0,
    prefetchAll: pf?.bool('prefetch_all', true) ?? true,
  };
  pf?.accept('stream_prefetch');
  warnings.push(...(pf?.unknown() ?? []));
  const config: NydusdConfig = {
    id,
    backend,
    cache,
    digestValidate: top.bool('digest_validate', false),
    amplifyIo: top.num('amplify_io', DEFAULT_AMPLIFY_IO),
    fsPrefetch,
    accessPattern: top.bool('access_pattern', false),
    p2p: top.passthrough('p2p', 'object'),
  };
  top.bool('iostats_files', false);
  top.bool('enable_xattr', true);
  top.bool('latest_read_files', false);
  top.accept('version');
  warnings.push(...top.unknown());
  return { config, warnings: warnings.map((k) => `${file ? `${file}: ` : ''}${k}: unknown key, ignored`) };
}

/** Parses config text (JSON). */
export function parseNydusdConfigText(text: string, file?: string): ParseResult {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ConfigError('(root)', `invalid JSON: ${(e as Error).message}`, file);
  }
  return parseNydusdConfig(raw, file);
}
