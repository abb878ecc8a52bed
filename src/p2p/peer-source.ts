/**
 * `PeerSource`: the swarm as a ChunkSource, placed before the mirrors in the fetch pipeline.
 *
 * A peer must answer or acknowledge (PENDING: it fetches the range upstream) within
 * `request_timeout_ms`; an acknowledged request may take up to `upstream_timeout_ms`, so an owner
 * waiting on a slow origin is not abandoned (which would send every node to that origin too).
 *
 * The owner of a range is chosen by rendezvous hashing of its first chunk digest (the range key
 * when no digest is given) over this node and the usable live peers:
 *  - another peer owns it: ask that peer once, within `request_timeout_ms`;
 *  - this node owns it: fetch through the local ChunkServer, so this node's own read and the peers
 *    asking for the same range share one upstream fetch.
 * Any failure (no peers, timeout, peer gone, BUSY, NOT_FOUND) rejects with SourceUnavailableError so
 * the pipeline moves on to mirrors and origin (a request lost with a replaced connection is asked
 * again once on the peer's new connection). A peer that timed out sits out `cooldownMs`; a peer whose bytes the pipeline `rejected()` (digest mismatch) is banned for the
 * session. This source never judges bytes: the pipeline verifies every chunk it returns.
 */
import type { BlobRange, ChunkSource, ReadContext } from '../fetch/source';
import { SourceUnavailableError } from '../fetch/source';
import { logger } from '../util/log';
import { PeerChannel, PeerUnavailableError } from './channel';
import { MAX_DIGESTS, MAX_PAYLOAD } from './frames';
import { short } from './membership';
import type { P2PMetrics } from './metrics';
import { ownerOf } from './rendezvous';
import type { ChunkServer } from './server';
import { RangeStore } from './store';

const log = logger('p2p');
/** How many served ranges we remember to attribute a later `rejected()` to the right peer. */
const SERVED_MEMORY = 4096;

export interface PeerSourceOptions {
  selfKey: string;
  livePeers(): Map<string, PeerChannel>;
  server: ChunkServer;
  metrics: P2PMetrics;
  requestTimeoutMs: number;
  /** Limit for a request the owner acknowledged with PENDING (default: requestTimeoutMs). */
  upstreamTimeoutMs?: number;
  /** How long a peer that timed out is left out of ownership. */
  cooldownMs?: number;
}

export class PeerSource implements ChunkSource {
  readonly name = 'peer';
  private readonly banned = new Set<string>();
  private readonly cooling = new Map<string, number>();
  private readonly servedBy = new Map<string, string>();

  constructor(private readonly opts: PeerSourceOptions) {}

  /** Peers currently eligible to own chunks (live, not banned, not cooling down). */
  usablePeers(): Map<string, PeerChannel> {
    const now = Date.now();
    const out = new Map<string, PeerChannel>();
    for (const [k, ch] of this.opts.livePeers()) {
      if (this.banned.has(k)) continue;
      const until = this.cooling.get(k);
      if (until !== undefined && until > now) continue;
      out.set(k, ch);
    }
    return out;
  }

  /** Banned peers (hex keys): they served bytes that failed verification. */
  bannedPeers(): string[] {
    return [...this.banned];
  }

  async read(range: BlobRange, ctx: ReadContext = {}): Promise<Buffer> {
    const digests = ctx.chunkDigests ?? [];
    if (range.length > MAX_PAYLOAD || digests.length > MAX_DIGESTS) {
      throw new SourceUnavailableError(this.name, `range of ${range.length} bytes / ${digests.length} chunks exceeds a frame`);
    }
    const peers = this.usablePeers();
    if (peers.size === 0) throw new SourceUnavailableError(this.name, 'no live peers');
    const rangeKey = RangeStore.key(range.blobId, range.offset, range.length);
    const owner = ownerOf(digests[0] ?? rangeKey, [this.opts.selfKey, ...peers.keys()]);
    const { metrics } = this.opts;

    if (owner === this.opts.selfKey) {
      try {
        const bytes = await this.opts.server.obtain(range, digests);
        this.remember(rangeKey, this.opts.selfKey);
        return bytes;
      } catch (e) {
        throw new SourceUnavailableError(this.name, `fetch as owner failed: ${(e as Error).message}`);
      }
    }

    const start = Date.now();
    const deadline = start + this.opts.requestTimeoutMs;
    const pendingDeadline = start + Math.max(this.opts.upstreamTimeoutMs ?? 0, this.opts.requestTimeoutMs);
    let ch = peers.get(owner as string) as PeerChannel;
    // A peer may have two connections (both dialled at once) and lose one; a request lost with the old
    // one is asked again once on the new one, within the same deadline.
    for (let attempt = 0; ; attempt++) {
      try {
        const bytes = await ch.request(
          { blobId: range.blobId, offset: range.offset, length: range.length, digests },
          Math.max(1, deadline - Date.now()),
          ctx.signal,
          Math.max(1, pendingDeadline - Date.now()),
        );
        metrics.bytesFromPeers += bytes.length;
        metrics.chunksFromPeers++;
        this.remember(rangeKey, owner as string);
        return bytes;
      } catch (e) {
        const reason = e instanceof PeerUnavailableError ? e.reason : 'error';
        const replacement = this.opts.livePeers().get(owner as string);
        if (reason === 'gone' && attempt === 0 && replacement && replacement !== ch && Date.now() < deadline) {
          ch = replacement;
          continue;
        }
        metrics.failures[reason]++;
        // A vanished peer leaves the live set by itself; a slow one sits out for a while.
        if (reason === 'timeout' && !ctx.signal?.aborted) this.cooling.set(owner as string, Date.now() + (this.opts.cooldownMs ?? 30_000));
        // Timeouts, BUSY and lost peers are routine; anything else deserves a look.
        const level = reason === 'error' || reason === 'not_found' ? 'warn' : 'debug';
        log[level]({ peer: short(owner as string), reason, err: (e as Error).message }, 'peer request failed');
        throw e instanceof SourceUnavailableError ? e : new SourceUnavailableError(this.name, (e as Error).message);
      }
    }
  }

  /** The pipeline found that bytes we returned for `range` did not verify: ban whoever sent them. */
  rejected(range: BlobRange): void {
    const key = RangeStore.key(range.blobId, range.offset, range.length);
    const peer = this.servedBy.get(key);
    this.opts.metrics.failures.digest++;
    if (!peer || peer === this.opts.selfKey) return;
    this.banned.add(peer);
    log.error({ peer: short(peer), blob: range.blobId, offset: range.offset }, 'peer served bytes that failed digest verification; banned');
  }

  private remember(rangeKey: string, peer: string): void {
    this.servedBy.delete(rangeKey);
    this.servedBy.set(rangeKey, peer);
    if (this.servedBy.size > SERVED_MEMORY) this.servedBy.delete(this.servedBy.keys().next().value as string);
  }
}
