/**
 * Per-source fetch metrics: requests, bytes, errors, digest failures and latency. The pipeline
 * records every `ChunkSource.read` it makes; sources that do work of their own (mirror health
 * checks, peer lookups) may record into the same object under their own name.
 *
 * Latency buckets follow nydusd's `read_cumulative_latency_millis_dist` idea: counts per upper bound.
 */

/** Upper bounds (ms) of the latency histogram; the last bucket is open-ended. */
export const LATENCY_BUCKETS_MS = [1, 5, 20, 50, 100, 500, 1000, 5000];

export interface SourceStats {
  requests: number;
  /** Bytes received from the source (compressed, as sent). */
  bytes: number;
  /** Failed reads (transport, HTTP status, short body); `unavailable` answers are not errors. */
  errors: number;
  /** Answers refused because a chunk's digest did not match. */
  digestFailures: number;
  /** Reads skipped because the source said it was unavailable. */
  unavailable: number;
  latencyMsTotal: number;
  /** Counts per bucket of `LATENCY_BUCKETS_MS` plus one overflow bucket. */
  latencyDist: number[];
}

export interface ReadOutcome {
  bytes?: number;
  ms: number;
  error?: boolean;
  unavailable?: boolean;
}

export class FetchMetrics {
  private readonly sources = new Map<string, SourceStats>();

  private entry(name: string): SourceStats {
    let s = this.sources.get(name);
    if (!s) {
      s = { requests: 0, bytes: 0, errors: 0, digestFailures: 0, unavailable: 0, latencyMsTotal: 0, latencyDist: new Array(LATENCY_BUCKETS_MS.length + 1).fill(0) };
      this.sources.set(name, s);
    }
    return s;
  }

  /** Records one read attempt against `source`. */
  record(source: string, o: ReadOutcome): void {
    const s = this.entry(source);
    if (o.unavailable) {
      s.unavailable++;
      return;
    }
    s.requests++;
    s.bytes += o.bytes ?? 0;
    if (o.error) s.errors++;
    s.latencyMsTotal += o.ms;
    let b = LATENCY_BUCKETS_MS.findIndex((ub) => o.ms <= ub);
    if (b < 0) b = LATENCY_BUCKETS_MS.length;
    s.latencyDist[b]++;
  }

  digestFailure(source: string, count = 1): void {
    this.entry(source).digestFailures += count;
  }

  /** A copy of the stats, by source name. */
  snapshot(): Record<string, SourceStats> {
    const out: Record<string, SourceStats> = {};
    for (const [k, v] of this.sources) out[k] = { ...v, latencyDist: [...v.latencyDist] };
    return out;
  }

  totals(): SourceStats {
    const t = this.entry('\0total');
    this.sources.delete('\0total');
    for (const v of this.sources.values()) addStats(t, v);
    return t;
  }
}

/** Adds the counters of `s` into `t` (totals across sources, or across mounted instances). */
export function addStats(t: SourceStats, s: SourceStats): void {
  t.requests += s.requests;
  t.bytes += s.bytes;
  t.errors += s.errors;
  t.digestFailures += s.digestFailures;
  t.unavailable += s.unavailable;
  t.latencyMsTotal += s.latencyMsTotal;
  s.latencyDist.forEach((c, i) => (t.latencyDist[i] += c));
}
