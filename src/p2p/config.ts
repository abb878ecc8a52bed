/**
 * The `p2p` section of the nydusd config, validated once at the edge:
 *
 *   "p2p": { "enable": true, "cluster_secret": "...", "bootstrap": ["10.0.0.5:49737"],
 *            "allow": ["<64 hex public key>", ...], "max_peers": 64, "request_timeout_ms": 2000 }
 *
 * Optional extras: `upstream_timeout_ms` (how long to wait for an owner that answered PENDING, i.e.
 * is fetching the chunk from upstream itself), `host` (IPv4 the DHT socket binds; by default the local
 * address facing the first bootstrap node, see membership.ts), `key_file` (where this node's 32-byte key seed is kept so its public key, the one other
 * nodes allow, survives restarts), `max_inflight_per_peer`, `serve_concurrency`, `store_bytes`,
 * `hello_timeout_ms` (how long a new connection may stay without a verified HELLO).
 * Every error names the key and the reason in one line.
 */
import { isIPv4 } from 'node:net';

export interface P2PConfig {
  enable: boolean;
  clusterSecret: string;
  bootstrap: { host: string; port: number }[];
  /** Lowercase hex public keys allowed to connect; empty = anyone who knows the cluster secret. */
  allow: string[];
  maxPeers: number;
  requestTimeoutMs: number;
  /** Limit for a request the owner acknowledged with PENDING (it fetches upstream); >= requestTimeoutMs. */
  upstreamTimeoutMs: number;
  /** Bind address of the DHT socket; undefined = the local address facing `bootstrap[0]`. */
  host?: string;
  keyFile?: string;
  /** Requests this node keeps in flight to one peer; more wait for a slot (within the timeout). */
  maxInflightPerPeer: number;
  /** Requests this node serves at once; beyond it answers BUSY. */
  serveConcurrency: number;
  /** Bytes of served chunks kept in memory for answering peers. */
  storeBytes: number;
  /** A connection whose peer sent no valid HELLO within this is closed and counted. */
  helloTimeoutMs: number;
}

export const P2P_DEFAULTS = {
  maxPeers: 64,
  requestTimeoutMs: 2000,
  upstreamTimeoutMs: 30_000,
  maxInflightPerPeer: 4,
  serveConcurrency: 16,
  storeBytes: 256 * 1024 * 1024,
  helloTimeoutMs: 5000,
};

export class P2PConfigError extends Error {
  constructor(where: string, key: string, reason: string) {
    super(`${where}: p2p.${key}: ${reason}`);
    this.name = 'P2PConfigError';
  }
}

const KNOWN = new Set([
  'enable', 'cluster_secret', 'bootstrap', 'allow', 'max_peers', 'request_timeout_ms', 'upstream_timeout_ms', 'host', 'key_file',
  'max_inflight_per_peer', 'serve_concurrency', 'store_bytes', 'hello_timeout_ms',
]);

/** Parses `host:port` (IPv4 or a name) into a DHT bootstrap address. */
export function parseHostPort(s: string): { host: string; port: number } | undefined {
  const m = /^([A-Za-z0-9.-]+):(\d{1,5})$/.exec(s);
  if (!m) return undefined;
  const port = Number(m[2]);
  if (port < 1 || port > 65535) return undefined;
  return { host: m[1], port };
}

function posInt(where: string, raw: Record<string, unknown>, key: string, dflt: number): number {
  const v = raw[key];
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) {
    throw new P2PConfigError(where, key, `must be a positive integer, got ${JSON.stringify(v)}`);
  }
  return v;
}

/**
 * Validates a raw `p2p` object (already parsed JSON). `where` names the file for error messages.
 * Returns undefined when the section is absent or `enable` is false (P2P is off by default).
 */
export function parseP2PConfig(raw: unknown, where = 'config'): P2PConfig | undefined {
  if (raw === undefined || raw === null) return undefined;
  if (typeof raw !== 'object' || Array.isArray(raw)) throw new P2PConfigError(where, '', 'must be an object');
  const o = raw as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!KNOWN.has(k)) throw new P2PConfigError(where, k, 'unknown key');
  if (o.enable !== undefined && typeof o.enable !== 'boolean') throw new P2PConfigError(where, 'enable', 'must be a boolean');
  if (o.enable !== true) return undefined;

  const secret = o.cluster_secret;
  if (typeof secret !== 'string' || secret.length < 16) {
    throw new P2PConfigError(where, 'cluster_secret', 'must be a string of at least 16 characters');
  }
  if (!Array.isArray(o.bootstrap) || o.bootstrap.length === 0) {
    // The public DHT bootstrap nodes are never a default: a closed cluster cannot reach them.
    throw new P2PConfigError(where, 'bootstrap', 'must be a non-empty array of "host:port" strings');
  }
  const bootstrap = o.bootstrap.map((b, i) => {
    const hp = typeof b === 'string' ? parseHostPort(b) : undefined;
    if (!hp) throw new P2PConfigError(where, `bootstrap[${i}]`, `not "host:port": ${JSON.stringify(b)}`);
    return hp;
  });
  const allowRaw = o.allow ?? [];
  if (!Array.isArray(allowRaw)) throw new P2PConfigError(where, 'allow', 'must be an array of hex public keys');
  const allow = allowRaw.map((k, i) => {
    if (typeof k !== 'string' || !/^[0-9a-fA-F]{64}$/.test(k)) {
      throw new P2PConfigError(where, `allow[${i}]`, 'must be a 64-hex-digit public key');
    }
    return k.toLowerCase();
  });
  if (o.host !== undefined && (typeof o.host !== 'string' || !isIPv4(o.host))) {
    // hyperdht needs an explicit IPv4 (not a name, not 0.0.0.0 for bootstrap nodes).
    throw new P2PConfigError(where, 'host', 'must be an IPv4 address');
  }
  if (o.key_file !== undefined && (typeof o.key_file !== 'string' || o.key_file === '')) {
    throw new P2PConfigError(where, 'key_file', 'must be a file path');
  }
  const requestTimeoutMs = posInt(where, o, 'request_timeout_ms', P2P_DEFAULTS.requestTimeoutMs);
  const upstreamTimeoutMs = posInt(where, o, 'upstream_timeout_ms', Math.max(P2P_DEFAULTS.upstreamTimeoutMs, requestTimeoutMs));
  if (upstreamTimeoutMs < requestTimeoutMs) {
    throw new P2PConfigError(where, 'upstream_timeout_ms', `must be at least request_timeout_ms (${requestTimeoutMs})`);
  }
  return {
    enable: true,
    clusterSecret: secret,
    bootstrap,
    allow,
    maxPeers: posInt(where, o, 'max_peers', P2P_DEFAULTS.maxPeers),
    requestTimeoutMs,
    upstreamTimeoutMs,
    host: o.host as string | undefined,
    keyFile: o.key_file as string | undefined,
    maxInflightPerPeer: posInt(where, o, 'max_inflight_per_peer', P2P_DEFAULTS.maxInflightPerPeer),
    serveConcurrency: posInt(where, o, 'serve_concurrency', P2P_DEFAULTS.serveConcurrency),
    storeBytes: posInt(where, o, 'store_bytes', P2P_DEFAULTS.storeBytes),
    helloTimeoutMs: posInt(where, o, 'hello_timeout_ms', P2P_DEFAULTS.helloTimeoutMs),
  };
}
