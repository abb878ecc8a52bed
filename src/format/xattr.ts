/**
 * Inline extended attributes (EROFS ibody xattrs): a 12 B header, then entries
 * `{u8 name_len, u8 name_index, u16 value_size, name suffix, value}`, each padded to 4 bytes.
 * Names are stored as (prefix index, suffix); only the prefixes in XATTR_PREFIXES exist.
 * No shared xattrs are written, and images using them are rejected.
 */
import { FormatError } from './model';
import { XATTR_ENTRY_HEADER_SIZE, XATTR_IBODY_HEADER_SIZE, XATTR_PREFIXES, alignUp } from './layout';

const MAX_ICOUNT = 0xffff;

function splitName(name: string, where: string): [number, Buffer] {
  let best: [number, string] | undefined;
  for (const [index, prefix] of XATTR_PREFIXES) {
    if (name.startsWith(prefix) && (!best || prefix.length > best[1].length)) best = [index, prefix];
  }
  if (!best) throw new FormatError(`xattr ${JSON.stringify(name)} has no EROFS name prefix`, where);
  const suffix = Buffer.from(name.slice(best[1].length), 'utf8');
  const exact = !best[1].endsWith('.');
  if (exact ? suffix.length !== 0 : suffix.length === 0) {
    throw new FormatError(`xattr name ${JSON.stringify(name)} is not valid`, where);
  }
  if (suffix.length > 255) throw new FormatError(`xattr name ${JSON.stringify(name)} is too long`, where);
  return [best[0], suffix];
}

/** The xattr ibody for `xattrs` (empty buffer when there are none); entries sorted by name. */
export function encodeXattrs(xattrs: Map<string, Buffer>, where: string): Buffer {
  if (xattrs.size === 0) return Buffer.alloc(0);
  const parts: Buffer[] = [Buffer.alloc(XATTR_IBODY_HEADER_SIZE)];
  for (const name of [...xattrs.keys()].sort()) {
    const value = xattrs.get(name)!;
    const [index, suffix] = splitName(name, where);
    if (value.length > 0xffff) throw new FormatError(`xattr ${name} value is larger than 65535 bytes`, where);
    const len = XATTR_ENTRY_HEADER_SIZE + suffix.length + value.length;
    const e = Buffer.alloc(alignUp(len, 4));
    e.writeUInt8(suffix.length, 0);
    e.writeUInt8(index, 1);
    e.writeUInt16LE(value.length, 2);
    suffix.copy(e, 4);
    value.copy(e, 4 + suffix.length);
    parts.push(e);
  }
  const body = Buffer.concat(parts);
  if (xattrIcount(body.length) > MAX_ICOUNT) throw new FormatError('xattrs are larger than an inode can hold', where);
  return body;
}

/** i_xattr_icount for an ibody of `size` bytes (0 when there is none). */
export function xattrIcount(size: number): number {
  return size === 0 ? 0 : (size - XATTR_IBODY_HEADER_SIZE) / 4 + 1;
}

/** Bytes of the ibody for an i_xattr_icount. */
export function xattrSize(icount: number): number {
  return icount === 0 ? 0 : XATTR_IBODY_HEADER_SIZE + (icount - 1) * 4;
}

/** Parses the ibody at buf[off, off+size). */
export function decodeXattrs(buf: Buffer, off: number, size: number, where: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  if (size === 0) return out;
  const end = off + size;
  if (end > buf.length) throw new FormatError(`xattrs end at ${end}, past the bootstrap`, where);
  if (buf.readUInt8(off + 4) !== 0) throw new FormatError('shared xattrs are not supported', `${where} xattr header @${off}`);
  let p = off + XATTR_IBODY_HEADER_SIZE;
  while (p < end) {
    if (p + XATTR_ENTRY_HEADER_SIZE > end) throw new FormatError('truncated xattr entry', `${where} xattr @${p}`);
    const nameLen = buf.readUInt8(p);
    const index = buf.readUInt8(p + 1);
    const valueSize = buf.readUInt16LE(p + 2);
    const entryEnd = p + XATTR_ENTRY_HEADER_SIZE + nameLen + valueSize;
    if (entryEnd > end) throw new FormatError('xattr entry runs past the xattr area', `${where} xattr @${p}`);
    const prefix = XATTR_PREFIXES.find(([i]) => i === index)?.[1];
    if (prefix === undefined) throw new FormatError(`unknown xattr name index ${index}`, `${where} xattr @${p}`);
    const nameStart = p + XATTR_ENTRY_HEADER_SIZE;
    const name = prefix + buf.toString('utf8', nameStart, nameStart + nameLen);
    if (out.has(name)) throw new FormatError(`duplicate xattr ${name}`, `${where} xattr @${p}`);
    out.set(name, Buffer.from(buf.subarray(nameStart + nameLen, entryEnd)));
    p = off + alignUp(entryEnd - off, 4);
  }
  return out;
}
