/**
 * A small gRPC client over HTTP/2 on a unix socket: unary calls and bidirectional streams of
 * already-encoded messages, which is all ctr-remote asks of containerd's API. It stands in for
 * grpc-js on this path because loading grpc-js and setting up its channel cost a pull 0.1-0.2 s
 * of start-up (docs/ctr-remote.md "Start-up"); the protocol is gRPC's HTTP/2 mapping
 * (PROTOCOL-HTTP2.md in grpc/grpc): POST to `/<service>/<method>`, `content-type:
 * application/grpc`, `te: trailers`, messages framed as a 1-byte compressed flag and a 4-byte
 * big-endian length, the status in `grpc-status` / `grpc-message` (percent-encoded) trailers.
 *
 * Contract: one HTTP/2 connection, opened by the first call and again after it closes; headers
 * given with a call are sent as gRPC metadata. A unary call resolves with the response message or
 * rejects with a GrpcError (code and details as a gRPC server or, for failures on this side, as
 * grpc-js reports them: UNAVAILABLE naming the socket when it cannot connect, DEADLINE_EXCEEDED
 * when the deadline passes, INTERNAL for a malformed answer, RESOURCE_EXHAUSTED for a message over
 * 4 MiB). Messages are never compressed.
 */
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { EventEmitter } from 'node:events';

/** gRPC status codes (grpc/include/grpcpp/impl/codegen/status_code_enum.h). */
export const Status = {
  OK: 0, CANCELLED: 1, UNKNOWN: 2, INVALID_ARGUMENT: 3, DEADLINE_EXCEEDED: 4, NOT_FOUND: 5, ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7, RESOURCE_EXHAUSTED: 8, FAILED_PRECONDITION: 9, ABORTED: 10, OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12, INTERNAL: 13, UNAVAILABLE: 14, DATA_LOSS: 15, UNAUTHENTICATED: 16,
} as const;

/** Largest message accepted, as grpc-js's default receive limit. */
const MAX_MESSAGE = 4 << 20;

export class GrpcError extends Error {
  constructor(
    readonly code: number,
    readonly details: string,
  ) {
    super(`${code} ${details}`);
    this.name = 'GrpcError';
  }
}

/** The gRPC code of an HTTP status without a grpc-status (gRPC's http-grpc-status-mapping.md). */
function httpToGrpc(status: number): number {
  if (status === 400) return Status.INTERNAL;
  if (status === 401) return Status.UNAUTHENTICATED;
  if (status === 403) return Status.PERMISSION_DENIED;
  if (status === 404) return Status.UNIMPLEMENTED;
  if (status === 429 || status === 502 || status === 503 || status === 504) return Status.UNAVAILABLE;
  return Status.UNKNOWN;
}

/** A message's 5-byte prefix: not compressed, then its length. */
function prefix(msg: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(msg.length, 1);
  return head;
}

function decodeMessage(raw: string | string[] | undefined): string {
  const v = Array.isArray(raw) ? raw[0] : raw;
  if (!v) return '';
  try {
    return decodeURIComponent(v);
  } catch {
    return v;
  }
}

/**
 * One call's HTTP/2 stream: emits 'message' (Buffer) per response message, then 'status'
 * (GrpcError with code OK on success) exactly once.
 */
export class GrpcCall extends EventEmitter {
  private pending: Buffer = Buffer.alloc(0);
  private done = false;

  /** `connectionError` gives the connection's own failure, if any (it names the socket). */
  constructor(
    private readonly stream: http2.ClientHttp2Stream,
    connectionError: () => Error | undefined,
  ) {
    super();
    let headers: http2.IncomingHttpHeaders | undefined;
    stream.on('response', (h) => {
      headers = h;
      if (h[':status'] !== 200) this.finish(httpToGrpc(Number(h[':status'])), `Received HTTP status code ${h[':status']}`);
      else if (h['grpc-status'] !== undefined) this.finish(Number(h['grpc-status']), decodeMessage(h['grpc-message'])); // trailers-only
    });
    stream.on('data', (chunk: Buffer) => this.onData(chunk));
    stream.on('trailers', (t) => this.finish(t['grpc-status'] === undefined ? Status.UNKNOWN : Number(t['grpc-status']), t['grpc-status'] === undefined ? 'No status received' : decodeMessage(t['grpc-message'])));
    // A stream the connection took down carries the connection's error as its cause.
    const unavailable = (e?: Error): void => this.finish(Status.UNAVAILABLE, (connectionError() ?? (e?.cause as Error | undefined) ?? e)?.message ?? `stream closed (HTTP/2 code ${stream.rstCode})`);
    stream.on('error', (e: Error) => (headers ? this.finish(Status.INTERNAL, e.message) : unavailable(e)));
    stream.on('close', () => (headers ? this.finish(Status.INTERNAL, `Received RST_STREAM with code ${stream.rstCode}`) : unavailable()));
  }

  private onData(chunk: Buffer): void {
    this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    while (this.pending.length >= 5 && !this.done) {
      if (this.pending[0] !== 0) return this.cancel(Status.INTERNAL, 'Received a compressed message, which was not asked for');
      const len = this.pending.readUInt32BE(1);
      if (len > MAX_MESSAGE) return this.cancel(Status.RESOURCE_EXHAUSTED, `Received message larger than max (${len} vs. ${MAX_MESSAGE})`);
      if (this.pending.length < 5 + len) return;
      const msg = this.pending.subarray(5, 5 + len);
      this.pending = this.pending.subarray(5 + len);
      this.emit('message', msg);
    }
  }

  private finish(code: number, details: string): void {
    if (this.done) return;
    this.done = true;
    this.emit('status', new GrpcError(code, details));
  }

  write(msg: Buffer): void {
    if (this.done) return;
    // Prefix and message written apart: a 1 MiB WRITE is not copied once more to join them.
    this.stream.write(prefix(msg));
    this.stream.write(msg);
  }

  /** Half-closes: no more requests. */
  end(): void {
    if (!this.stream.closed && !this.stream.writableEnded) this.stream.end();
  }

  /** Ends the call on this side with `code` (the server is told CANCEL). */
  cancel(code: number, details: string): void {
    this.finish(code, details);
    if (!this.stream.closed) this.stream.close(http2.constants.NGHTTP2_CANCEL);
  }
}

export class UnixGrpcClient {
  private session?: http2.ClientHttp2Session;
  private sessionError?: Error;

  constructor(readonly socketPath: string) {}

  private connect(): http2.ClientHttp2Session {
    if (this.session && !this.session.closed && !this.session.destroyed) return this.session;
    const s = http2.connect('http://localhost', { createConnection: () => net.connect(this.socketPath) });
    this.sessionError = undefined;
    // The calls on it fail with this error (their streams close); without a listener it would be thrown.
    s.on('error', (e: Error) => (this.sessionError = e));
    this.session = s;
    return s;
  }

  /** Starts a call of `path` with `metadata` as headers; `deadlineMs` bounds it when given. */
  start(path: string, metadata: Record<string, string>, deadlineMs?: number): GrpcCall {
    const headers: http2.OutgoingHttpHeaders = {
      ':method': 'POST',
      ':path': path,
      'content-type': 'application/grpc',
      te: 'trailers',
      ...metadata,
    };
    if (deadlineMs !== undefined) headers['grpc-timeout'] = `${Math.max(1, Math.ceil(deadlineMs))}m`;
    const session = this.connect();
    const call = new GrpcCall(session.request(headers), () => (this.session === session ? this.sessionError : undefined));
    if (deadlineMs !== undefined) {
      const timer = setTimeout(() => call.cancel(Status.DEADLINE_EXCEEDED, 'Deadline exceeded'), deadlineMs);
      call.once('status', () => clearTimeout(timer));
    }
    return call;
  }

  /** One request, one response. */
  unary(path: string, req: Buffer, metadata: Record<string, string>, deadlineMs: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const call = this.start(path, metadata, deadlineMs);
      let res: Buffer | undefined;
      call.on('message', (m: Buffer) => (res = m));
      call.once('status', (st: GrpcError) => {
        if (st.code !== Status.OK) reject(st);
        else if (!res) reject(new GrpcError(Status.UNIMPLEMENTED, 'No message received'));
        else resolve(res);
      });
      call.write(req);
      call.end();
    });
  }

  close(): void {
    this.session?.close();
  }
}
