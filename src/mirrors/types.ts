/**
 * Typed mirror and proxy configuration: what the fetch sources consume. Everything here is already
 * validated; the parsers (`nydus-json.ts` for nydusd's JSON, `hosts-toml.ts` for certs.d) are the
 * only places that see raw input.
 */

/** One registry mirror, tried before the origin for blob reads. */
export interface MirrorConfig {
  /** Base URL with scheme, no trailing slash, e.g. `http://127.0.0.1:65001`. */
  host: string;
  /** Extra request headers for this mirror, e.g. `X-Dragonfly-Registry: https://index.docker.io`. */
  headers: Record<string, string>;
  /**
   * false (the default, for Dragonfly): token requests go to the origin and the mirror only carries
   * data, with the origin's Authorization attached. true (a plain registry as mirror): the mirror is
   * asked as a registry of its own, auth challenges included.
   */
  authThrough: boolean;
  /** Seconds between ping probes while the mirror is marked down. */
  healthCheckInterval: number;
  /** Consecutive failures that mark the mirror down. */
  failureLimit: number;
  /** Seconds without reads after which probing pauses (nydus `health_check_pause_elapsed`). */
  healthCheckPauseElapsed: number;
  /** URL probed while down; default `<host>/v2/` (`<host>/` with overridePath). */
  pingUrl: string;
  /** Disable TLS verification towards this mirror. */
  skipVerify: boolean;
  /** PEM CA files (absolute paths) trusted for this mirror. */
  ca: string[];
  /** Client certificate and key files (absolute paths) for mutual TLS. */
  client?: { cert: string; key: string };
  /** The host URL already holds the API root: requests omit the `/v2` prefix. */
  overridePath: boolean;
  /** containerd capabilities; only `pull`-capable hosts serve blob reads. */
  capabilities: string[];
}

/** The dfdaemon forward proxy (nydusd `backend.config.proxy`). */
export interface ProxyConfig {
  /** Proxy URL, e.g. `http://127.0.0.1:65001`. */
  url: string;
  /** Health URL; empty means the proxy is assumed healthy. */
  pingUrl: string;
  /** While the proxy is unhealthy or answers >= 500: read from the origin (true) or fail (false). */
  fallback: boolean;
  /** Seconds between ping probes. */
  checkInterval: number;
  /** Seconds without reads after which probing pauses (nydus `check_pause_elapsed`). */
  checkPauseElapsed: number;
  /** Rewrite `https://` to `http://` in proxied URLs so the proxy sees plaintext. */
  useHttp: boolean;
}

/** One parsed hosts.toml: the mirrors in file order and the upstream server. */
export interface HostsFile {
  /** Path of the file it came from. */
  file: string;
  /** Top-level `server`, if given. */
  server?: string;
  /**
   * Top-level `ca` / `skip_verify`: containerd applies them to the server (the registry itself
   * when `server` is not set); the snapshotter puts them into the instance's registry config.
   */
  serverTls?: { ca: string[]; skipVerify?: boolean };
  mirrors: MirrorConfig[];
}

/** The mirror JSON shape of nydusd's `device.backend.config.mirrors[]` (and the mirrors API). */
export interface MirrorJson {
  host: string;
  headers?: Record<string, string>;
  auth_through?: boolean;
  health_check_interval?: number;
  failure_limit?: number;
  health_check_pause_elapsed?: number;
  ping_url?: string;
  skip_verify?: boolean;
  ca_cert_files?: string[];
  client_cert?: string;
  client_key?: string;
  override_path?: boolean;
}

/** Defaults of pre-v2.3.5 nydusd mirrors and of its proxy config. */
export const MIRROR_DEFAULTS = { healthCheckInterval: 5, failureLimit: 5, authThrough: false, healthCheckPauseElapsed: 300 } as const;
export const PROXY_DEFAULTS = { fallback: true, checkInterval: 5, useHttp: false, checkPauseElapsed: 300 } as const;

/** Bad mirror configuration; the message names the file (or JSON path), line when known, and reason. */
export class MirrorConfigError extends Error {
  constructor(
    public readonly where: string,
    reason: string,
  ) {
    super(`${where}: ${reason}`);
    this.name = 'MirrorConfigError';
  }
}
