/**
 * The measuring loop the read benchmarks share (bench/read.ts, bench/erofs.ts): one cold `cat` of a
 * file right after the page cache is dropped, then the warm passes over it (the first re-read and
 * the median of the next STEADY_PASSES), appended to a `ReadSeries`.
 *
 * Contract: `coldThenWarm` needs root (it drops the whole page cache); before the cold read it
 * records how many bytes of `resident` (default: the file itself) were still cached, so a report can
 * show the read really started cold; `prepare` runs between dropping the page cache and the cold read
 * (support/free-memory.ts puts free memory in a known state there); `between` runs after the cold
 * read and before the warm passes (a daemon's counters are read there).
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { median, timed } from '../measure';

/** Re-reads after the first one, per round, whose median is the steady warm figure. */
export const STEADY_PASSES = 3;

/** Seconds per round: the cold read, the first re-read, the median of the later re-reads. */
export interface ReadSeries {
  cold: number[];
  first: number[];
  steady: number[];
}

export function readSeries(): ReadSeries {
  return { cold: [], first: [], steady: [] };
}

/** Wall time of `cat FILE > /dev/null`, in seconds. */
export function cat(file: string): number {
  return timed(() => execFileSync('sh', ['-c', 'cat "$1" > /dev/null', 'sh', file], { stdio: 'inherit' }));
}

/** Drops the whole page cache (root only): the only eviction that really happens on every kernel. */
export function dropCaches(): void {
  execFileSync('sync');
  try {
    fs.writeFileSync('/proc/sys/vm/drop_caches', '1');
  } catch (e) {
    throw new Error(`cold reads need root to drop the page cache: /proc/sys/vm/drop_caches: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

/** Bytes of `file` in the page cache (fincore), to show a cold read really starts cold. */
export function residentBytes(file: string): number {
  return Number(execFileSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', file]).toString().trim());
}

/** Times of the first re-read and the median of the next STEADY_PASSES, of a file already read once. */
export function warmPasses(file: string): { first: number; steady: number } {
  const first = cat(file);
  const rest: number[] = [];
  for (let i = 0; i < STEADY_PASSES; i++) rest.push(cat(file));
  return { first, steady: median(rest) };
}

/**
 * One round over `file`: page cache dropped, `prepare()`, the bytes of `resident.file` still cached pushed to
 * `resident.into`, the cold read, `between()`, then the warm passes; the times go into `s`.
 */
export async function coldThenWarm(
  file: string,
  s: ReadSeries,
  opts: { resident?: { file: string; into: number[] }; prepare?: () => Promise<void>; between?: () => Promise<void> } = {},
): Promise<void> {
  dropCaches();
  await opts.prepare?.();
  if (opts.resident) opts.resident.into.push(residentBytes(opts.resident.file));
  s.cold.push(cat(file));
  await opts.between?.();
  const w = warmPasses(file);
  s.first.push(w.first);
  s.steady.push(w.steady);
}
