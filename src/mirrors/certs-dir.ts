/**
 * A certs.d directory: `<dir>/<registry host>/hosts.toml` plus `<dir>/_default/hosts.toml`.
 *
 * `reload()` re-reads every file; a file that fails to parse keeps its last good version in force
 * and the error is returned (naming file, line and reason). Lookup for a registry host tries, as
 * containerd does (its hostDirectory/hostPaths), `<host>_<port>_` for a `host:port` registry, then
 * `<host[:port]>`, then `_default`, and treats docker.io, index.docker.io and registry-1.docker.io
 * as one host (nydus looks up index.docker.io, users write docker.io).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseHostsToml } from './hosts-toml';
import { HostsFile, MirrorConfig, MirrorConfigError } from './types';

const DOCKER_HUB = ['docker.io', 'index.docker.io', 'registry-1.docker.io'];

/** containerd's directory name for a `host:port` registry: `host_port_` (colons are awkward in paths). */
export function hostDirectory(host: string): string {
  const i = host.lastIndexOf(':');
  return i > 0 ? `${host.slice(0, i)}_${host.slice(i + 1)}_` : host;
}

/** Directory names tried for `registryHost`, most specific first. */
export function hostDirCandidates(registryHost: string): string[] {
  const h = registryHost.toLowerCase();
  const names = DOCKER_HUB.includes(h) ? [h, ...DOCKER_HUB.filter((d) => d !== h)] : [h];
  const portDir = hostDirectory(h);
  return [...(portDir !== h ? [portDir] : []), ...names, '_default'];
}

export interface ReloadResult {
  /** Files that failed this time (their last good version, if any, stays in force). */
  errors: MirrorConfigError[];
  /** Non-fatal notes (unknown keys, multi-valued headers). */
  warnings: string[];
  /** True when the set of good configs differs from before. */
  changed: boolean;
}

export class CertsDir {
  /** Last good parse per host directory name. */
  private good = new Map<string, HostsFile>();

  constructor(readonly dir: string) {}

  reload(): ReloadResult {
    const errors: MirrorConfigError[] = [];
    const warnings: string[] = [];
    const before = JSON.stringify([...this.good.entries()]);
    let names: string[] = [];
    try {
      names = fs.readdirSync(this.dir, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name);
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      if (err.code !== 'ENOENT') errors.push(new MirrorConfigError(this.dir, `cannot read directory: ${err.code ?? err.message}`));
    }
    const seen = new Set<string>();
    for (const name of names) {
      const file = path.join(this.dir, name, 'hosts.toml');
      let text: string;
      try {
        text = fs.readFileSync(file, 'utf8');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue;
        errors.push(new MirrorConfigError(file, `cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`));
        if (this.good.has(name)) seen.add(name);
        continue;
      }
      seen.add(name);
      try {
        const parsed = parseHostsToml(text, file);
        warnings.push(...parsed.warnings);
        this.good.set(name, { file: parsed.file, server: parsed.server, serverTls: parsed.serverTls, mirrors: parsed.mirrors });
      } catch (e) {
        if (!(e instanceof MirrorConfigError)) throw e;
        errors.push(e);
      }
    }
    // A deleted file (or directory) takes its mirrors with it.
    for (const name of [...this.good.keys()]) if (!seen.has(name)) this.good.delete(name);
    return { errors, warnings, changed: JSON.stringify([...this.good.entries()]) !== before };
  }

  /** The hosts.toml in force for `registryHost`, if any. */
  hostsFor(registryHost: string): HostsFile | undefined {
    for (const name of hostDirCandidates(registryHost)) {
      const f = this.good.get(name);
      if (f) return f;
    }
    return undefined;
  }

  /** Pull-capable mirrors for `registryHost`, in file order. */
  mirrorsFor(registryHost: string): MirrorConfig[] {
    return (this.hostsFor(registryHost)?.mirrors ?? []).filter((m) => m.capabilities.includes('pull'));
  }
}

/** certs.d mirrors replace the JSON ones when at least one valid entry exists. */
export function effectiveMirrors(jsonMirrors: MirrorConfig[], certsMirrors: MirrorConfig[]): MirrorConfig[] {
  return certsMirrors.length > 0 ? certsMirrors : jsonMirrors;
}
