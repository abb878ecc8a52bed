/**
 * Watch a certs.d directory with chokidar and call back with the reloaded config, debounced so an
 * editor's write-rename-chmod burst becomes one reload. Errors (a broken file) are reported through
 * `onError` and the last good config stays in force.
 */
import chokidar, { FSWatcher } from 'chokidar';
import { logger } from '../util/log';
import { CertsDir, ReloadResult } from './certs-dir';
import { MirrorConfigError } from './types';

const log = logger('mirrors');

export interface CertsWatcherOptions {
  /** Quiet time after the last file event before reloading (ms). Default 200. */
  debounceMs?: number;
  /** Called after a reload whose good config differs from the previous one. */
  onChange(dir: CertsDir): void | Promise<void>;
  /** Called once per file that failed to load. Default: log a warning. */
  onError?(err: MirrorConfigError): void;
}

export class CertsWatcher {
  readonly certs: CertsDir;
  private watcher?: FSWatcher;
  private timer?: NodeJS.Timeout;
  private closed = false;
  /** The reload running now, so close() and tests can wait for it. */
  private running: Promise<void> = Promise.resolve();

  constructor(
    dir: string,
    private readonly opts: CertsWatcherOptions,
  ) {
    this.certs = new CertsDir(dir);
  }

  /** Load the directory once (reporting errors) and start watching. Resolves when the watcher is ready. */
  async start(): Promise<ReloadResult> {
    const first = this.certs.reload();
    this.report(first);
    this.watcher = chokidar.watch(this.certs.dir, { ignoreInitial: true, depth: 2 });
    this.watcher.on('all', () => this.schedule());
    this.watcher.on('error', (e) => log.warn({ dir: this.certs.dir, err: String(e) }, 'certs.d watcher error'));
    await new Promise<void>((resolve) => this.watcher!.once('ready', () => resolve()));
    return first;
  }

  private schedule(): void {
    if (this.closed) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.running = this.running.then(() => this.reloadNow());
    }, this.opts.debounceMs ?? 200);
  }

  private async reloadNow(): Promise<void> {
    if (this.closed) return;
    const r = this.certs.reload();
    this.report(r);
    if (!r.changed) return;
    log.info({ dir: this.certs.dir }, 'certs.d changed; applying new mirror config');
    try {
      await this.opts.onChange(this.certs);
    } catch (e) {
      log.warn({ dir: this.certs.dir, err: (e as Error).message }, 'applying mirror config failed');
    }
  }

  private report(r: ReloadResult): void {
    for (const w of r.warnings) log.warn(w);
    for (const e of r.errors) {
      if (this.opts.onError) this.opts.onError(e);
      else log.warn({ err: e.message }, 'hosts.toml rejected; last good config kept');
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    await this.watcher?.close();
    await this.running;
  }
}
