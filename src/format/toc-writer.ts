/**
 * Writer half of the blob ToC (docs/format.md §16, upstream `storage/src/meta/toc.rs` and the
 * builder's `write_tar_header`): the 512-byte GNU tar header written AFTER each section of a blob
 * (data | header | data | header ...), and the 128-byte ToC entries.
 *
 * Contract: `tarTailHeader(name, size)` returns the header exactly as upstream's `tar` crate makes
 * it (`Header::new_gnu`, path, regular type, size, checksum; every other field as new_gnu leaves
 * it); `encodeTocEntries` returns the entry array; both throw on values that do not fit.
 */
import { createHash } from 'node:crypto';
import { FormatError } from './model';
import { TOC_ENTRY_SIZE } from './toc';

const TAR_HEADER = 512;
/** ToC entry flags by compressor (toc.rs `TocEntryFlags`). */
const TOC_FLAG = { none: 0x1, zstd: 0x2, lz4_block: 0x4 } as const;

export interface TocEntrySpec {
  name: string;
  compressor: keyof typeof TOC_FLAG;
  /** sha256 of the uncompressed section. */
  digest: Buffer;
  compressedOffset: number;
  compressedSize: number;
  uncompressedSize: number;
}

function octal(buf: Buffer, off: number, width: number, value: number, what: string): void {
  const s = value.toString(8).padStart(width - 1, '0');
  if (s.length > width - 1) throw new FormatError(`${value} does not fit ${width - 1} octal digits`, `tar header ${what}`);
  buf.write(s, off, 'latin1');
  buf[off + width - 1] = 0;
}

export function tarTailHeader(name: string, size: number): Buffer {
  const h = Buffer.alloc(TAR_HEADER);
  if (Buffer.byteLength(name) > 99) throw new FormatError(`name ${name} is too long`, 'tar header');
  h.write(name, 0, 'utf8');
  octal(h, 124, 12, size, 'size');
  octal(h, 136, 12, 0, 'mtime'); // new_gnu leaves mtime as "00000000000\0"
  h[156] = 0x30; // regular file
  h.write('ustar  ', 257, 'latin1'); // GNU magic "ustar " + version " \0"
  // Checksum: byte sum with the checksum field counted as spaces, 7 octal digits and NUL.
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  octal(h, 148, 8, sum, 'checksum');
  return h;
}

export function encodeTocEntries(entries: TocEntrySpec[]): Buffer {
  const out = Buffer.alloc(entries.length * TOC_ENTRY_SIZE);
  entries.forEach((e, i) => {
    const p = i * TOC_ENTRY_SIZE;
    const name = Buffer.from(e.name, 'utf8');
    if (name.length > 16) throw new FormatError(`entry name ${e.name} longer than 16 bytes`, 'blob ToC');
    if (e.digest.length !== 32) throw new FormatError(`entry ${e.name} digest of ${e.digest.length} bytes`, 'blob ToC');
    out.writeUInt32LE(TOC_FLAG[e.compressor], p); // reserved1 at p+4 stays 0
    name.copy(out, p + 8);
    e.digest.copy(out, p + 24);
    out.writeBigUInt64LE(BigInt(e.compressedOffset), p + 56);
    out.writeBigUInt64LE(BigInt(e.compressedSize), p + 64);
    out.writeBigUInt64LE(BigInt(e.uncompressedSize), p + 72); // reserved2 (48 B) stays 0
  });
  return out;
}

export function sha256(...parts: Buffer[]): Buffer {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
}
