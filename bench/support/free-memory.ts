/**
 * Free memory as a cold read finds it, on a VM that hands free memory back to its host.
 *
 * With Linux free page reporting (virtio-balloon; /sys/module/page_reporting), a free block of
 * `page_reporting_order` (2 MiB here) is reported to the host about two seconds after it is freed,
 * and the host drops its backing. The guest's next first write to such a block then costs a host
 * fault on top of the guest's own work, invisible to the guest's page-fault counters: it shows up
 * as a slow memcpy. Whoever allocates large folios pays it: the kernel fills the EROFS page cache
 * with 2 MiB folios and the blob cache file's (both modes) with large ones, while FUSE mode's page
 * cache takes 4 KiB pages from smaller free blocks the host never took. A native read pays on the
 * host's side only: the host fills its pages by DMA. So a cold read's time depends on how long memory has been free,
 * and the read benchmarks put every case in the same state before its cold read:
 *  - `settleFreeMemory()`: waits until the host has taken back what was freed (reported bytes stop
 *    growing), the state of a node whose memory has been idle; a no-op without page reporting;
 *  - `warmFreeMemory(mib)`: writes and frees `mib` MiB of 2 MiB pages in a child process right
 *    before the read, so the read's allocations find memory the host still backs (as on bare metal);
 *  - `freshPageCost(mib)`: the first-write time of `mib` MiB of fresh 2 MiB pages in the settled
 *    state and again right after they were freed, the figure the reports quote.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';

const REPORTED = '/sys/module/page_reporting/parameters/reported_kib';
const ORDER = '/sys/module/page_reporting/parameters/page_reporting_order';
/** How long the reported total must stay still to count as settled, and the bound on the wait. */
const QUIET_MS = 2500;
const MAX_WAIT_MS = 30_000;
const POLL_MS = 250;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function readNumber(file: string): number | undefined {
  try {
    const n = Number(fs.readFileSync(file, 'utf8').trim());
    return Number.isFinite(n) ? n : undefined;
  } catch {
    return undefined;
  }
}

/** The size of the blocks the guest reports to its host, in KiB, or undefined without page reporting. */
export function reportedBlockKiB(): number | undefined {
  const order = readNumber(ORDER);
  return readNumber(REPORTED) === undefined || order === undefined ? undefined : 4 << order;
}

/** Waits until the guest has stopped reporting freed memory to the host (at most MAX_WAIT_MS). */
export async function settleFreeMemory(): Promise<void> {
  if (readNumber(REPORTED) === undefined) return;
  const start = Date.now();
  let last = readNumber(REPORTED);
  let stillSince = Date.now();
  while (Date.now() - start < MAX_WAIT_MS) {
    await sleep(POLL_MS);
    const now = readNumber(REPORTED);
    if (now !== last) {
      last = now;
      stillSince = Date.now();
    } else if (Date.now() - stillSince >= QUIET_MS) break;
  }
}

/**
 * Writes `mib` MiB of 2 MiB pages in a child process and frees them: glibc's hugetlb tunable makes
 * its large allocations transparent huge pages. Prints the first and the second write's seconds.
 */
const TOUCH = `const b = Buffer.allocUnsafeSlow(Number(process.argv[1]) << 20);
const t0 = process.hrtime.bigint(); b.fill(1); const t1 = process.hrtime.bigint(); b.fill(2);
const t2 = process.hrtime.bigint();
process.stdout.write(JSON.stringify({ first: Number(t1 - t0) / 1e9, again: Number(t2 - t1) / 1e9 }));`;

function touch(mib: number): { first: number; again: number } {
  const out = execFileSync(process.execPath, ['-e', TOUCH, String(mib)], {
    env: { ...process.env, GLIBC_TUNABLES: 'glibc.malloc.hugetlb=1', MALLOC_MMAP_THRESHOLD_: String(1 << 20) },
  });
  return JSON.parse(out.toString()) as { first: number; again: number };
}

/** Writes and frees `mib` MiB of 2 MiB pages right before a read. */
export function warmFreeMemory(mib: number): void {
  touch(mib);
}

/** First-write seconds of `mib` MiB of fresh 2 MiB pages: after memory settled, and right after being freed. */
export async function freshPageCost(mib: number): Promise<{ settled: number; reused: number; warmWrite: number }> {
  await settleFreeMemory();
  const settled = touch(mib);
  const reused = touch(mib);
  return { settled: settled.first, reused: reused.first, warmWrite: settled.again };
}
