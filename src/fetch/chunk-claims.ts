/**
 * Who is fetching which chunk, and which chunks failed verification from every source: the state
 * the fetch stages share (in-flight dedup, amplification, delivery).
 *
 * A chunk is claimed by the one read that will fetch it; later reads get the same promise. The
 * claim is resolved as soon as its bytes are verified and released only after they are in the cache,
 * so a read arriving in between joins it instead of fetching again. A chunk every source answered
 * wrongly is poisoned: reads of it fail at once with the same error for POISON_HOLD_MS.
 */
import type { ChunkInfo } from '../format/model';

/**
 * A chunk every source answered wrongly fails fast for this long: the kernel retries a failed
 * readahead page by page, and those retries should not hammer the backend or recount the failure.
 */
export const POISON_HOLD_MS = 5000;

/** A chunk no source delivered correctly; the FUSE layer answers EIO. */
export class ChunkFetchError extends Error {
  readonly code = 'EIO';
  constructor(
    message: string,
    public readonly digestMismatch: boolean,
  ) {
    super(message);
    this.name = 'ChunkFetchError';
  }
}

interface Deferred {
  promise: Promise<Buffer>;
  resolve(b: Buffer): void;
  reject(e: Error): void;
}

function deferred(): Deferred {
  let resolve!: (b: Buffer) => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<Buffer>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // Amplified chunks may have no waiter; their failure must not become an unhandled rejection.
  promise.catch(() => undefined);
  return { promise, resolve, reject };
}

const keyOf = (blobId: string, c: ChunkInfo): string => `${blobId}:${c.index}`;

export class ChunkClaims {
  private readonly inflight = new Map<string, Deferred>();
  private readonly poisoned = new Map<string, { until: number; error: ChunkFetchError }>();

  /** The error a poisoned chunk fails with, while its hold lasts. */
  poison(blobId: string, c: ChunkInfo): ChunkFetchError | undefined {
    const bad = this.poisoned.get(keyOf(blobId, c));
    return bad && bad.until > Date.now() ? bad.error : undefined;
  }

  /** The bytes of a chunk another read is fetching. */
  running(blobId: string, c: ChunkInfo): Promise<Buffer> | undefined {
    return this.inflight.get(keyOf(blobId, c))?.promise;
  }

  /** In flight, or failed verification (held or not): amplification leaves such chunks alone. */
  busy(blobId: string, c: ChunkInfo): boolean {
    const k = keyOf(blobId, c);
    return this.inflight.has(k) || this.poisoned.has(k);
  }

  /** Claims a chunk for fetching; the promise settles with `deliver` or `fail`. */
  claim(blobId: string, c: ChunkInfo): Promise<Buffer> {
    const d = deferred();
    this.inflight.set(keyOf(blobId, c), d);
    return d.promise;
  }

  /**
   * Hands verified bytes to the waiters; the claim stays until the returned function is called
   * (its bytes are cached now, or could not be).
   */
  deliver(blobId: string, c: ChunkInfo, data: Buffer): () => void {
    const k = keyOf(blobId, c);
    const d = this.inflight.get(k);
    this.poisoned.delete(k);
    d?.resolve(data);
    return () => {
      if (this.inflight.get(k) === d) this.inflight.delete(k);
    };
  }

  /** Fails a claim; `poison` holds the failure (every answer was wrong). */
  fail(blobId: string, c: ChunkInfo, err: ChunkFetchError, poison = false): void {
    const k = keyOf(blobId, c);
    if (poison) this.poisoned.set(k, { until: Date.now() + POISON_HOLD_MS, error: err });
    const d = this.inflight.get(k);
    this.inflight.delete(k);
    d?.reject(err);
  }
}
