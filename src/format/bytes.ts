/**
 * Bounded little-endian reads every RAFS decoder shares. Contract: `u64` returns a safe integer or
 * throws FormatError naming the value, the structure and the offset; `u53` is for a field already
 * checked that way; `within` says whether `size` bytes at `off` lie inside the buffer.
 */
import { FormatError } from './model';

/** A little-endian u64 that must be a safe integer; read as two halves (no BigInt per value: a chunk table has one per chunk). */
export function u64(buf: Buffer, off: number, where: string): number {
  const hi = buf.readUInt32LE(off + 4);
  if (hi > 0x1fffff) throw new FormatError(`value ${buf.readBigUInt64LE(off)} too large`, `${where} @${off}`);
  return hi * 0x1_0000_0000 + buf.readUInt32LE(off);
}

/** A little-endian u64 already known to be a safe integer. */
export function u53(buf: Buffer, off: number): number {
  return buf.readUInt32LE(off + 4) * 0x1_0000_0000 + buf.readUInt32LE(off);
}

export function within(buf: Buffer, off: number, size: number): boolean {
  return Number.isSafeInteger(off) && off >= 0 && size >= 0 && off + size <= buf.length;
}
