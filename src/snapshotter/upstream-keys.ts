/**
 * Every key of upstream nydus-snapshotter's config.toml (config/config.go), with what this
 * implementation does with it. `checkUpstreamKeys` walks a parsed config.toml and returns one
 * warning line for each key set to a value whose behaviour this snapshotter does not provide, and
 * for each key upstream does not know either; it throws (through `fail`) where upstream refuses the
 * value. Keys config.ts reads itself are listed with no warning, so only the unknown are unknown.
 */

type Table = Record<string, unknown>;
type Kind = 'string' | 'bool' | 'int' | 'duration' | 'table';

interface Leaf {
  kind: Kind;
  /** The reason for a warning when `v` asks for something this snapshotter does not do. */
  warn?: (v: unknown, doc: Table) => string | undefined;
  /** The reason upstream refuses `v`. */
  invalid?: (v: unknown, doc: Table) => string | undefined;
}
interface Schema {
  [key: string]: Leaf | Schema;
}

const isLeaf = (x: Leaf | Schema): x is Leaf => typeof (x as Leaf).kind === 'string';
const leaf = (kind: Kind, warn?: Leaf['warn'], invalid?: Leaf['invalid']): Leaf => ({ kind, warn, invalid });
const whenTrue = (reason: string) => (v: unknown) => (v === true ? reason : undefined);
const whenSet = (reason: string) => (v: unknown) => (v !== '' && v !== 0 && v !== false && v !== '0s' && v !== '0' ? reason : undefined);
const oneOf = (allowed: string[]) => (v: unknown) => (allowed.includes(v as string) ? undefined : `must be one of ${allowed.join(', ')}, got ${JSON.stringify(v)}`);
const get = (doc: Table, ...keys: string[]): unknown => keys.reduce<unknown>((t, k) => (t && typeof t === 'object' ? (t as Table)[k] : undefined), doc);

const NO_ROTATION = 'the snapshotter logs to stderr and nydusd to one file; rotation is left to the service manager (logrotate, journald)';
const NOT_COLLECTED = 'hung-I/O and periodic daemon metrics are not collected';

const SCHEMA: Schema = {
  version: leaf('int'),
  root: leaf('string'),
  address: leaf('string'),
  daemon_mode: leaf('string'),
  uid: leaf('int', whenSet('the gRPC socket keeps the owner of this process')),
  gid: leaf('int', whenSet('the gRPC socket keeps the group of this process')),
  cleanup_on_close: leaf('bool', whenTrue('daemons and mounts are left running when the snapshotter stops (containers keep their filesystems)')),
  system: {
    enable: leaf('bool'),
    address: leaf('string'),
    uid: leaf('int'),
    gid: leaf('int'),
    debug: {
      daemon_cpu_profile_duration_secs: leaf('int'),
      pprof_address: leaf('string', whenSet('no pprof server (use node --inspect)')),
    },
  },
  daemon: {
    nydusd_path: leaf('string'),
    nydusd_config: leaf('string'),
    nydusimage_path: leaf('string', whenSet('nydus-image is not run by the snapshotter here (upstream needs it only for tarfs and checks)')),
    recover_policy: leaf('string', undefined, oneOf(['none', 'restart', 'failover'])),
    log_level: leaf('string'),
    fs_driver: leaf(
      'string',
      (v) => (v === 'fusedev' || v === 'erofs' ? undefined : `${JSON.stringify(v)} is not supported; rafs instances are served over FUSE ("fusedev")`),
      oneOf(['fusedev', 'erofs', 'fscache', 'blockdev', 'nodev', 'proxy']),
    ),
    threads_number: leaf(
      'int',
      whenSet('nydusd serves FUSE requests from one event loop; the thread count is not used'),
      (v) => ((v as number) > 1024 ? `nydusd worker thread number ${String(v)} is too big, max 1024` : undefined),
    ),
    log_rotation_size: leaf('int', whenSet(NO_ROTATION)),
    // Honoured by the daemon manager (passed to nydusd as --failover-policy) with recover_policy "failover".
    failover_policy: leaf('string', undefined, oneOf(['none', 'resend', 'flush'])),
  },
  cgroup: {
    enable: leaf('bool', whenTrue('nydusd is not placed in a cgroup; memory_limit is not applied')),
    memory_limit: leaf('string'),
  },
  log: {
    level: leaf('string'),
    log_to_stdout: leaf('bool'),
    dir: leaf('string'),
    log_rotation_compress: leaf('bool', () => NO_ROTATION),
    log_rotation_local_time: leaf('bool', () => NO_ROTATION),
    log_rotation_max_age: leaf('int', () => NO_ROTATION),
    log_rotation_max_backups: leaf('int', () => NO_ROTATION),
    log_rotation_max_size: leaf('int', () => NO_ROTATION),
  },
  metrics: {
    address: leaf('string'),
    hung_io_interval: leaf('duration', () => NOT_COLLECTED),
    collect_interval: leaf('duration', () => NOT_COLLECTED),
  },
  remote: {
    convert_vpc_registry: leaf('bool', whenTrue('registry hosts are used as given (no VPC rewriting)')),
    // Upstream too takes TLS verification for FUSE daemons from the nydusd config, not from here.
    skip_ssl_verify: leaf('bool', whenTrue('with fs_driver "fusedev" TLS verification follows device.backend.config.skip_verify of the nydusd config (as upstream)')),
    mirrors_config: { dir: leaf('string') },
    auth: {
      enable_kubeconfig_keychain: leaf(
        'bool',
        whenTrue('registry credentials are not read from Kubernetes secrets; they come from the image pull (CRI labels) and docker config'),
        (v, doc) => (v === true && get(doc, 'remote', 'auth', 'enable_cri_keychain') === true ? '"enable_cri_keychain" and "enable_kubeconfig_keychain" can\'t be set at the same time' : undefined),
      ),
      kubeconfig_path: leaf('string'),
      // Both honoured: config.ts, cri-image-proxy.ts.
      enable_cri_keychain: leaf('bool'),
      image_service_address: leaf('string'),
      enable_kubelet_credential_providers: leaf('bool', whenTrue('kubelet credential provider plugins are not run')),
      credential_provider_config: leaf('string'),
      credential_provider_bin_dir: leaf('string'),
      credential_renewal_interval: leaf('duration', whenSet('credentials are re-resolved every 60 s and on docker config changes, whatever the interval')),
    },
  },
  snapshot: {
    // Honoured by kata-mounts.ts, which also names what enable_kata_volume does here.
    enable_nydus_overlayfs: leaf('bool'),
    nydus_overlayfs_path: leaf('string'),
    enable_kata_volume: leaf('bool'),
    sync_remove: leaf('bool', (v) => (v === false ? 'a snapshot\'s resources are always removed at Remove (as with sync_remove = true)' : undefined)),
    enable_overlayfs_volatile: leaf('bool', whenTrue('the "volatile" overlay option is not added to writable snapshots')),
    // Not upstream's: this snapshotter's own key (config.ts, snapshotter.ts "mount on pull").
    mount_on_pull: leaf('bool'),
  },
  cache_manager: {
    disable: leaf('bool'),
    cache_dir: leaf('string'),
    max_size_mb: leaf('int'),
    gc_period: leaf('duration', () => 'no recycle bin; blob cache files no image uses are deleted on Cleanup once the cache exceeds max_size_mb'),
  },
  image: {
    public_key_file: leaf('string'),
    // Silently skipping a signature check the operator asked for would be worse than refusing.
    validate_signature: leaf('bool', undefined, (v) => (v === true ? 'image signature validation is not implemented; refusing to run without it' : undefined)),
  },
  experimental: {
    enable_stargz: leaf('bool', whenTrue('stargz images are not served lazily (they run as plain OCI layers)')),
    enable_referrer_detect: leaf('bool', whenTrue('nydus images are not looked up through OCI referrers')),
    enable_index_detect: leaf('bool', whenTrue('nydus images are not looked up in the OCI index')),
    enable_backend_source: leaf('bool', whenTrue('nydusd is not given a --backend-source; credentials go into its config')),
    tarfs: {
      enable_tarfs: leaf('bool', whenTrue('tarfs mode is not supported; OCI images run as plain overlay layers')),
      mount_tarfs_on_host: leaf('bool'),
      tarfs_hint: leaf('bool'),
      max_concurrent_proc: leaf('int'),
      export_mode: leaf('string'),
    },
  },
};

const GO_DURATION = /^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$|^0$/;

function kindError(kind: Kind, v: unknown): string | undefined {
  switch (kind) {
    case 'string':
      return typeof v === 'string' ? undefined : `must be a string, got ${JSON.stringify(v)}`;
    case 'bool':
      return typeof v === 'boolean' ? undefined : `must be true or false, got ${JSON.stringify(v)}`;
    case 'int':
      return (typeof v === 'number' && Number.isInteger(v)) || typeof v === 'bigint' ? undefined : `must be an integer, got ${String(v)}`;
    case 'duration':
      return typeof v === 'string' && GO_DURATION.test(v) ? undefined : `must be a duration like "10s" or "24h", got ${JSON.stringify(v)}`;
    default:
      return undefined;
  }
}

/** Warnings for `doc` (a parsed config.toml); `fail(key, reason)` builds the error for a refused value. */
export function checkUpstreamKeys(doc: Table, file: string, fail: (key: string, reason: string) => Error): string[] {
  const warnings: string[] = [];
  const walk = (t: Table, schema: Schema, prefix: string): void => {
    for (const [k, v] of Object.entries(t)) {
      const key = prefix ? `${prefix}.${k}` : k;
      const rule = schema[k];
      if (rule === undefined) {
        warnings.push(`${file}: ${key}: unknown key, ignored`);
      } else if (!isLeaf(rule)) {
        if (typeof v !== 'object' || v === null || Array.isArray(v)) throw fail(key, 'must be a table');
        walk(v as Table, rule, key);
      } else {
        const n = typeof v === 'bigint' ? Number(v) : v;
        const bad = kindError(rule.kind, n) ?? rule.invalid?.(n, doc);
        if (bad) throw fail(key, bad);
        const why = rule.warn?.(n, doc);
        if (why) warnings.push(`${file}: ${key} = ${JSON.stringify(n)}: not supported, ignored: ${why}`);
      }
    }
  };
  walk(doc, SCHEMA, '');
  return warnings;
}
