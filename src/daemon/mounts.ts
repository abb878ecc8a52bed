/**
 * Mount-table helpers: find out whether a directory is a mountpoint, and clean up the dead FUSE
 * mount a killed daemon leaves behind ("Transport endpoint is not connected") before mounting again.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { logger } from '../util/log';

const log = logger('mounts');

/** Unescapes the octal escapes of /proc/self/mountinfo (`\040` for a space). */
function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

export function mountFsType(dir: string): string | undefined {
  const want = path.resolve(dir);
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const f = line.split(' ');
    if (f.length < 10 || unescape(f[4]) !== want) continue;
    const sep = f.indexOf('-');
    return sep > 0 ? f[sep + 1] : 'unknown';
  }
  return undefined;
}

/**
 * If `dir` holds a FUSE mount whose daemon is gone, detach it. A live mount (one that answers
 * stat) is left alone and reported, since mounting over it would hide it.
 */
export function cleanStaleMount(dir: string): 'none' | 'cleaned' | 'live' {
  const type = mountFsType(dir);
  if (!type) return 'none';
  try {
    fs.statSync(dir);
    if (!type.startsWith('fuse')) return 'live';
    fs.readdirSync(dir);
    return 'live';
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'ENOTCONN' && code !== 'ECONNABORTED' && code !== 'EIO') return 'live';
  }
  log.warn({ mountpoint: dir }, 'cleaning a stale FUSE mount left by a dead daemon');
  for (const [cmd, args] of [['fusermount', ['-uz', dir]], ['umount', ['-l', dir]]] as const) {
    try {
      execFileSync(cmd, [...args], { stdio: 'ignore', timeout: 10_000 });
      if (!mountFsType(dir)) return 'cleaned';
    } catch {
      /* try the next tool */
    }
  }
  if (mountFsType(dir)) throw new Error(`${dir}: stale FUSE mount could not be removed`);
  return 'cleaned';
}
