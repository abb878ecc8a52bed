/**
 * Bytes this node fetched for the swarm, kept to answer peers: a byte-bounded LRU of blob ranges
 * keyed by (blob, offset, length). It only ever holds bytes that came from the verifying upstream
 * path (see server.ts), so it is a cache of good data, not a place where trust is decided.
 */
export class RangeStore {
  private readonly map = new Map<string, Buffer>();
  private bytes = 0;

  constructor(private readonly maxBytes: number) {}

  static key(blobId: string, offset: number, length: number): string {
    return `${blobId}:${offset}:${length}`;
  }

  get(key: string): Buffer | undefined {
    const b = this.map.get(key);
    if (b) {
      // Re-insert to mark as most recently used.
      this.map.delete(key);
      this.map.set(key, b);
    }
    return b;
  }

  put(key: string, data: Buffer): void {
    if (data.length > this.maxBytes) return;
    const old = this.map.get(key);
    if (old) {
      this.bytes -= old.length;
      this.map.delete(key);
    }
    this.map.set(key, data);
    this.bytes += data.length;
    for (const [k, v] of this.map) {
      if (this.bytes <= this.maxBytes) break;
      this.map.delete(k);
      this.bytes -= v.length;
    }
  }

  get size(): number {
    return this.bytes;
  }
}
