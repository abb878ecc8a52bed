/**
 * GNU sparse format 1.0 (what `tar --sparse --format=posix` writes): the entry data starts with a
 * decimal map (`count\n` then `offset\nlength\n` pairs) padded to 512 bytes, followed by the data
 * segments back to back. Holes become zeros in the chunk stream (and dedup to one zero chunk).
 */
import { BuildError } from './errors';
import { FileChunker } from './file-chunker';

const MAX_MAP_TEXT = 1 << 20;

export class SparseReader {
  private mapText = '';
  private numbers: number[] | null = null;
  private skip = 0;
  private segments: Array<[number, number]> = [];
  private seg = 0;
  private segLeft = 0;
  private pos = 0;
  private headerBytes = 0;

  constructor(
    private readonly chunker: FileChunker,
    private readonly realSize: number,
    private readonly where: string,
  ) {}

  push(buf: Buffer): void {
    let off = 0;
    while (off < buf.length && !this.numbers) {
      const nl = buf.indexOf(0x0a, off);
      const end = nl < 0 ? buf.length : nl + 1;
      this.mapText += buf.toString('latin1', off, end);
      this.headerBytes += end - off;
      off = end;
      if (this.mapText.length > MAX_MAP_TEXT) throw new BuildError(this.where, 'GNU sparse map too large');
      if (nl >= 0) this.parseMap();
    }
    if (this.skip > 0) {
      const n = Math.min(this.skip, buf.length - off);
      this.skip -= n;
      off += n;
    }
    while (off < buf.length) {
      if (this.segLeft === 0) this.nextSegment();
      const n = Math.min(this.segLeft, buf.length - off);
      this.chunker.push(buf.subarray(off, off + n));
      this.pos += n;
      this.segLeft -= n;
      off += n;
    }
  }

  end(): void {
    if (!this.numbers) throw new BuildError(this.where, 'GNU sparse map is truncated');
    if (this.segLeft > 0 || this.seg < this.segments.length && this.segments.slice(this.seg).some(([, l]) => l > 0)) {
      throw new BuildError(this.where, 'GNU sparse data is shorter than its map');
    }
    this.fill(this.realSize);
  }

  private parseMap(): void {
    const lines = this.mapText.split('\n');
    lines.pop();
    const count = Number(lines[0]);
    if (!/^\d+$/.test(lines[0]) || count > MAX_MAP_TEXT) throw new BuildError(this.where, 'bad GNU sparse map count');
    if (lines.length < 1 + 2 * count) return;
    const nums = lines.slice(1, 1 + 2 * count).map((l) => {
      if (!/^\d+$/.test(l)) throw new BuildError(this.where, 'bad GNU sparse map entry');
      return Number(l);
    });
    let last = 0;
    for (let i = 0; i < count; i++) {
      const [o, l] = [nums[2 * i], nums[2 * i + 1]];
      if (o < last || o + l > this.realSize) throw new BuildError(this.where, 'GNU sparse map entries overlap or exceed the real size');
      last = o + l;
      this.segments.push([o, l]);
    }
    this.numbers = nums;
    this.skip = (512 - (this.headerBytes % 512)) % 512;
  }

  private nextSegment(): void {
    while (this.seg < this.segments.length && this.segments[this.seg][1] === 0) this.seg++;
    if (this.seg >= this.segments.length) throw new BuildError(this.where, 'GNU sparse data is longer than its map');
    const [o, l] = this.segments[this.seg++];
    this.fill(o);
    this.segLeft = l;
  }

  private fill(to: number): void {
    if (to > this.pos) this.chunker.pushZeros(to - this.pos);
    this.pos = Math.max(this.pos, to);
  }
}
