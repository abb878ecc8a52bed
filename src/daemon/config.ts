/**
 * nydusd's configuration, parsed once into a typed object: the v1 JSON ("device" style, what
 * nydus-snapshotter writes) and upstream's v2 format (`version = 2`, TOML or JSON; see
 * src/daemon/config-v2.ts). Wrong types are errors naming the key (`device.backend.config.host:
 * expected a string, got number`). Upstream keys this daemon does not honour are warnings that say
 * why; keys upstream does not know either are warned as unknown. Values whose loss would be unsafe
 * (cache encryption) and backends this daemon lacks are errors naming them.
 *
 * `device.backend.config.mirrors`, `device.backend.config.proxy` and top-level `p2p` are kept as
 * validated pass-through values for the mirror and peer modules, which parse them themselves.
 */
import * as fs from 'node:fs';
import { parse as parseToml } from 'smol-toml';
import { v2ToV1 } from './config-v2';
import type { ObjectStoreConfig } from '../fetch/object-store';

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

export type BackendConfig =
  | { type: 'registry'; config: RegistryBackendConfig }
  | { type: 'localfs'; config: LocalfsBackendConfig }
  | { type: 's3'; config: ObjectStoreConfig }
  | { type: 'oss'; config: ObjectStoreConfig };

export interface CacheConfig {
  /**
   * 'erofs': kernel EROFS mode (the kernel mounts the bootstrap over the daemon's blob view; see
   * daemon/erofs-mount.ts); the blob cache is the same either way.
   */
  type: 'blobcache' | 'erofs';
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
    readonly where: string,
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

/** Upstream storage backends this daemon does not have, by their config name. */
const MISSING_BACKENDS: Record<string, string> = {
  localdisk: 'local disk (GPT partitions)',
  'http-proxy': 'local HTTP proxy',
};

const BACKENDS = 'registry, localfs, s3 or oss';

/** `s3` / `oss` backend keys, as upstream's S3Config / OssConfig (api/src/config.rs). */
function objectStoreConfig(kind: 's3' | 'oss', c: Fields): ObjectStoreConfig {
  const scheme = c.str('scheme') || 'https';
  if (scheme !== 'http' && scheme !== 'https') c.fail('scheme', `expected "http" or "https", got ${JSON.stringify(scheme)}`);
  const endpoint = c.str('endpoint') ?? '';
  if (kind === 'oss' && !endpoint) c.fail('endpoint', 'is required for the oss backend (e.g. oss-cn-hangzhou.aliyuncs.com)');
  const region = c.str('region') ?? '';
  if (kind === 's3' && !region) c.fail('region', 'is required for the s3 backend (the SigV4 signing region)');
  const bucketName = c.str('bucket_name') || c.fail('bucket_name', `is required for the ${kind} backend`);
  const accessKeyId = c.str('access_key_id') || undefined;
  const accessKeySecret = c.str('access_key_secret') || undefined;
  if (accessKeyId && !accessKeySecret) c.fail('access_key_secret', 'is required with access_key_id');
  return {
    kind,
    scheme,
    endpoint,
    region,
    bucketName,
    objectPrefix: c.str('object_prefix') ?? '',
    accessKeyId,
    accessKeySecret,
    skipVerify: c.bool('skip_verify', false),
    caCertFiles: c.strList('ca_cert_files'),
    timeout: c.num('timeout', 5),
    connectTimeout: c.num('connect_timeout', 5),
    retryLimit: c.num('retry_limit', 0),
  };
}

/**
 * An `s3` / `oss` config object on its own (nydusify's --backend-config): the typed config and its
 * unknown keys (named `<where>.<key>`). Wrong types and missing keys throw a ConfigError.
 */
export function parseObjectStoreConfig(kind: 's3' | 'oss', raw: unknown, where: string): { config: ObjectStoreConfig; unknown: string[] } {
  if (!isObj(raw)) throw new ConfigError(where, `expected a JSON object, got ${typeName(raw)}`);
  const f = new Fields(raw, where);
  const config = objectStoreConfig(kind, f);
  // Keys of upstream nydusify's backend configs that only matter for its own uploader.
  f.accept('checksum_algorithm', 'proxy');
  return { config, unknown: f.unknown() };
}

const PROXY_KEYS = ['url', 'ping_url', 'fallback', 'check_interval', 'use_http', 'check_pause_elapsed'];

/** Parses an already JSON-decoded v1 config. `file` is used in error messages. */
export function parseNydusdConfig(raw: unknown, file?: string): ParseResult {
  if (!isObj(raw)) throw new ConfigError('(root)', `expected a JSON object, got ${typeName(raw)}`, file);
  const notes: string[] = [];
  const note = (key: string, value: unknown, why: string) => notes.push(`${file ? `${file}: ` : ''}${key} = ${JSON.stringify(value)}: accepted, not used: ${why}`);
  const top = new Fields(raw, '', file);
  const device = top.obj('device') ?? top.fail('device', 'is required');
  const id = device.str('id');
  const backendF = device.obj('backend') ?? device.fail('backend', 'is required');
  const btype = backendF.str('type') ?? backendF.fail('type', `is required (${BACKENDS})`);
  if (MISSING_BACKENDS[btype]) backendF.fail('type', `the ${JSON.stringify(btype)} (${MISSING_BACKENDS[btype]}) backend is not supported by this nydusd; use ${BACKENDS}`);
  const bconf = backendF.obj('config') ?? backendF.fail('config', 'is required');
  let backend: BackendConfig;
  const unknown: string[] = [];
  if (btype === 'registry') {
    const scheme = bconf.str('scheme') ?? 'https';
    const host = bconf.str('host') ?? bconf.fail('host', 'is required for the registry backend');
    const repo = bconf.str('repo') ?? bconf.fail('repo', 'is required for the registry backend');
    const auth = bconf.str('auth') || undefined;
    if (auth !== undefined && !Buffer.from(auth, 'base64').toString('utf8').includes(':')) bconf.fail('auth', 'must be base64 of "user:password"');
    // The proxy is parsed by the mirror module; only its key names are checked here.
    const proxyRaw = bconf.passthrough('proxy', 'object');
    const proxy = proxyRaw ? new Fields(proxyRaw as Obj, `${bconf.where}.proxy`, file) : undefined;
    const dfScheduler = proxy?.str('dragonfly_scheduler_endpoint');
    if (dfScheduler) note(`${bconf.where}.proxy.dragonfly_scheduler_endpoint`, dfScheduler, 'blobs go through the proxy URL; the Dragonfly scheduler is not contacted directly');
    proxy?.accept(...PROXY_KEYS);
    unknown.push(...(proxy?.unknown() ?? []));
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
        proxy: proxyRaw,
        caCertFiles: bconf.strList('ca_cert_files'),
      },
    };
    const blobScheme = bconf.str('blob_url_scheme');
    if (blobScheme && blobScheme !== scheme) note(`${bconf.where}.blob_url_scheme`, blobScheme, `blobs are fetched with the registry's scheme (${scheme})`);
    const redirect = bconf.str('blob_redirected_host');
    if (redirect) note(`${bconf.where}.blob_redirected_host`, redirect, `blobs are fetched from ${host} (and the registry's own redirects are followed)`);
  } else if (btype === 'localfs') {
    const dir = bconf.str('dir');
    const blobFile = bconf.str('blob_file');
    if (!dir && !blobFile) bconf.fail('dir', 'is required for the localfs backend (or blob_file)');
    // Older upstream configs carry these; upstream no longer reads them either.
    for (const k of ['readahead', 'readahead_sec']) {
      const v = k === 'readahead' ? bconf.bool(k, false) : bconf.num(k, 0);
      if (v) note(`${bconf.where}.${k}`, v, 'blob data is read on demand, chunk by chunk (no readahead file)');
    }
    backend = { type: 'localfs', config: { dir, blobFile, altDirs: bconf.strList('alt_dirs') } };
  } else if (btype === 's3' || btype === 'oss') {
    backend = btype === 's3' ? { type: 's3', config: objectStoreConfig('s3', bconf) } : { type: 'oss', config: objectStoreConfig('oss', bconf) };
    const proxyRaw = bconf.passthrough('proxy', 'object') as Obj | undefined;
    if (typeof proxyRaw?.url === 'string' && proxyRaw.url) note(`${bconf.where}.proxy.url`, proxyRaw.url, `${btype} blobs are read from the bucket endpoint directly (the proxy is used for registry backends only)`);
  } else {
    return backendF.fail('type', `unsupported backend ${JSON.stringify(btype)} (${BACKENDS})`);
  }
  unknown.push(...bconf.unknown(), ...backendF.unknown());

  const cacheF = device.obj('cache');
  let cache: CacheConfig = { type: 'blobcache', workDir: '.', validate: false };
  if (cacheF) {
    const ctype = cacheF.str('type') || 'blobcache';
    // Upstream's "fscache" is EROFS over on-demand cachefiles: the closest mode here is "erofs".
    if (ctype === 'fscache') cacheF.fail('type', 'fscache needs the kernel\'s on-demand fscache (CONFIG_EROFS_FS_ONDEMAND), which this nydusd does not use; use "erofs" (kernel EROFS over nydusd\'s blob files)');
    if (ctype !== 'blobcache' && ctype !== 'filecache' && ctype !== 'erofs') cacheF.fail('type', `unsupported cache type ${JSON.stringify(ctype)} (blobcache, filecache or erofs)`);
    if (cacheF.bool('compressed', false)) note(`${cacheF.where}.compressed`, true, 'chunks are cached uncompressed (upstream no longer uses this key either)');
    const cc = cacheF.obj('config');
    cache = { type: ctype === 'erofs' ? 'erofs' : 'blobcache', workDir: cc?.str('work_dir') ?? '.', validate: cacheF.bool('validate', false) };
    if (cc?.bool('disable_indexed_map', false)) note(`${cc.where}.disable_indexed_map`, true, 'the cache always keeps an indexed chunk map (<blob>.chunk_map)');
    // Writing plaintext where the operator asked for an encrypted cache would be a silent leak.
    for (const k of ['enable_encryption', 'enable_convergent_encryption']) if (cc?.bool(k, false)) cc.fail(k, 'cache encryption is not supported by this nydusd');
    cc?.str('encryption_key');
    unknown.push(...cacheF.unknown(), ...(cc?.unknown() ?? []));
  }
  const ext = device.passthrough('external_backends', 'array') as unknown[] | undefined;
  if (ext?.length) note(`${device.where}.external_backends`, `${ext.length} entries`, 'external backends are not supported; chunks come from the image blobs');
  unknown.push(...device.unknown());

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
  if (pf?.bool('stream_prefetch', false)) note('fs_prefetch.stream_prefetch', true, 'prefetch reads merged ranges, not a stream');
  unknown.push(...(pf?.unknown() ?? []));
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
  // Per-file counters and the read log are always kept (GET /api/v1/metrics/files, /pattern).
  top.bool('iostats_files', false);
  top.bool('latest_read_files', false);
  if (!top.bool('enable_xattr', true)) note('enable_xattr', false, "the image's extended attributes are always served");
  top.num('user_io_batch_size', 0);
  top.accept('version');
  unknown.push(...top.unknown());
  return { config, warnings: [...notes, ...unknown.map((k) => `${file ? `${file}: ` : ''}${k}: unknown key, ignored`)] };
}

/** Parses config text: v1 JSON, or v2 (`version = 2`) as TOML or JSON. */
export function parseNydusdConfigText(text: string, file?: string): ParseResult {
  let raw: unknown;
  if (text.trimStart().startsWith('{')) {
    try {
      raw = JSON.parse(text);
    } catch (e) {
      throw new ConfigError('(root)', `invalid JSON: ${(e as Error).message}`, file);
    }
  } else {
    try {
      raw = parseToml(text);
    } catch (e) {
      throw new ConfigError('(root)', `neither JSON nor valid TOML: ${(e as Error).message.split('\n')[0]}`, file);
    }
  }
  if (!isObj(raw) || (raw.version !== 2 && !(raw.device === undefined && raw.backend !== undefined))) return parseNydusdConfig(raw, file);
  // v2: mapped onto v1 and parsed there; messages are renamed back to the v2 keys the user wrote.
  const v2 = v2ToV1(raw);
  const named = (m: string) => `${file ? `${file}: ` : ''}${v2.rename(m)}`;
  try {
    const r = parseNydusdConfig(v2.v1);
    return { config: r.config, warnings: [...v2.warnings, ...r.warnings].map(named) };
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    const reason = e.message.slice(e.key.length + 2);
    throw new ConfigError(v2.rename(e.key), reason, file);
  }
}

/**
 * The raw v1 object of config text in either format, for the snapshotter's template (it fills in
 * host, repo and cache dir, and nydusd checks the result at mount).
 */
export function nydusdConfigAsV1(text: string, file: string): Obj {
  const isJson = text.trimStart().startsWith('{');
  let raw: unknown;
  try {
    raw = isJson ? JSON.parse(text) : parseToml(text);
  } catch (e) {
    throw new ConfigError('(root)', `${isJson ? 'invalid JSON' : 'neither JSON nor valid TOML'}: ${(e as Error).message.split('\n')[0]}`, file);
  }
  if (!isObj(raw)) throw new ConfigError('(root)', `expected an object, got ${typeName(raw)}`, file);
  const isV2 = raw.version === 2 || (raw.device === undefined && raw.backend !== undefined);
  // The JSON round trip drops the keys v2ToV1 leaves undefined.
  return isV2 ? (JSON.parse(JSON.stringify(v2ToV1(raw).v1)) as Obj) : raw;
}

/** Reads and parses a config file; an unreadable file is an error naming it. */
export function parseNydusdConfigFile(file: string): ParseResult {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError('(file)', (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message, file);
  }
  return parseNydusdConfigText(text, file);
}

/** nydusd's `--localfs-dir DIR`: blobs read from DIR, cache kept in DIR (upstream's built-in config). */
export function localfsDirConfig(dir: string): NydusdConfig {
  return parseNydusdConfig({ device: { backend: { type: 'localfs', config: { dir } }, cache: { type: 'blobcache', config: { work_dir: dir } } }, mode: 'direct' }).config;
}
