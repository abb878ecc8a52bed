/**
 * Upstream nydusd's v2 configuration (`version = 2`, api/src/config.rs ConfigV2), mapped onto the
 * v1 shape that src/daemon/config.ts parses:
 *
 *   backend.type + backend.<type>       -> device.backend.{type, config}
 *   cache.{type, compressed, validate} + cache.filecache|fscache|erofs -> device.cache.{..., config}
 *   rafs.{mode, batch_size, validate, enable_xattr, iostats_files, access_pattern, latest_read_files}
 *                                        -> mode, amplify_io, digest_validate, ...
 *   rafs.prefetch.{enable, threads, batch_size, bandwidth_limit, prefetch_all, stream_prefetch}
 *                                        -> fs_prefetch.{enable, threads_count, merging_size, bandwidth_rate, ...}
 *
 * `rename` turns a message that starts with a v1 key back into the v2 key, so users read the names
 * they wrote. Sections of backends other than the selected type are ignored, as upstream does.
 */

type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

const KNOWN: Record<string, string[]> = {
  '': ['version', 'id', 'backend', 'external_backends', 'cache', 'rafs', 'overlay', 'p2p'],
  backend: ['type', 'localdisk', 'localfs', 'oss', 's3', 'registry', 'http-proxy'],
  cache: ['type', 'compressed', 'validate', 'prefetch', 'filecache', 'fscache', 'erofs'],
  'cache.prefetch': ['enable', 'threads', 'batch_size', 'bandwidth_limit', 'prefetch_all', 'stream_prefetch'],
  rafs: ['mode', 'batch_size', 'validate', 'enable_xattr', 'iostats_files', 'access_pattern', 'latest_read_files', 'prefetch'],
};

export interface V2Mapping {
  v1: Obj;
  /** Warnings about v2-only keys, without the file prefix. */
  warnings: string[];
  rename(message: string): string;
}

function unknownKeys(o: unknown, where: string): string[] {
  if (!isObj(o)) return [];
  return Object.keys(o)
    .filter((k) => !KNOWN[where].includes(k))
    .map((k) => `${where ? `${where}.` : ''}${k}: unknown key, ignored`);
}

function pick(o: unknown, map: Record<string, string>): Obj {
  const out: Obj = {};
  if (!isObj(o)) return out;
  for (const [from, to] of Object.entries(map)) if (o[from] !== undefined) out[to] = o[from];
  return out;
}

export function v2ToV1(raw: Obj): V2Mapping {
  const warnings = [...unknownKeys(raw, ''), ...unknownKeys(raw.backend, 'backend'), ...unknownKeys(raw.cache, 'cache'), ...unknownKeys(raw.rafs, 'rafs')];
  const backend = isObj(raw.backend) ? raw.backend : {};
  const btype = typeof backend.type === 'string' ? backend.type : undefined;
  const cache = isObj(raw.cache) ? raw.cache : undefined;
  const rafs = isObj(raw.rafs) ? raw.rafs : {};
  // `[cache.erofs]` (kernel EROFS mode, ours) takes a filecache-style work_dir; so may [cache.filecache].
  const cacheSection = cache && typeof cache.type === 'string' && ['fscache', 'erofs'].includes(cache.type) && isObj(cache[cache.type]) ? cache.type : 'filecache';
  const blobPrefetch = cache?.prefetch;
  if (isObj(blobPrefetch)) {
    warnings.push(...unknownKeys(blobPrefetch, 'cache.prefetch'));
    if (blobPrefetch.enable === true) warnings.push('cache.prefetch.enable = true: accepted, not used: prefetch follows rafs.prefetch (per image), not per blob');
  }
  if (raw.overlay !== undefined) warnings.push('overlay: accepted, not used: RAFS mounts are read-only here (no writable overlay)');

  const v1: Obj = {
    device: {
      ...(raw.id !== undefined ? { id: raw.id } : {}),
      backend: { type: btype, config: btype !== undefined ? (backend[btype] ?? {}) : undefined },
      ...(cache ? { cache: { ...pick(cache, { type: 'type', compressed: 'compressed', validate: 'validate' }), config: cache[cacheSection] } } : {}),
      ...(raw.external_backends !== undefined ? { external_backends: raw.external_backends } : {}),
    },
    ...pick(rafs, {
      mode: 'mode',
      batch_size: 'amplify_io',
      validate: 'digest_validate',
      enable_xattr: 'enable_xattr',
      iostats_files: 'iostats_files',
      access_pattern: 'access_pattern',
      latest_read_files: 'latest_read_files',
    }),
    ...(raw.p2p !== undefined ? { p2p: raw.p2p } : {}),
  };
  if (rafs.prefetch !== undefined) {
    v1.fs_prefetch = isObj(rafs.prefetch)
      ? pick(rafs.prefetch, { enable: 'enable', threads: 'threads_count', batch_size: 'merging_size', bandwidth_limit: 'bandwidth_rate', prefetch_all: 'prefetch_all', stream_prefetch: 'stream_prefetch' })
      : rafs.prefetch;
    if (isObj(rafs.prefetch)) warnings.push(...unknownKeys(rafs.prefetch, 'cache.prefetch').map((w) => `rafs.${w.slice('cache.'.length)}`));
  }

  // v1 key prefix -> v2 key, longest first so the most specific wins.
  const names: [string, string][] = [
    ['device.backend.config', `backend.${btype ?? '<type>'}`],
    ['device.backend', 'backend'],
    ['device.cache.config', `cache.${cacheSection}`],
    ['device.cache', 'cache'],
    ['device.external_backends', 'external_backends'],
    ['device.id', 'id'],
    ['device', 'backend'],
    ['fs_prefetch.threads_count', 'rafs.prefetch.threads'],
    ['fs_prefetch.merging_size', 'rafs.prefetch.batch_size'],
    ['fs_prefetch.bandwidth_rate', 'rafs.prefetch.bandwidth_limit'],
    ['fs_prefetch', 'rafs.prefetch'],
    ['digest_validate', 'rafs.validate'],
    ['amplify_io', 'rafs.batch_size'],
    ...['mode', 'enable_xattr', 'iostats_files', 'access_pattern', 'latest_read_files'].map((k): [string, string] => [k, `rafs.${k}`]),
  ];
  const rename = (m: string): string => {
    for (const [from, to] of names) {
      if (m.startsWith(from) && (m.length === from.length || '.: ='.includes(m.charAt(from.length)))) return to + m.slice(from.length);
    }
    return m;
  };
  return { v1, warnings, rename };
}
