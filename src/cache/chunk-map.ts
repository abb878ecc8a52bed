/**
 * The persistent chunk map: one bit per chunk of a blob saying "this chunk's uncompressed bytes are
 * in the cache file". Same layout as nydusd's `<blob>.blob.data.chunk_map` (persist_map.rs), so a
 * cache directory is readable by either implementation:
 *
 *   offset 0    u32 LE magic    0x424D4150
 *   offset 4    u32 LE version  1
 *   offset 8    u32 LE magic2   0x434D4150
 *   offset 12   u32 LE all_ready 0x4D4D4150 once every chunk is ready, else 0
 *   offset 16.. reserved up to 4096
 *   offset 4096 bitmap, ceil(chunk_count / 8) bytes; chunk i is bit (1 << (7 - i % 8)) of byte i >> 3
 *
 * Bits are written straight to the file (pwrite of one byte) right after the chunk's data was
 * written, so a process killed at any moment leaves a map that never claims data it did not write.
 * `flush()` fsyncs it for power loss.
 */
import * as fs from 'node:fs';
import { logger } from '../util/log';

const log = logger('chunk-map');

export const MAP_MAGIC = 0x424d4150;
export const MAP_MAGIC2 = 0x434d4150;
export const MAP_ALL_READY = 0x4d4d4150;
export const MAP_HEADER_SIZE = 4096;

export class PersistentChunkMap {
  private readonly bits: Buffer;
  private ready = 0;
  private fd: number;

  private constructor(
    public readonly path: string,
    public readonly chunkCount: number,
    fd: number,
    bits: Buffer,
  ) {
    this.fd = fd;
    this.bits = bits;
    for (let i = 0; i < chunkCount; i++) if (this.isReady(i)) this.ready++;
  }

  /** Opens the map at `path`, creating it (or re-creating an unusable one) for `chunkCount` chunks. */
  static open(path: string, chunkCount: number): PersistentChunkMap {
    const bitmapLen = Math.ceil(chunkCount / 8);
    const size = MAP_HEADER_SIZE + bitmapLen;
    let fd = fs.openSync(path, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o644);
    const st = fs.fstatSync(fd);
    const header = Buffer.alloc(16);
    if (st.size > 0) fs.readSync(fd, header, 0, 16, 0);
    const valid = st.size === size && header.readUInt32LE(0) === MAP_MAGIC && header.readUInt32LE(8) === MAP_MAGIC2 && header.readUInt32LE(4) === 1;
    if (!valid) {
      // A crash between create and header write leaves zeros; a different blob layout leaves a wrong
      // size. Either way the map cannot be trusted, and the data it described is refetched.
      if (st.size > 0) log.warn({ path, size: st.size, expected: size }, 'chunk map unusable, starting empty');
      fs.closeSync(fd);
      fd = fs.openSync(path, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_TRUNC, 0o644);
      fs.ftruncateSync(fd, size);
      fs.fsyncSync(fd);
      const h = Buffer.alloc(16);
      h.writeUInt32LE(MAP_MAGIC, 0);
      h.writeUInt32LE(1, 4);
      h.writeUInt32LE(MAP_MAGIC2, 8);
      h.writeUInt32LE(0, 12);
      fs.writeSync(fd, h, 0, 16, 0);
      fs.fsyncSync(fd);
    }
    const bits = Buffer.alloc(bitmapLen);
    if (bitmapLen > 0) fs.readSync(fd, bits, 0, bitmapLen, MAP_HEADER_SIZE);
    const map = new PersistentChunkMap(path, chunkCount, fd, bits);
    if (valid && map.allReady() && header.readUInt32LE(12) !== MAP_ALL_READY) map.writeAllReady(true);
    return map;
  }

  isReady(index: number): boolean {
    if (index < 0 || index >= this.chunkCount) return false;
    return (this.bits[index >> 3] & (1 << (7 - (index & 7)))) !== 0;
  }

  readyCount(): number {
    return this.ready;
  }

  allReady(): boolean {
    return this.ready === this.chunkCount;
  }

  /** Marks chunk `index` ready; call only after its data is written. */
  setReady(index: number): void {
    this.setBit(index, true);
  }

  /** Forgets chunk `index` (its cached bytes failed verification). */
  clear(index: number): void {
    this.setBit(index, false);
  }

  private setBit(index: number, on: boolean): void {
    if (index < 0 || index >= this.chunkCount || this.fd < 0) return;
    const byte = index >> 3;
    const mask = 1 << (7 - (index & 7));
    const was = (this.bits[byte] & mask) !== 0;
    if (was === on) return;
    const wasAll = this.allReady();
    this.bits[byte] = on ? this.bits[byte] | mask : this.bits[byte] & ~mask;
    this.ready += on ? 1 : -1;
    fs.writeSync(this.fd, this.bits, byte, 1, MAP_HEADER_SIZE + byte);
    if (this.allReady() !== wasAll) this.writeAllReady(this.allReady());
  }

  private writeAllReady(on: boolean): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(on ? MAP_ALL_READY : 0, 0);
    fs.writeSync(this.fd, b, 0, 4, 12);
  }

  flush(): void {
    if (this.fd >= 0) fs.fsyncSync(this.fd);
  }

  close(): void {
    if (this.fd < 0) return;
    this.flush();
    fs.closeSync(this.fd);
    this.fd = -1;
  }
}
