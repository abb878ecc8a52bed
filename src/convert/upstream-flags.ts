/**
 * Upstream nydusify flags this converter accepts but cannot honour. A flag that would change what
 * gets built or where it goes is refused (one line); a tuning flag is accepted with one warning
 * line naming it, so scripts written for upstream keep working.
 */

export interface UpstreamFlag {
  name: string;
  /** Whether it takes a value (`--name <value>`). */
  value: boolean;
  /** Refused rather than ignored, and why. */
  refuse?: string;
}

export const CONVERT_FLAGS: UpstreamFlag[] = [
  { name: 'source-archive', value: true, refuse: 'reading an OCI layout archive is not supported; push it to a registry first' },
  { name: 'target-archive', value: true, refuse: 'writing an OCI layout archive is not supported' },
  { name: 'source-backend-type', value: true, refuse: 'model sources are not supported' },
  { name: 'source-backend-config', value: true, refuse: 'model sources are not supported' },
  { name: 'reverse', value: false, refuse: 'nydus -> OCI conversion is not supported' },
  { name: 'build-cache', value: true },
  { name: 'build-cache-tag', value: true },
  { name: 'build-cache-version', value: true },
  { name: 'build-cache-insecure', value: false },
  { name: 'build-cache-max-records', value: true },
  { name: 'chunk-dict-insecure', value: false },
  { name: 'fs-align-chunk', value: false },
  { name: 'backend-aligned-chunk', value: false },
  { name: 'batch-size', value: true },
  { name: 'nydus-image', value: true },
  { name: 'push-retry-delay', value: true },
  { name: 'log-file', value: true },
];

export const CHECK_FLAGS: UpstreamFlag[] = [
  { name: 'source-backend-type', value: true, refuse: 'the source is read from its registry; checking a source whose blobs are in a storage backend is not supported' },
  { name: 'source-backend-config', value: true, refuse: 'the source is read from its registry; checking a source whose blobs are in a storage backend is not supported' },
  { name: 'source-backend-config-file', value: true, refuse: 'the source is read from its registry; checking a source whose blobs are in a storage backend is not supported' },
  { name: 'nydus-image', value: true },
  { name: 'nydusd', value: true },
  { name: 'log-file', value: true },
];

const camel = (name: string): string => name.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

/**
 * For the flags among `list` that were given (commander's parsed options): throws on a refused one,
 * returns one warning line per ignored one.
 */
export function upstreamFlagWarnings(list: UpstreamFlag[], given: Record<string, unknown>): string[] {
  const warnings: string[] = [];
  for (const f of list) {
    const v = given[camel(f.name)];
    if (v === undefined || v === false) continue;
    if (f.refuse) throw new Error(`--${f.name}: ${f.refuse}`);
    warnings.push(`upstream flag --${f.name} is accepted but has no effect here`);
  }
  return warnings;
}

export function flagSpec(f: UpstreamFlag): string {
  return f.value ? `--${f.name} <value>` : `--${f.name}`;
}
