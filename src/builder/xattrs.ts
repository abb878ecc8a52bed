/**
 * Extended attributes of a directory tree. Node has no xattr API, so one `getfattr -R` run (Debian
 * package `attr`) dumps the whole tree in hex; this parses that dump into path -> name -> value.
 */
import { spawnSync } from 'node:child_process';
import { BuildError } from './errors';

export type XattrMap = Map<string, Map<string, Buffer>>;

export function readTreeXattrs(root: string): XattrMap {
  const res = spawnSync('getfattr', ['-R', '-P', '-h', '-d', '-m', '-', '-e', 'hex', '--absolute-names', root], {
    maxBuffer: 1 << 30,
  });
  if (res.error) {
    const missing = (res.error as NodeJS.ErrnoException).code === 'ENOENT';
    throw new BuildError(root, missing ? 'getfattr is needed to read xattrs (apt-get install attr)' : res.error.message);
  }
  // getfattr exits 1 when some file had no readable xattrs but still prints the rest.
  if (res.status !== 0 && res.status !== 1) throw new BuildError(root, `getfattr failed: ${res.stderr.toString().trim()}`);
  return parseGetfattr(res.stdout);
}

/** Parses `getfattr -d -e hex` output; file names are octal-escaped bytes. */
export function parseGetfattr(out: Buffer): XattrMap {
  const result: XattrMap = new Map();
  let current: Map<string, Buffer> | null = null;
  for (const line of out.toString('latin1').split('\n')) {
    if (line.startsWith('# file: ')) {
      current = new Map();
      result.set(unescapeName(line.slice(8)), current);
    } else if (current && line.length > 0 && !line.startsWith('#')) {
      const eq = line.indexOf('=');
      const name = eq < 0 ? line : line.slice(0, eq);
      const value = eq < 0 ? '' : line.slice(eq + 1);
      current.set(Buffer.from(name, 'latin1').toString('utf8'), decodeValue(value));
    }
  }
  return result;
}

function decodeValue(v: string): Buffer {
  if (v.startsWith('0x')) return Buffer.from(v.slice(2), 'hex');
  if (v.startsWith('0s')) return Buffer.from(v.slice(2), 'base64');
  if (v.startsWith('"') && v.endsWith('"')) return Buffer.from(unescapeName(v.slice(1, -1)), 'utf8');
  return Buffer.alloc(0);
}

function unescapeName(s: string): string {
  const bytes: number[] = [];
  for (let i = 0; i < s.length; i++) {
    if (s[i] === '\\' && /^[0-7]{3}$/.test(s.slice(i + 1, i + 4))) {
      bytes.push(parseInt(s.slice(i + 1, i + 4), 8));
      i += 3;
    } else if (s[i] === '\\' && s[i + 1] === '\\') {
      bytes.push(0x5c);
      i += 1;
    } else {
      bytes.push(s.charCodeAt(i) & 0xff);
    }
  }
  return Buffer.from(bytes).toString('utf8');
}
