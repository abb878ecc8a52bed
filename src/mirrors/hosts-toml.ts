/**
 * certs.d `hosts.toml` (containerd's format plus nydus's mirror keys) -> HostsFile.
 *
 * containerd keys: top-level `server` and the server's own `ca`, `skip_verify` (kept as `serverTls`),
 * `header`, `client`, `capabilities`, `override_path` (validated and named in a warning: the origin
 * is read with the nydusd config's settings); `[host."URL"]` tables, tried in file order, with
 * `capabilities`, `skip_verify`, `ca`, `client`, `override_path` and a `[host."URL".header]` table
 * (string or string array; only the first value is sent, as nydus-snapshotter does).
 * nydus keys per host: `auth_through`, `health_check_interval`, `failure_limit`, `ping_url`,
 * `health_check_pause_elapsed`.
 * Relative `ca`/`client` paths are relative to the file. Every error is one line:
 * `<file>:<line>: <reason>`.
 */
import * as path from 'node:path';
import { parse, TomlError } from 'smol-toml';
import { defaultPingUrl, normalizeHostUrl } from './nydus-json';
import { HostsFile, MIRROR_DEFAULTS, MirrorConfig, MirrorConfigError } from './types';

type Obj = Record<string, unknown>;

const HOST_KEYS = new Set([
  'capabilities', 'skip_verify', 'ca', 'client', 'override_path', 'header',
  'auth_through', 'health_check_interval', 'failure_limit', 'health_check_pause_elapsed', 'ping_url',
]);
const CAPABILITIES = new Set(['pull', 'resolve', 'push']);

/** Line (1-based) of `key = ` inside the `[host."url"]` table, or of the table header itself. */
function lineOf(text: string, hostUrl: string, key?: string): number {
  const lines = text.split('\n');
  let inTable = false;
  let header = 0;
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i].trim();
    if (l.startsWith('[')) {
      inTable = l.includes(`"${hostUrl}"`) || l.includes(`'${hostUrl}'`);
      if (inTable && !header) header = i + 1;
      continue;
    }
    if (inTable && key && new RegExp(`^["']?${key.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}["']?\\s*=`).test(l)) return i + 1;
  }
  return header || 1;
}

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

function stringList(v: unknown): string[] | undefined {
  if (typeof v === 'string') return [v];
  if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v as string[];
  return undefined;
}

export interface ParsedHosts extends HostsFile {
  /** Keys that were accepted but not understood (reported, not fatal, as containerd does). */
  warnings: string[];
}

/** Parse the text of `file`; throws MirrorConfigError naming file, line and reason. */
export function parseHostsToml(text: string, file: string): ParsedHosts {
  let doc: Obj;
  try {
    doc = parse(text) as Obj;
  } catch (e) {
    if (e instanceof TomlError) {
      const reason = e.message.split('\n')[0].replace(/^Invalid TOML document:\s*/, '');
      throw new MirrorConfigError(`${file}:${e.line}:${e.column}`, `invalid TOML: ${reason}`);
    }
    throw e;
  }
  const dir = path.dirname(file);
  const fail = (hostUrl: string, key: string | undefined, reason: string): never => {
    throw new MirrorConfigError(`${file}:${lineOf(text, hostUrl, key)}`, reason);
  };
  const warnings: string[] = [];

  let server: string | undefined;
  if (doc.server !== undefined) {
    if (typeof doc.server !== 'string') throw new MirrorConfigError(`${file}:${topLine(text, 'server')}`, 'server must be a string URL');
    server = normalizeHostUrl(doc.server, `${file}:${topLine(text, 'server')}`);
  }

  const serverTls = topLevelServerKeys(doc, text, file, dir, warnings);

  const hosts = doc.host ?? {};
  if (!isObj(hosts)) throw new MirrorConfigError(`${file}:${topLine(text, 'host')}`, 'host must be a table of [host."URL"] entries');
  const mirrors: MirrorConfig[] = [];
  // smol-toml keeps table insertion order, which is file order: the order mirrors are tried in.
  for (const [hostUrl, raw] of Object.entries(hosts)) {
    if (!isObj(raw)) fail(hostUrl, undefined, `[host."${hostUrl}"] must be a table`);
    const t = raw as Obj;
    let host = '';
    try {
      host = normalizeHostUrl(hostUrl, 'host');
    } catch (e) {
      fail(hostUrl, undefined, (e as Error).message.replace(/^host: /, ''));
    }
    for (const k of Object.keys(t)) {
      if (!HOST_KEYS.has(k)) warnings.push(`${file}:${lineOf(text, hostUrl, k)}: unknown key ${k} in [host."${hostUrl}"] ignored`);
    }

    let capabilities = ['pull', 'resolve'];
    if (t.capabilities !== undefined) {
      const caps = stringList(t.capabilities);
      if (!caps || !Array.isArray(t.capabilities)) fail(hostUrl, 'capabilities', 'capabilities must be an array of "pull", "resolve", "push"');
      const bad = caps!.find((c) => !CAPABILITIES.has(c));
      if (bad) fail(hostUrl, 'capabilities', `unknown capability ${JSON.stringify(bad)} (expected pull, resolve or push)`);
      capabilities = caps!;
    }
    const boolKey = (k: string): boolean | undefined => {
      if (t[k] === undefined) return undefined;
      if (typeof t[k] !== 'boolean') fail(hostUrl, k, `${k} must be true or false`);
      return t[k] as boolean;
    };
    const intKey = (k: string): number | undefined => {
      if (t[k] === undefined) return undefined;
      const v = t[k];
      const n = typeof v === 'bigint' ? Number(v) : v;
      if (typeof n !== 'number' || !Number.isInteger(n) || n <= 0) fail(hostUrl, k, `${k} must be a positive integer`);
      return n as number;
    };

    const ca: string[] = [];
    if (t.ca !== undefined) {
      const list = stringList(t.ca);
      if (!list) fail(hostUrl, 'ca', 'ca must be a path or an array of paths');
      ca.push(...list!.map((p) => path.resolve(dir, p)));
    }
    let client: MirrorConfig['client'];
    if (t.client !== undefined) {
      const c = t.client;
      // containerd: a path (cert and key in one PEM), an array of such paths, or [[cert, key], ...].
      const first = Array.isArray(c) ? c[0] : c;
      if (typeof first === 'string') client = { cert: path.resolve(dir, first), key: path.resolve(dir, first) };
      else if (Array.isArray(first) && first.length === 2 && first.every((x) => typeof x === 'string')) {
        client = { cert: path.resolve(dir, first[0] as string), key: path.resolve(dir, first[1] as string) };
      } else fail(hostUrl, 'client', 'client must be a path, an array of paths or an array of [cert, key] pairs');
    }

    const headers: Record<string, string> = {};
    if (t.header !== undefined) {
      if (!isObj(t.header)) fail(hostUrl, 'header', 'header must be a table of name = value');
      for (const [name, v] of Object.entries(t.header as Obj)) {
        const list = stringList(v);
        if (!list || list.length === 0) fail(hostUrl, name, `header ${name} must be a string or an array of strings`);
        if (list!.length > 1) warnings.push(`${file}:${lineOf(text, hostUrl, name)}: header ${name} has ${list!.length} values; only the first is sent`);
        headers[name] = list![0];
      }
    }

    let pingUrl: string | undefined;
    if (t.ping_url !== undefined) {
      if (typeof t.ping_url !== 'string') fail(hostUrl, 'ping_url', 'ping_url must be a string URL');
      try {
        pingUrl = normalizeHostUrl(t.ping_url as string, 'ping_url');
      } catch (e) {
        fail(hostUrl, 'ping_url', (e as Error).message.replace(/^ping_url: /, 'ping_url: '));
      }
    }
    const overridePath = boolKey('override_path') ?? false;
    mirrors.push({
      host,
      headers,
      authThrough: boolKey('auth_through') ?? MIRROR_DEFAULTS.authThrough,
      healthCheckInterval: intKey('health_check_interval') ?? MIRROR_DEFAULTS.healthCheckInterval,
      failureLimit: intKey('failure_limit') ?? MIRROR_DEFAULTS.failureLimit,
      healthCheckPauseElapsed: intKey('health_check_pause_elapsed') ?? MIRROR_DEFAULTS.healthCheckPauseElapsed,
      pingUrl: pingUrl ?? defaultPingUrl(host, overridePath),
      skipVerify: boolKey('skip_verify') ?? false,
      ca,
      client,
      overridePath,
      capabilities,
    });
  }
  return { file, server, serverTls, mirrors, warnings };
}

const TOP_KEYS = new Set(['server', 'host', 'ca', 'skip_verify', 'header', 'client', 'capabilities', 'override_path']);

/** containerd's keys for the server itself, outside any [host."URL"] table. */
function topLevelServerKeys(doc: Obj, text: string, file: string, dir: string, warnings: string[]): HostsFile['serverTls'] {
  const at = (k: string) => `${file}:${topLine(text, k)}`;
  for (const k of Object.keys(doc)) if (!TOP_KEYS.has(k)) warnings.push(`${at(k)}: unknown top-level key ${k} ignored`);
  let ca: string[] = [];
  if (doc.ca !== undefined) {
    const list = stringList(doc.ca);
    if (!list) throw new MirrorConfigError(at('ca'), 'ca must be a path or an array of paths');
    ca = list.map((p) => path.resolve(dir, p));
  }
  let skipVerify: boolean | undefined;
  if (doc.skip_verify !== undefined) {
    if (typeof doc.skip_verify !== 'boolean') throw new MirrorConfigError(at('skip_verify'), 'skip_verify must be true or false');
    skipVerify = doc.skip_verify;
  }
  if (doc.header !== undefined) {
    if (!isObj(doc.header) || Object.values(doc.header).some((v) => !stringList(v))) throw new MirrorConfigError(at('header'), 'header must be a table of name = value');
    const names = Object.keys(doc.header).join(', ');
    warnings.push(`${file}:${text.split('\n').findIndex((l) => /^\s*\[header\]/.test(l)) + 1 || topLine(text, 'header')}: top-level [header] (${names}) is not sent: requests to the registry itself carry no extra headers here`);
  }
  if (doc.client !== undefined) warnings.push(`${at('client')}: top-level client certificate is not used: the registry itself is read without a client certificate`);
  for (const k of ['capabilities', 'override_path']) if (doc[k] !== undefined) warnings.push(`${at(k)}: top-level ${k} is not used: the registry itself is always read at /v2 for pulls`);
  return ca.length || skipVerify !== undefined ? { ca, skipVerify } : undefined;
}

function topLine(text: string, key: string): number {
  const i = text.split('\n').findIndex((l) => new RegExp(`^\\s*${key}\\s*=`).test(l));
  return i + 1 || 1;
}
