/**
 * Returns the garbage of a burst of requests once the burst is over. A container start makes
 * thousands of lookups, stats and reads in a few seconds; their short-lived objects would otherwise
 * sit in the heap until V8's own memory reducer runs, many seconds later, so a shared daemon's
 * resident memory right after a busy spell says more about GC timing than about the images it holds.
 * A full collection costs tens of milliseconds and runs at most once per quiet spell.
 */
import { collectGarbage } from './gc';

export class IdleCollector {
  private active = false;
  private owed = false;
  private readonly timer: NodeJS.Timeout;

  /** Collects after `quietMs` to 2 x `quietMs` without activity following some activity. */
  constructor(quietMs = 500, private readonly collect: () => void = collectGarbage) {
    this.timer = setInterval(() => this.tick(), quietMs);
    this.timer.unref();
  }

  /** Marks activity (called on every FUSE operation: a boolean store). */
  touch(): void {
    this.active = true;
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** One check; runs every `quietMs` (public so its logic can be tested without a clock). */
  tick(): void {
    if (this.active) {
      this.active = false;
      this.owed = true;
    } else if (this.owed) {
      this.owed = false;
      this.collect();
    }
  }
}
