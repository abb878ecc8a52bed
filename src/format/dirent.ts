/**
 * Directory data: EROFS dirent blocks. Each 4 KiB block holds an array of 12 B dirents followed by
 * their names; `nameoff` is relative to the block and the first dirent's nameoff / 12 is the entry
 * count. A name ends at the next name's offset, or at the block end (or the directory size in the
 * last block); trailing NULs are padding. Entries (with `.` and `..`) are sorted by name bytes
 * across the whole directory, because the kernel looks names up by binary search.
 */
import { FormatError } from './model';
import { BLOCK_SIZE, DIRENT, DIRENT_SIZE, MAX_NAME } from './layout';

export interface DirEntry {
  name: Buffer;
  nid: number;
  fileType: number;
  /** Parsed entries: byte offset of the dirent in the bootstrap (for error messages). */
  at?: number;
}

/** Entry counts per block for sorted names, and the directory's i_size. */
export function planDirBlocks(names: Buffer[]): { counts: number[]; size: number } {
  const counts: number[] = [];
  let n = 0;
  let used = 0;
  for (const name of names) {
    if (used + DIRENT_SIZE + name.length > BLOCK_SIZE) {
      counts.push(n);
      n = 0;
      used = 0;
    }
    n++;
    used += DIRENT_SIZE + name.length;
  }
  counts.push(n);
  return { counts, size: (counts.length - 1) * BLOCK_SIZE + used };
}

/** Writes the directory data (`size` bytes, blocks contiguous) for sorted entries. */
export function renderDir(entries: DirEntry[], counts: number[], size: number): Buffer {
  const out = Buffer.alloc(size);
  let e = 0;
  for (let b = 0; b < counts.length; b++) {
    const base = b * BLOCK_SIZE;
    let nameoff = counts[b] * DIRENT_SIZE;
    for (let i = 0; i < counts[b]; i++, e++) {
      const d = base + i * DIRENT_SIZE;
      out.writeBigUInt64LE(BigInt(entries[e].nid), d + DIRENT.nid);
      out.writeUInt16LE(nameoff, d + DIRENT.nameoff);
      out.writeUInt8(entries[e].fileType, d + DIRENT.fileType);
      entries[e].name.copy(out, base + nameoff);
      nameoff += entries[e].name.length;
    }
  }
  return out;
}

/**
 * Parses directory data. `block(i)` returns block i's bytes (the last one may be short: the
 * directory size decides) and `blockAt(i)` its byte offset in the bootstrap; `label` names the
 * directory in errors.
 */
export function parseDir(size: number, block: (i: number) => Buffer, blockAt: (i: number) => number, label: string): DirEntry[] {
  const out: DirEntry[] = [];
  const nblocks = Math.ceil(size / BLOCK_SIZE);
  for (let b = 0; b < nblocks; b++) {
    const data = block(b);
    const base = blockAt(b);
    const where = (d = 0): string => `${label} block ${b} dirent @${base + d}`;
    const end = Math.min(BLOCK_SIZE, size - b * BLOCK_SIZE);
    if (end < DIRENT_SIZE) throw new FormatError('directory block too small for a dirent', where());
    const first = data.readUInt16LE(DIRENT.nameoff);
    if (first < DIRENT_SIZE || first % DIRENT_SIZE !== 0 || first >= end) {
      throw new FormatError(`bad first nameoff ${first}`, where());
    }
    const count = first / DIRENT_SIZE;
    for (let i = 0; i < count; i++) {
      const d = i * DIRENT_SIZE;
      const nameoff = data.readUInt16LE(d + DIRENT.nameoff);
      const next = i + 1 < count ? data.readUInt16LE(d + DIRENT_SIZE + DIRENT.nameoff) : end;
      if (nameoff < first || next > end || next <= nameoff) {
        throw new FormatError(`bad nameoff ${nameoff}`, where(d));
      }
      let nameEnd = next;
      // Only the last name of a block may carry NUL padding.
      if (i + 1 === count) while (nameEnd > nameoff && data[nameEnd - 1] === 0) nameEnd--;
      const name = Buffer.from(data.subarray(nameoff, nameEnd));
      if (name.length === 0 || name.length > MAX_NAME) throw new FormatError(`bad name length ${name.length}`, where(d));
      const nid = data.readBigUInt64LE(d + DIRENT.nid);
      if (nid > BigInt(Number.MAX_SAFE_INTEGER)) throw new FormatError(`nid ${nid} out of range`, where(d));
      out.push({ name, nid: Number(nid), fileType: data.readUInt8(d + DIRENT.fileType), at: base + d });
    }
  }
  return out;
}
