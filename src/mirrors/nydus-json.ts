/**
 * nydusd JSON shapes <-> typed config: `device.backend.config.mirrors[]` (pre-v2.3.5 nydusd, still
 * shown in Dragonfly's docs), `device.backend.config.proxy`, and the body of
 * `PUT /api/v1/daemon/mirrors`. Errors name the JSON path and the reason.
 */
import { MIRROR_DEFAULTS, MirrorConfig, MirrorConfigError, MirrorJson, PROXY_DEFAULTS, ProxyConfig } from './types';

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** `host` with a scheme (https when missing) and no trailing slash; rejects anything URL can't parse. */
export function normalizeHostUrl(raw: string, where: string): string {
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(raw) ? raw : `https://${raw}`;
  let u: URL;
  try {
    u = new URL(withScheme);
  } catch {
    throw new MirrorConfigError(where, `invalid URL ${JSON.stringify(raw)}`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new MirrorConfigError(where, `unsupported scheme ${u.protocol} in ${JSON.stringify(raw)}`);
  }
  return `${u.protocol}//${u.host}${u.pathname.replace(/\/+$/, '')}`;
}

export function defaultPingUrl(host: string, overridePath: boolean): string {
  return overridePath ? `${host}/` : `${host}/v2/`;
}

function str(o: Obj, key: string, where: string): string | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new MirrorConfigError(`${where}.${key}`, `expected a string, got ${typeof v}`);
  return v;
}

function bool(o: Obj, key: string, where: string): boolean | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw new MirrorConfigError(`${where}.${key}`, `expected true or false, got ${JSON.stringify(v)}`);
  return v;
}

function posInt(o: Obj, key: string, where: string): number | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) {
    throw new MirrorConfigError(`${where}.${key}`, `expected a positive integer, got ${JSON.stringify(v)}`);
  }
  return v;
}

function headersOf(o: Obj, where: string): Record<string, string> {
  const h = o.headers;
  if (h === undefined || h === null) return {};
  if (!isObj(h)) throw new MirrorConfigError(`${where}.headers`, 'expected an object of header: value');
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h)) {
    if (typeof v !== 'string') throw new MirrorConfigError(`${where}.headers.${k}`, 'expected a string value');
    out[k] = v;
  }
  return out;
}

/** One nydusd mirror object -> MirrorConfig. */
export function mirrorFromJson(raw: unknown, where: string): MirrorConfig {
  if (!isObj(raw)) throw new MirrorConfigError(where, 'expected an object');
  const hostRaw = str(raw, 'host', where);
  if (!hostRaw) throw new MirrorConfigError(`${where}.host`, 'missing');
  const host = normalizeHostUrl(hostRaw, `${where}.host`);
  const overridePath = bool(raw, 'override_path', where) ?? false;
  const ca = raw.ca_cert_files;
  if (ca !== undefined && !(Array.isArray(ca) && ca.every((c) => typeof c === 'string'))) {
    throw new MirrorConfigError(`${where}.ca_cert_files`, 'expected an array of paths');
  }
  const cert = str(raw, 'client_cert', where);
  const key = str(raw, 'client_key', where);
  if ((cert === undefined) !== (key === undefined)) {
    throw new MirrorConfigError(where, 'client_cert and client_key must be given together');
  }
  return {
    host,
    headers: headersOf(raw, where),
    authThrough: bool(raw, 'auth_through', where) ?? MIRROR_DEFAULTS.authThrough,
    healthCheckInterval: posInt(raw, 'health_check_interval', where) ?? MIRROR_DEFAULTS.healthCheckInterval,
    failureLimit: posInt(raw, 'failure_limit', where) ?? MIRROR_DEFAULTS.failureLimit,
    healthCheckPauseElapsed: posInt(raw, 'health_check_pause_elapsed', where) ?? MIRROR_DEFAULTS.healthCheckPauseElapsed,
    pingUrl: str(raw, 'ping_url', where) || defaultPingUrl(host, overridePath),
    skipVerify: bool(raw, 'skip_verify', where) ?? false,
    ca: (ca as string[] | undefined) ?? [],
    client: cert && key ? { cert, key } : undefined,
    overridePath,
    capabilities: ['pull', 'resolve'],
  };
}

/** `mirrors` array (absent = none) -> MirrorConfig[]. */
export function mirrorsFromJson(raw: unknown, where = 'mirrors'): MirrorConfig[] {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) throw new MirrorConfigError(where, 'expected an array of mirrors');
  return raw.map((m, i) => mirrorFromJson(m, `${where}[${i}]`));
}

/** `proxy` object -> ProxyConfig, or undefined when absent or its url is empty (proxy off). */
export function proxyFromJson(raw: unknown, where = 'proxy'): ProxyConfig | undefined {
  if (raw === undefined || raw === null) return undefined;
  if (!isObj(raw)) throw new MirrorConfigError(where, 'expected an object');
  const url = str(raw, 'url', where);
  if (!url) return undefined;
  const ping = str(raw, 'ping_url', where);
  return {
    url: normalizeHostUrl(url, `${where}.url`),
    pingUrl: ping ? normalizeHostUrl(ping, `${where}.ping_url`) : '',
    fallback: bool(raw, 'fallback', where) ?? PROXY_DEFAULTS.fallback,
    checkInterval: posInt(raw, 'check_interval', where) ?? PROXY_DEFAULTS.checkInterval,
    checkPauseElapsed: posInt(raw, 'check_pause_elapsed', where) ?? PROXY_DEFAULTS.checkPauseElapsed,
    useHttp: bool(raw, 'use_http', where) ?? PROXY_DEFAULTS.useHttp,
  };
}

/** MirrorConfig -> the nydusd JSON shape (what certs.d pushes into a running daemon). */
export function mirrorToJson(m: MirrorConfig): MirrorJson {
  const out: MirrorJson = {
    host: m.host,
    headers: { ...m.headers },
    auth_through: m.authThrough,
    health_check_interval: m.healthCheckInterval,
    failure_limit: m.failureLimit,
    health_check_pause_elapsed: m.healthCheckPauseElapsed,
    ping_url: m.pingUrl,
  };
  if (m.skipVerify) out.skip_verify = true;
  if (m.ca.length) out.ca_cert_files = [...m.ca];
  if (m.client) {
    out.client_cert = m.client.cert;
    out.client_key = m.client.key;
  }
  if (m.overridePath) out.override_path = true;
  return out;
}
