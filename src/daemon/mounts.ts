/**
 * Cleans up the dead FUSE mount a killed daemon leaves behind ("Transport endpoint is not
 * connected") before nydusd mounts there again (the mount table is fuse/mount-table.ts, the
 * unmount fuse/unmount.ts).
 */
import * as fs from 'node:fs';
import { mountAt } from '../fuse/mount-table';
import { detachSync } from '../fuse/unmount';
import { logger } from '../util/log';

const log = logger('mounts');

/**
 * If `dir` holds a FUSE mount whose daemon is gone, detach it. A live mount (one that answers
 * statfs) is left alone and reported, since mounting over it would hide it. Blocking, but it reads
 * only mountinfo unless something is mounted at `dir`.
 */
export function cleanStaleMount(dir: string): 'none' | 'cleaned' | 'live' {
  const type = mountAt(dir)?.fsType;
  if (!type) return 'none';
  try {
    fs.statSync(dir);
    if (!type.startsWith('fuse')) return 'live';
    // STATFS always reaches the daemon: stat may be answered from the attribute cache and a
    // directory listing from the kernel's (zero-message OPENDIR, FOPEN_CACHE_DIR).
    fs.statfsSync(dir);
    return 'live';
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'ENOTCONN' && code !== 'ECONNABORTED' && code !== 'EIO') return 'live';
  }
  log.warn({ mountpoint: dir }, 'cleaning a stale FUSE mount left by a dead daemon');
  if (!detachSync(dir) || mountAt(dir)?.fsType.startsWith('fuse')) throw new Error(`${dir}: stale FUSE mount could not be removed`);
  return 'cleaned';
}
