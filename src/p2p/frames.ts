/**
 * Wire format of the chunk exchange (specified in docs/p2p.md). Every frame:
 *
 *   u32be bodyLength | u8 type | body (bodyLength - 1 bytes)
 *
 *   HELLO    1  u8 version | u16be maxInflight | u32be maxFrame | 32B proof
 *   REQUEST  2  u32be reqId | 32B blobId | u64be offset | u32be length | u16be n | n x 32B chunk digest
 *   RESPONSE 3  u32be reqId | u8 status | payload (OK: the bytes; else a UTF-8 reason)
 *   CANCEL   4  u32be reqId
 *   PENDING  5  u32be reqId
 *
 * The length prefix makes the format independent of the transport's message boundaries. Frames are
 * bounded by MAX_FRAME, far below the 16 MiB atomic-write limit of hyperdht's secret stream.
 */

export const PROTOCOL_VERSION = 1;
export const MAX_PAYLOAD = 8 * 1024 * 1024;
export const MAX_DIGESTS = 1024;
/** Largest body: a RESPONSE with MAX_PAYLOAD bytes, or a REQUEST with MAX_DIGESTS digests. */
export const MAX_FRAME = 1 + 5 + MAX_PAYLOAD;

export enum FrameType { Hello = 1, Request = 2, Response = 3, Cancel = 4, Pending = 5 }
export enum Status { Ok = 0, NotFound = 1, Busy = 2, Error = 3 }

export interface Hello { type: FrameType.Hello; version: number; maxInflight: number; maxFrame: number; proof: Buffer }
export interface Request {
  type: FrameType.Request; reqId: number; blobId: string; offset: number; length: number; digests: string[];
}
export interface Response { type: FrameType.Response; reqId: number; status: Status; payload: Buffer }
export interface Cancel { type: FrameType.Cancel; reqId: number }
/** The server works on the request (fetching upstream); the requester may wait longer. */
export interface Pending { type: FrameType.Pending; reqId: number }
export type Frame = Hello | Request | Response | Cancel | Pending;

export class ProtocolError extends Error {
  constructor(reason: string) {
    super(`p2p protocol: ${reason}`);
    this.name = 'ProtocolError';
  }
}

function header(type: FrameType, bodyLen: number): Buffer {
  const h = Buffer.alloc(5);
  h.writeUInt32BE(bodyLen + 1, 0);
  h.writeUInt8(type, 4);
  return h;
}

function hex32(s: string, what: string): Buffer {
  const b = Buffer.from(s, 'hex');
  if (b.length !== 32 || b.toString('hex') !== s.toLowerCase()) throw new ProtocolError(`${what} is not 64 hex digits: ${s}`);
  return b;
}

export function encodeFrame(f: Frame): Buffer {
  switch (f.type) {
    case FrameType.Hello: {
      const b = Buffer.alloc(1 + 2 + 4 + 32);
      b.writeUInt8(f.version, 0);
      b.writeUInt16BE(f.maxInflight, 1);
      b.writeUInt32BE(f.maxFrame, 3);
      f.proof.copy(b, 7, 0, 32);
      return Buffer.concat([header(f.type, b.length), b]);
    }
    case FrameType.Request: {
      if (f.digests.length > MAX_DIGESTS) throw new ProtocolError(`too many digests: ${f.digests.length}`);
      const b = Buffer.alloc(4 + 32 + 8 + 4 + 2 + 32 * f.digests.length);
      b.writeUInt32BE(f.reqId, 0);
      hex32(f.blobId, 'blob id').copy(b, 4);
      b.writeBigUInt64BE(BigInt(f.offset), 36);
      b.writeUInt32BE(f.length, 44);
      b.writeUInt16BE(f.digests.length, 48);
      f.digests.forEach((d, i) => hex32(d, 'chunk digest').copy(b, 50 + 32 * i));
      return Buffer.concat([header(f.type, b.length), b]);
    }
    case FrameType.Response: {
      if (f.payload.length > MAX_PAYLOAD) throw new ProtocolError(`payload of ${f.payload.length} bytes exceeds ${MAX_PAYLOAD}`);
      const b = Buffer.alloc(5);
      b.writeUInt32BE(f.reqId, 0);
      b.writeUInt8(f.status, 4);
      return Buffer.concat([header(f.type, 5 + f.payload.length), b, f.payload]);
    }
    case FrameType.Cancel:
    case FrameType.Pending: {
      const b = Buffer.alloc(4);
      b.writeUInt32BE(f.reqId, 0);
      return Buffer.concat([header(f.type, 4), b]);
    }
  }
}

function need(body: Buffer, n: number, what: string): void {
  if (body.length < n) throw new ProtocolError(`${what} frame too short: ${body.length} < ${n} bytes`);
}

/** Decodes one frame body (the bytes after the length prefix, starting with the type byte). */
export function decodeBody(frame: Buffer): Frame {
  const type = frame.readUInt8(0);
  const body = frame.subarray(1);
  switch (type) {
    case FrameType.Hello:
      need(body, 39, 'HELLO');
      return { type, version: body.readUInt8(0), maxInflight: body.readUInt16BE(1), maxFrame: body.readUInt32BE(3), proof: Buffer.from(body.subarray(7, 39)) };
    case FrameType.Request: {
      need(body, 50, 'REQUEST');
      const n = body.readUInt16BE(48);
      need(body, 50 + 32 * n, 'REQUEST');
      const offset = body.readBigUInt64BE(36);
      if (offset > BigInt(Number.MAX_SAFE_INTEGER)) throw new ProtocolError('REQUEST offset out of range');
      const digests: string[] = [];
      for (let i = 0; i < n; i++) digests.push(body.subarray(50 + 32 * i, 82 + 32 * i).toString('hex'));
      return {
        type, reqId: body.readUInt32BE(0), blobId: body.subarray(4, 36).toString('hex'),
        offset: Number(offset), length: body.readUInt32BE(44), digests,
      };
    }
    case FrameType.Response:
      need(body, 5, 'RESPONSE');
      return { type, reqId: body.readUInt32BE(0), status: body.readUInt8(4), payload: body.subarray(5) };
    case FrameType.Cancel:
    case FrameType.Pending:
      need(body, 4, type === FrameType.Cancel ? 'CANCEL' : 'PENDING');
      return { type, reqId: body.readUInt32BE(0) };
    default:
      throw new ProtocolError(`unknown frame type ${type}`);
  }
}

/** Reassembles frames from a byte stream; throws ProtocolError on an oversized or malformed frame. */
export class FrameReader {
  private parts: Buffer[] = [];
  private buffered = 0;

  push(data: Buffer): Frame[] {
    this.parts.push(data);
    this.buffered += data.length;
    const out: Frame[] = [];
    for (;;) {
      if (this.buffered < 4) break;
      const head = this.peek(4);
      const len = head.readUInt32BE(0);
      if (len < 1 || len > MAX_FRAME) throw new ProtocolError(`frame length ${len} out of bounds (1..${MAX_FRAME})`);
      if (this.buffered < 4 + len) break;
      const all = this.take(4 + len);
      out.push(decodeBody(all.subarray(4)));
    }
    return out;
  }

  private peek(n: number): Buffer {
    if (this.parts[0].length < n) this.parts = [Buffer.concat(this.parts)];
    return this.parts[0].subarray(0, n);
  }

  private take(n: number): Buffer {
    const all = this.parts.length === 1 ? this.parts[0] : Buffer.concat(this.parts);
    const rest = all.subarray(n);
    this.parts = rest.length ? [rest] : [];
    this.buffered = rest.length;
    return all.subarray(0, n);
  }
}
