/**
 * One peer connection speaking the frame protocol (frames.ts) in both directions: this node's
 * requests to the peer and the peer's requests to this node.
 *
 * Contract:
 *  - Handshake: the initiator sends its HELLO first; the responder sends its own only after the
 *    initiator's verified, so a peer without the secret gets no byte of ours. Until the peer's HELLO
 *    verified, any other frame, a wrong proof, a bad version or a malformed frame closes the
 *    connection, and so does silence beyond `helloTimeoutMs`; `closeError` is then a
 *    HandshakeError naming why (for the refusal counters). Nothing is served or requested before.
 *  - `ready` resolves once the peer's HELLO verified.
 *  - `request` keeps at most min(our maxInflight, the peer's) requests in flight; extra callers
 *    wait for a slot. Whatever happens (slot wait, slow answer, peer gone, BUSY/NOT_FOUND/ERROR) it
 *    settles within `timeoutMs`, rejecting with SourceUnavailableError, unless the peer said
 *    PENDING (it is fetching the range upstream) in time: then the limit becomes
 *    `pendingTimeoutMs` from the start, as long as the peer keeps repeating PENDING (every
 *    PENDING_HEARTBEAT_MS); silence longer than max(timeoutMs, 3 heartbeats) drops it. A
 *    timed-out request is CANCELled. It resolves only with
 *    exactly `length` bytes (never checked for content here).
 *  - Serving, a request that is not answered at once is acknowledged with PENDING, repeated as a
 *    heartbeat, so a peer that waits on its own upstream is not mistaken for a dead one.
 *  - Incoming requests beyond our advertised maxInflight, or beyond the node-wide serve limit,
 *    are answered BUSY at once instead of queued (load shedding).
 *  - Writes honour backpressure: a frame is written only after the previous write drained.
 */
import { timingSafeEqual } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { SourceUnavailableError } from '../fetch/source';
import {
  encodeFrame, Frame, FrameReader, FrameType, MAX_FRAME, PROTOCOL_VERSION, ProtocolError, Request, Status,
} from './frames';
import type { RefusalReason } from './metrics';

/** While a served request is in progress, PENDING is repeated this often (liveness heartbeat). */
export const PENDING_HEARTBEAT_MS = 100;

/** Node-wide bound on concurrent serves, shared by all channels. */
export interface ServeLimiter {
  tryAcquire(): boolean;
  release(): void;
}

export class CountingLimiter implements ServeLimiter {
  private active = 0;
  constructor(private readonly max: number) {}
  tryAcquire(): boolean {
    if (this.active >= this.max) return false;
    this.active++;
    return true;
  }
  release(): void {
    this.active--;
  }
}

/** Answers a peer's request with the bytes of the range; rejecting with NotFoundError answers NOT_FOUND. */
export type RequestHandler = (req: Request, signal: AbortSignal) => Promise<Buffer>;

export class NotFoundError extends Error {}

/** Why a peer request failed, for metrics; the error still is a SourceUnavailableError. */
export type PeerFailureReason = 'timeout' | 'busy' | 'not_found' | 'gone' | 'error';

export class PeerUnavailableError extends SourceUnavailableError {
  constructor(peer: string, readonly reason: PeerFailureReason, detail: string) {
    super('peer', `${peer}: ${detail}`);
  }
}

/** The peer failed the handshake; `reason` is the refusal counter it goes to. */
export class HandshakeError extends ProtocolError {
  constructor(readonly reason: Exclude<RefusalReason, 'allowlist'>, detail: string) {
    super(detail);
    this.name = 'HandshakeError';
  }
}

export interface ChannelOptions {
  /** Name of the peer for errors and logs (short hex key). */
  peer: string;
  maxInflight: number;
  /** This side dialled the connection: it sends HELLO first. */
  isInitiator: boolean;
  /** The peer's HELLO must have verified within this long, else the connection is closed. */
  helloTimeoutMs: number;
  proofToSend: Buffer;
  proofExpected: Buffer;
  handler?: RequestHandler;
  limiter: ServeLimiter;
}

interface Pending {
  resolve(b: Buffer): void;
  reject(e: Error): void;
  /** The peer acknowledged with PENDING. */
  working(): void;
  length: number;
}

export class PeerChannel extends EventEmitter {
  readonly ready: Promise<void>;
  closed = false;
  /** Why the connection was closed by this side (protocol violation), if it was. */
  closeError?: Error;
  private readonly reader = new FrameReader();
  private readonly pending = new Map<number, Pending>();
  private readonly serving = new Map<number, AbortController>();
  private remoteMaxInflight = 1;
  private nextId = 1;
  private inflight = 0;
  private readonly slotWaiters: (() => void)[] = [];
  private writeChain: Promise<void> = Promise.resolve();
  /** The peer's HELLO verified: from here on every frame type is accepted. */
  private verified = false;
  private readonly helloTimer: NodeJS.Timeout;
  private markReady!: () => void;

  constructor(private readonly socket: Duplex, private readonly opts: ChannelOptions) {
    super();
    this.ready = new Promise<void>((resolve, reject) => {
      this.markReady = resolve;
      this.once('close', () => reject(new SourceUnavailableError('peer', `${opts.peer} closed before HELLO`)));
    });
    this.ready.catch(() => undefined);
    this.helloTimer = setTimeout(() => {
      this.close(new HandshakeError('no_hello', `${opts.peer} sent no valid HELLO within ${opts.helloTimeoutMs} ms`));
    }, opts.helloTimeoutMs);
    this.helloTimer.unref();
    socket.on('data', (d: Buffer) => this.onData(d));
    socket.on('error', () => this.close());
    socket.on('close', () => this.close());
    if (opts.isInitiator) this.sendHello();
  }

  private sendHello(): void {
    this.write(encodeFrame({
      type: FrameType.Hello, version: PROTOCOL_VERSION, maxInflight: this.opts.maxInflight, maxFrame: MAX_FRAME, proof: this.opts.proofToSend,
    }));
  }

  /** Asks the peer for a blob range; see the class contract. */
  async request(req: Omit<Request, 'type' | 'reqId'>, timeoutMs: number, signal?: AbortSignal, pendingTimeoutMs = timeoutMs): Promise<Buffer> {
    const start = Date.now();
    const deadline = start + timeoutMs;
    const unavailable = (why: string, reason: PeerFailureReason = 'gone') => new PeerUnavailableError(this.opts.peer, reason, why);
    await this.acquireSlot(deadline, signal, unavailable);
    const reqId = this.nextId;
    this.nextId = this.nextId >= 0xffffffff ? 1 : this.nextId + 1;
    try {
      return await new Promise<Buffer>((resolve, reject) => {
        // Each arming of the timer gets a number; a firing that is no longer the latest does nothing.
        let armed = 0;
        let timer: NodeJS.Timeout | undefined;
        const arm = (ms: number, why: string) => {
          clearTimeout(timer);
          const mine = ++armed;
          // The verdict waits one loop turn (setImmediate runs after this turn's socket reads): if this
          // process's own event loop stalled, frames the peer sent meanwhile are read before it is
          // judged silent, instead of a stall here being taken for a dead peer.
          timer = setTimeout(() => setImmediate(() => mine === armed && cancel(why, 'timeout')), Math.max(1, ms));
        };
        const disarm = () => {
          clearTimeout(timer);
          armed++;
        };
        const fail = (e: Error) => {
          disarm();
          signal?.removeEventListener('abort', onAbort);
          this.pending.delete(reqId);
          reject(e);
        };
        const cancel = (why: string, reason: PeerFailureReason) => {
          fail(unavailable(why, reason));
          if (!this.closed) this.write(encodeFrame({ type: FrameType.Cancel, reqId }));
        };
        const onAbort = () => cancel('aborted', 'error');
        arm(deadline - Date.now(), `no answer within ${timeoutMs} ms`);
        signal?.addEventListener('abort', onAbort, { once: true });
        this.pending.set(reqId, {
          length: req.length,
          working: () => {
            if (pendingTimeoutMs <= timeoutMs) return;
            // Each PENDING (repeated as a heartbeat while the owner works) proves it is alive; a
            // killed or frozen owner goes silent and is dropped within the answer limit.
            const cap = start + pendingTimeoutMs;
            const silent = Date.now() + Math.max(timeoutMs, 3 * PENDING_HEARTBEAT_MS);
            if (silent < cap) arm(silent - Date.now(), 'peer went silent after PENDING');
            else arm(cap - Date.now(), `no answer within ${pendingTimeoutMs} ms after PENDING`);
          },
          resolve: (b) => {
            disarm();
            signal?.removeEventListener('abort', onAbort);
            this.pending.delete(reqId);
            resolve(b);
          },
          reject: fail,
        });
        if (this.closed) return fail(unavailable('connection closed'));
        this.write(encodeFrame({ type: FrameType.Request, reqId, ...req }));
      });
    } finally {
      this.releaseSlot();
    }
  }

  close(err?: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.closeError = err;
    clearTimeout(this.helloTimer);
    for (const p of [...this.pending.values()]) p.reject(new PeerUnavailableError(this.opts.peer, 'gone', 'connection closed'));
    for (const c of this.serving.values()) c.abort();
    this.serving.clear();
    for (const w of this.slotWaiters.splice(0)) w();
    this.socket.destroy(err);
    this.emit('close');
  }

  private async acquireSlot(
    deadline: number, signal: AbortSignal | undefined, unavailable: (w: string, r?: PeerFailureReason) => Error,
  ): Promise<void> {
    for (let waited = 0; ; waited++) {
      if (this.closed) throw unavailable('connection closed');
      if (signal?.aborted) throw unavailable('aborted', 'error');
      if (this.verified && this.inflight < Math.min(this.opts.maxInflight, this.remoteMaxInflight)) {
        this.inflight++;
        return;
      }
      const left = deadline - Date.now();
      if (left <= 0) throw unavailable('no free request slot before the timeout', 'timeout');
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, left);
        function done() {
          clearTimeout(t);
          resolve();
        }
        this.slotWaiters.push(done);
      });
    }
  }

  private releaseSlot(): void {
    this.inflight--;
    this.slotWaiters.shift()?.();
  }

  /** Serialised writes: each frame waits until the stream drained the previous one. */
  private write(buf: Buffer): void {
    this.writeChain = this.writeChain.then(() => new Promise<void>((resolve) => {
      if (this.closed) return resolve();
      if (this.socket.write(buf)) return resolve();
      const done = () => {
        this.socket.off('drain', done);
        this.off('close', done);
        resolve();
      };
      this.socket.on('drain', done);
      this.once('close', done);
    }));
  }

  private onData(d: Buffer): void {
    if (this.closed) return;
    let frames: Frame[];
    try {
      frames = this.reader.push(d);
    } catch (e) {
      this.fail(e as Error);
      return;
    }
    for (const f of frames) {
      try {
        if (this.verified) this.onFrame(f);
        else this.onHello(f);
      } catch (e) {
        this.fail(e as Error);
        return;
      }
    }
  }

  /** Closes on a protocol violation; before the handshake completed it is a handshake failure. */
  private fail(e: Error): void {
    if (!this.verified && !(e instanceof HandshakeError)) e = new HandshakeError('protocol', e.message);
    this.close(e);
  }

  /** The only frame accepted before the handshake: the peer's HELLO with this session's proof. */
  private onHello(f: Frame): void {
    if (f.type !== FrameType.Hello) throw new HandshakeError('before_hello', `${this.opts.peer} sent ${FrameType[f.type]} before HELLO`);
    if (f.version !== PROTOCOL_VERSION) throw new HandshakeError('protocol', `${this.opts.peer} speaks version ${f.version}`);
    if (!timingSafeEqual(f.proof, this.opts.proofExpected)) throw new HandshakeError('bad_proof', `${this.opts.peer} sent no valid proof of the cluster secret for this connection`);
    this.verified = true;
    clearTimeout(this.helloTimer);
    this.remoteMaxInflight = Math.max(1, f.maxInflight);
    if (!this.opts.isInitiator) this.sendHello();
    this.markReady();
    for (const w of this.slotWaiters.splice(0)) w();
  }

  private onFrame(f: Frame): void {
    switch (f.type) {
      case FrameType.Hello:
        throw new ProtocolError(`${this.opts.peer} sent a second HELLO`);
      case FrameType.Response: {
        const p = this.pending.get(f.reqId);
        if (!p) return; // answer to a cancelled or timed-out request
        if (f.status === Status.Ok) {
          if (f.payload.length === p.length) p.resolve(Buffer.from(f.payload));
          else p.reject(new PeerUnavailableError(this.opts.peer, 'error', `sent ${f.payload.length} bytes, asked ${p.length}`));
        } else {
          const reason: PeerFailureReason = f.status === Status.Busy ? 'busy' : f.status === Status.NotFound ? 'not_found' : 'error';
          p.reject(new PeerUnavailableError(this.opts.peer, reason, `${Status[f.status] ?? f.status}: ${f.payload.toString('utf8')}`));
        }
        return;
      }
      case FrameType.Pending:
        this.pending.get(f.reqId)?.working();
        return;
      case FrameType.Cancel:
        this.serving.get(f.reqId)?.abort();
        this.serving.delete(f.reqId);
        return;
      case FrameType.Request:
        this.serve(f);
        return;
    }
  }

  private serve(req: Request): void {
    const answer = (status: Status, payload: Buffer) => {
      if (!this.closed) this.write(encodeFrame({ type: FrameType.Response, reqId: req.reqId, status, payload }));
    };
    const { handler, limiter } = this.opts;
    if (!handler) return answer(Status.Error, Buffer.from('not serving'));
    if (this.serving.has(req.reqId)) return answer(Status.Error, Buffer.from('duplicate request id'));
    if (this.serving.size >= this.opts.maxInflight || !limiter.tryAcquire()) return answer(Status.Busy, Buffer.from('busy'));
    const ac = new AbortController();
    this.serving.set(req.reqId, ac);
    let settled = false;
    // Acknowledge work that does not finish at once (an upstream fetch) so the peer keeps waiting,
    // and repeat the acknowledgement as a heartbeat until the answer goes out.
    const ack = () => {
      if (!settled && !ac.signal.aborted && !this.closed) this.write(encodeFrame({ type: FrameType.Pending, reqId: req.reqId }));
    };
    setImmediate(ack);
    const heartbeat = setInterval(ack, PENDING_HEARTBEAT_MS).unref();
    ac.signal.addEventListener('abort', () => clearInterval(heartbeat), { once: true });
    handler(req, ac.signal).then(
      (bytes) => {
        if (!ac.signal.aborted) answer(Status.Ok, bytes);
      },
      (e: Error) => {
        if (!ac.signal.aborted) answer(e instanceof NotFoundError ? Status.NotFound : Status.Error, Buffer.from(e.message.slice(0, 200)));
      },
    ).finally(() => {
      settled = true;
      clearInterval(heartbeat);
      limiter.release();
      if (this.serving.get(req.reqId) === ac) this.serving.delete(req.reqId);
    });
  }
}
