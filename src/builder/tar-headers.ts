/**
 * Binary-safe PAX records for tar-stream.
 *
 * tar-stream decodes every PAX value as UTF-8, which destroys binary xattr values (GNU tar writes
 * `SCHILY.xattr.security.capability` as raw bytes). We wrap its PAX decoder once: the result is
 * unchanged for every other caller, plus a symbol-keyed map of each record's raw value bytes that
 * the tar source reads. (tar-stream's `exports` map hides headers.js, hence the resolved path.)
 */
import * as path from 'node:path';

export const RAW_PAX: unique symbol = Symbol.for('nydus-ts.rawPax');
export type RawPax = Map<string, Buffer>;

interface HeadersModule {
  decodePax(buf: Buffer): Record<string | symbol, unknown>;
}

let installed = false;

export function installRawPax(): void {
  if (installed) return;
  installed = true;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const headers = require(path.join(path.dirname(require.resolve('tar-stream')), 'headers.js')) as HeadersModule;
  const original = headers.decodePax;
  headers.decodePax = (buf: Buffer) => {
    const result = original(buf);
    result[RAW_PAX] = parseRawPax(buf);
    return result;
  };
}

/** PAX records `LEN key=value\n` with values kept as bytes. Malformed records end the parse. */
export function parseRawPax(buf: Buffer): RawPax {
  const out: RawPax = new Map();
  let off = 0;
  while (off < buf.length) {
    const space = buf.indexOf(0x20, off);
    if (space < 0) break;
    const len = Number(buf.toString('latin1', off, space));
    if (!Number.isSafeInteger(len) || len <= space - off + 1 || off + len > buf.length) break;
    const record = buf.subarray(space + 1, off + len - 1);
    const eq = record.indexOf(0x3d);
    if (eq < 0) break;
    out.set(record.toString('utf8', 0, eq), Buffer.from(record.subarray(eq + 1)));
    off += len;
  }
  return out;
}
