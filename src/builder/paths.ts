/**
 * Entry names from tars and bootstraps, normalised to the components under the image root.
 * Anything that could escape the root is refused rather than cleaned: an absolute name or a `..`
 * component is an error naming the entry.
 */
import { BuildError } from './errors';

/** Components of a tar entry name (`./usr/bin/`, `usr//bin`), `[]` for the root itself. */
export function entryComponents(name: string, where: string): string[] {
  if (name.length === 0) throw new BuildError(where, 'empty entry name');
  if (name.startsWith('/')) throw new BuildError(where, `absolute path '${name}' is not allowed`);
  if (name.includes('\0')) throw new BuildError(where, 'entry name contains a NUL byte');
  const parts: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') throw new BuildError(where, `path '${name}' has a '..' component`);
    if (Buffer.byteLength(part) > 255) throw new BuildError(where, `name component longer than 255 bytes in '${name}'`);
    parts.push(part);
  }
  return parts;
}

