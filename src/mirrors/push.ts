/**
 * Push mirror sets into running nydusd daemons: `PUT /api/v1/daemon/mirrors` on each daemon's API
 * socket with `{ registry, mirrors }` (mirrors in nydusd's JSON shape). The daemon applies them,
 * without remount, to every instance reading from `registry`; an empty list puts the mirrors of the
 * instance's own config back in force (certs.d replaces them only while it has entries).
 *
 * `MirrorsSync` ties a certs.d watcher to a set of daemons: each change is pushed to every daemon
 * whose registry's mirror list changed, and a daemon added later gets the current list at once.
 */
import * as http from 'node:http';
import { logger } from '../util/log';
import { CertsDir } from './certs-dir';
import { mirrorToJson } from './nydus-json';
import { MirrorConfigError, MirrorJson } from './types';
import { CertsWatcher } from './watcher';

const log = logger('mirrors');

export const MIRRORS_API_PATH = '/api/v1/daemon/mirrors';

/** The body of `PUT /api/v1/daemon/mirrors`. */
export interface MirrorsUpdate {
  /** Registry host (`host[:port]`) whose instances take these mirrors; all instances when absent. */
  registry?: string;
  mirrors: MirrorJson[];
}

/** PUT the mirrors to the daemon at `apiSock`; rejects with a one-line error naming the socket. */
export function pushMirrors(apiSock: string, update: MirrorsUpdate, timeoutMs = 5000): Promise<void> {
  const body = Buffer.from(JSON.stringify(update));
  return new Promise((resolve, reject) => {
    const req = http.request(
      { socketPath: apiSock, method: 'PUT', path: MIRRORS_API_PATH, headers: { 'content-type': 'application/json', 'content-length': body.length }, timeout: timeoutMs },
      (res) => {
        const parts: Buffer[] = [];
        res.on('data', (d: Buffer) => parts.push(d));
        res.on('end', () => {
          if ((res.statusCode ?? 0) < 300) return resolve();
          let msg = Buffer.concat(parts).toString('utf8');
          try {
            msg = (JSON.parse(msg) as { message?: string }).message ?? msg;
          } catch {
            /* plain text */
          }
          reject(new Error(`${apiSock}: PUT ${MIRRORS_API_PATH}: HTTP ${res.statusCode}: ${msg.split('\n')[0]}`));
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${apiSock}: PUT ${MIRRORS_API_PATH} timed out`)));
    req.on('error', (e) => reject(new Error(`${apiSock}: ${(e as NodeJS.ErrnoException).code ?? e.message}`)));
    req.end(body);
  });
}

/** A running daemon and the registry its images come from. */
export interface DaemonTarget {
  apiSock: string;
  registry: string;
}

export class MirrorsSync {
  private readonly watcher: CertsWatcher;
  private readonly targets = new Map<string, DaemonTarget>();
  /** Last list pushed per daemon+registry, to push only what changed. */
  private readonly pushed = new Map<string, string>();

  constructor(
    certsDir: string,
    opts: { debounceMs?: number; onError?(e: MirrorConfigError): void } = {},
  ) {
    this.watcher = new CertsWatcher(certsDir, { debounceMs: opts.debounceMs, onError: opts.onError, onChange: (c) => this.pushAll(c) });
  }

  get certs(): CertsDir {
    return this.watcher.certs;
  }

  start(): Promise<unknown> {
    return this.watcher.start();
  }

  /** Track a daemon and push its current mirrors now. */
  async add(t: DaemonTarget): Promise<void> {
    this.targets.set(`${t.apiSock}\0${t.registry}`, t);
    await this.pushOne(t);
  }

  remove(apiSock: string): void {
    for (const [k, t] of this.targets) {
      if (t.apiSock === apiSock) {
        this.targets.delete(k);
        this.pushed.delete(k);
      }
    }
  }

  private async pushAll(_c: CertsDir): Promise<void> {
    await Promise.all([...this.targets.values()].map((t) => this.pushOne(t)));
  }

  private async pushOne(t: DaemonTarget): Promise<void> {
    const key = `${t.apiSock}\0${t.registry}`;
    const mirrors = this.certs.mirrorsFor(t.registry).map(mirrorToJson);
    const json = JSON.stringify(mirrors);
    if (this.pushed.get(key) === json) return;
    try {
      await pushMirrors(t.apiSock, { registry: t.registry, mirrors });
      this.pushed.set(key, json);
      log.info({ daemon: t.apiSock, registry: t.registry, mirrors: mirrors.map((m) => m.host) }, 'mirrors pushed');
    } catch (e) {
      log.warn({ daemon: t.apiSock, err: (e as Error).message }, 'pushing mirrors failed');
    }
  }

  close(): Promise<void> {
    return this.watcher.close();
  }
}
