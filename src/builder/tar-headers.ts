/**
 * Hooks into tar-stream's header decoding, installed once:
 *
 * - Binary-safe PAX records. tar-stream decodes every PAX value as UTF-8, which destroys binary
 *   xattr values (GNU tar writes `SCHILY.xattr.security.capability` as raw bytes). The decoded
 *   object is unchanged for every other caller, plus a symbol-keyed map of each record's raw bytes.
 * - Header validation. A size field in an invalid base-256 form decodes to null, and a directory
 *   with a nonzero size gets a data stream that never ends; tar-stream would wait forever on
 *   both. We reject such headers so a corrupt tar is an error, never a hang.
 *
 * (tar-stream's `exports` map hides headers.js, hence the resolved path.)
 */
import * as path from 'node:path';

export const RAW_PAX: unique symbol = Symbol.for('nydus-ts.rawPax');
export type RawPax = Map<string, Buffer>;

interface HeadersModule {
  decodePax(buf: Buffer): Record<string | symbol, unknown>;
  decode(buf: Buffer, ...rest: unknown[]): { size: unknown; type: unknown } | null;
}

let installed = false;

export function installTarHeaderHooks(): void {
  if (installed) return;
  installed = true;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const headers = require(path.join(path.dirname(require.resolve('tar-stream')), 'headers.js')) as HeadersModule;
  const decodePax = headers.decodePax;
  headers.decodePax = (buf: Buffer) => {
    const result = decodePax(buf);
    result[RAW_PAX] = parseRawPax(buf);
    return result;
  };
  const decode = headers.decode;
  headers.decode = (buf: Buffer, ...rest: unknown[]) => {
    const h = decode(buf, ...rest);
    if (h && !(typeof h.size === 'number' && Number.isSafeInteger(h.size) && h.size >= 0)) {
      throw new Error(`invalid size field in tar header (${String(h.size)})`);
    }
    // tar-stream never ends the data stream of a directory entry that claims data.
    if (h && h.type === 'directory' && h.size !== 0) throw new Error(`directory entry with a size of ${String(h.size)}`);
    return h;
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
