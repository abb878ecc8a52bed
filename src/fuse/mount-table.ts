/**
 * What is mounted at a directory, from this process's /proc/self/mountinfo, without touching the
 * mount itself (a dead FUSE mount answers every stat with ENOTCONN; a live one might be served by
 * the very event loop that asks).
 *
 * Contract: `mountAt(dir)` / `mountAtAsync(dir)` return the visible (last) mount whose mountpoint is
 * exactly `path.resolve(dir)`, or undefined when `dir` is no mountpoint; `mountsBelow(dir)` lists
 * the mountpoints at or below `dir`, deepest first (the order to unmount them in).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface MountEntry {
  /** Filesystem type as mountinfo shows it (`fuse.rafs`, `erofs`, `overlay`). */
  fsType: string;
  /** The mount's device `major:minor` (`0:NN` for FUSE: NN is the connection id under fusectl). */
  device: string;
}

const MOUNTINFO = '/proc/self/mountinfo';

/** Unescapes the octal escapes of mountinfo (`\040` for a space). */
function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

function find(table: string, dir: string): MountEntry | undefined {
  const want = path.resolve(dir);
  let found: MountEntry | undefined;
  for (const line of table.split('\n')) {
    const f = line.split(' ');
    if (f.length < 10 || unescape(f[4]) !== want) continue;
    const sep = f.indexOf('-');
    found = { fsType: sep > 0 ? f[sep + 1] : 'unknown', device: f[2] }; // the last one at a path is the visible one
  }
  return found;
}

export function mountAt(dir: string): MountEntry | undefined {
  return find(fs.readFileSync(MOUNTINFO, 'utf8'), dir);
}

export async function mountAtAsync(dir: string): Promise<MountEntry | undefined> {
  return find(await fs.promises.readFile(MOUNTINFO, 'utf8'), dir);
}

export function mountsBelow(dir: string): string[] {
  const top = path.resolve(dir);
  return fs
    .readFileSync(MOUNTINFO, 'utf8')
    .split('\n')
    .map((line) => line.split(' '))
    .filter((f) => f.length >= 10)
    .map((f) => unescape(f[4]))
    .filter((m) => m === top || m.startsWith(`${top}/`))
    .sort((a, b) => b.length - a.length);
}
