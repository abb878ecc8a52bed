/**
 * Lazy unmount of whatever is visible at a directory: the one way FUSE sessions, nydusd's stale
 * mount cleanup and the snapshotter's daemon manager take a mount down.
 *
 * Contract: `detach(dir)` / `detachSync(dir)` first look in mountinfo and spawn nothing when `dir`
 * is no mountpoint (the usual case before a mount); otherwise they run `umount -l DIR`, then
 * `fusermount3 -uz DIR` (a FUSE mount of another user, or no CAP_SYS_ADMIN). Lazy, so a mount whose
 * daemon is gone (ENOTCONN) or that containers still hold is detached at once and freed with its
 * last user. They resolve true when the top mount at `dir` is gone (or there was none), false when
 * every tool failed; they never throw for a failed unmount.
 */
import { execFile, execFileSync } from 'node:child_process';
import { mountAt, mountAtAsync } from './mount-table';

const TOOLS: [string, string[]][] = [
  ['umount', ['-l']],
  ['fusermount3', ['-uz']],
];
const TOOL_TIMEOUT_MS = 10_000;

export async function detach(dir: string): Promise<boolean> {
  if (!(await mountAtAsync(dir))) return true;
  for (const [cmd, args] of TOOLS) {
    const ok = await new Promise<boolean>((resolve) => execFile(cmd, [...args, dir], { timeout: TOOL_TIMEOUT_MS }, (err) => resolve(!err)));
    if (ok) return true;
  }
  return false;
}

/** The same, blocking: for constructors and callers that cannot wait (only spawns when mounted). */
export function detachSync(dir: string): boolean {
  if (!mountAt(dir)) return true;
  for (const [cmd, args] of TOOLS) {
    try {
      execFileSync(cmd, [...args, dir], { stdio: 'ignore', timeout: TOOL_TIMEOUT_MS });
      return true;
    } catch {
      // Refused, or this tool is missing: try the next one.
    }
  }
  return false;
}
