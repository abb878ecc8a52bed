/**
 * Health of one remote source (a mirror or the dfdaemon proxy): consecutive-failure counting, down
 * marking, and a ping probe on a bounded, unref'd timer.
 *
 * Defaults follow pre-v2.3.5 nydusd: a mirror is marked down after `failureLimit` consecutive
 * failures and probed every `intervalMs` until the probe passes (mirror: any status < 500); the
 * proxy is probed all the time (2xx/3xx). Probing pauses while the source has been idle for
 * `pauseAfterIdleMs` (nydus: 300 s) and resumes on the next request.
 */
import type { Dispatcher } from 'undici';
import { request } from '../util/http-agent';
import { logger } from '../util/log';

const log = logger('health');

export interface HealthOptions {
  /** Source name for logs. */
  name: string;
  /** Consecutive failures that mark the source down. */
  failureLimit: number;
  /** Probe period (ms). */
  intervalMs: number;
  /** true when the source answers; must settle within its own timeout. */
  probe(): Promise<boolean>;
  /** Probe even while up (proxy mode) and once at start; default: only while down (mirror mode). */
  probeWhileUp?: boolean;
  /** No probing after this long without a request (ms). Default 300 s. */
  pauseAfterIdleMs?: number;
}

export interface HealthSnapshot {
  state: 'up' | 'down';
  consecutiveFailures: number;
  lastError?: string;
  /** Epoch ms when marked down. */
  downSince?: number;
  probes: number;
}

export class Health {
  private down = false;
  private failures = 0;
  private lastError?: string;
  private downSince?: number;
  private probes = 0;
  private lastUse = Date.now();
  private timer?: NodeJS.Timeout;
  private probing?: Promise<boolean>;
  private closed = false;
  /** Settles after the first probe when `probeWhileUp`; at once otherwise. */
  readonly ready: Promise<void>;

  constructor(private readonly opts: HealthOptions) {
    if (opts.probeWhileUp) {
      this.ready = this.probeNow().then(() => undefined);
      this.startTimer();
    } else this.ready = Promise.resolve();
  }

  get up(): boolean {
    return !this.down;
  }

  /** Note a request (keeps probing from pausing). */
  touch(): void {
    this.lastUse = Date.now();
  }

  recordSuccess(): void {
    this.failures = 0;
  }

  recordFailure(reason: string): void {
    this.failures++;
    this.lastError = reason;
    if (!this.down && this.failures >= this.opts.failureLimit) this.markDown(reason);
  }

  markDown(reason: string): void {
    if (this.down || this.closed) return;
    this.down = true;
    this.downSince = Date.now();
    this.lastError = reason;
    log.warn({ source: this.opts.name, reason }, 'source marked down');
    this.startTimer();
  }

  private markUp(): void {
    if (!this.down) return;
    this.down = false;
    this.failures = 0;
    this.downSince = undefined;
    log.info({ source: this.opts.name }, 'source healthy again');
    if (!this.opts.probeWhileUp) this.stopTimer();
  }

  /** Run one probe now (joining one already in flight) and update the state. */
  probeNow(): Promise<boolean> {
    if (this.probing) return this.probing;
    this.probes++;
    this.probing = this.opts
      .probe()
      .catch(() => false)
      .then((ok) => {
        this.probing = undefined;
        if (this.closed) return ok;
        if (ok) this.markUp();
        else if (this.opts.probeWhileUp) this.markDown('ping failed');
        return ok;
      });
    return this.probing;
  }

  private startTimer(): void {
    if (this.timer || this.closed) return;
    this.timer = setInterval(() => {
      const idle = Date.now() - this.lastUse > (this.opts.pauseAfterIdleMs ?? 300_000);
      if (!idle) void this.probeNow();
    }, this.opts.intervalMs);
    this.timer.unref();
  }

  private stopTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  snapshot(): HealthSnapshot {
    return {
      state: this.down ? 'down' : 'up',
      consecutiveFailures: this.failures,
      lastError: this.lastError,
      downSince: this.downSince,
      probes: this.probes,
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    this.stopTimer();
    await this.probing;
  }
}

/**
 * GET `url` with a deadline and report the status, or 0 for a transport error. The body is
 * drained so the socket can be reused.
 */
export async function pingStatus(url: string, timeoutMs: number, dispatcher?: Dispatcher): Promise<number> {
  try {
    const res = await request(url, { method: 'GET', signal: AbortSignal.timeout(timeoutMs), dispatcher });
    await res.body.dump();
    return res.statusCode;
  } catch {
    return 0;
  }
}
