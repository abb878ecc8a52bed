/**
 * The frame codec, the peer channel over a real loopback TCP connection (request ids, concurrency
 * bound, BUSY, timeout with CANCEL, secret proof), rendezvous ownership and config validation.
 */
import * as net from 'node:net';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { randomBytes } from 'node:crypto';
import { CountingLimiter, HandshakeError, PeerChannel, PeerUnavailableError, RequestHandler } from '../src/p2p/channel';
import { decodeBody, encodeFrame, FrameReader, FrameType, MAX_FRAME, ProtocolError, Status } from '../src/p2p/frames';
import { ownerOf, rankNodes } from '../src/p2p/rendezvous';
import { parseP2PConfig } from '../src/p2p/config';
import { localAddressToward } from '../src/p2p/membership';
import { sessionProof } from '../src/p2p/identity';
import { SourceUnavailableError } from '../src/fetch/source';

const blobId = 'ab'.repeat(32);
const d1 = 'cd'.repeat(32);

describe('frames', () => {
  test('every frame type round-trips, also when split into 1-byte pieces', () => {
    const frames = [
      encodeFrame({ type: FrameType.Hello, version: 1, maxInflight: 4, maxFrame: MAX_FRAME, proof: Buffer.alloc(32, 7) }),
      encodeFrame({ type: FrameType.Request, reqId: 9, blobId, offset: 2 ** 40 + 5, length: 1000, digests: [d1, blobId] }),
      encodeFrame({ type: FrameType.Response, reqId: 9, status: Status.Ok, payload: Buffer.from('hello') }),
      encodeFrame({ type: FrameType.Cancel, reqId: 9 }),
      encodeFrame({ type: FrameType.Pending, reqId: 10 }),
    ];
    const r = new FrameReader();
    const got = [...Buffer.concat(frames)].flatMap((b) => r.push(Buffer.from([b])));
    expect(got).toEqual([
      { type: FrameType.Hello, version: 1, maxInflight: 4, maxFrame: MAX_FRAME, proof: Buffer.alloc(32, 7) },
      { type: FrameType.Request, reqId: 9, blobId, offset: 2 ** 40 + 5, length: 1000, digests: [d1, blobId] },
      { type: FrameType.Response, reqId: 9, status: Status.Ok, payload: Buffer.from('hello') },
      { type: FrameType.Cancel, reqId: 9 },
      { type: FrameType.Pending, reqId: 10 },
    ]);
  });

  test('oversized, truncated and unknown frames are protocol errors', () => {
    const big = Buffer.alloc(5);
    big.writeUInt32BE(MAX_FRAME + 1, 0);
    expect(() => new FrameReader().push(big)).toThrow(ProtocolError);
    expect(() => decodeBody(Buffer.from([FrameType.Request, 1, 2]))).toThrow(/REQUEST frame too short/);
    expect(() => decodeBody(Buffer.from([42]))).toThrow(/unknown frame type 42/);
    expect(() => encodeFrame({ type: FrameType.Request, reqId: 1, blobId: 'zz', offset: 0, length: 1, digests: [] })).toThrow(/blob id/);
  });
});

async function socketPair(): Promise<[net.Socket, net.Socket, net.Server]> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  return [client, await accepted, server];
}

describe('peer channel', () => {
  const hh = randomBytes(32);
  const secret = 'channel-test-secret-xyz';
  let cleanup: (() => void)[] = [];
  afterEach(() => {
    cleanup.forEach((f) => f());
    cleanup = [];
  });

  async function pair(handler: RequestHandler, opts: { maxInflight?: number; serve?: number; wrongSecret?: boolean } = {}) {
    const [a, b, server] = await socketPair();
    const mk = (s: net.Socket, initiator: boolean, sec: string, h?: RequestHandler) => new PeerChannel(s, {
      peer: initiator ? 'a' : 'b', maxInflight: opts.maxInflight ?? 4, isInitiator: initiator, helloTimeoutMs: 5000,
      proofToSend: sessionProof(sec, hh, initiator), proofExpected: sessionProof(secret, hh, !initiator),
      handler: h, limiter: new CountingLimiter(opts.serve ?? 16),
    });
    const ca = mk(a, true, secret);
    const cb = mk(b, false, opts.wrongSecret ? 'another-secret-entirely' : secret, handler);
    cleanup.push(() => ca.close(), () => cb.close(), () => server.close());
    return { ca, cb, sockets: [a, b] as const };
  }

  test('answers by request id, out of order, with exactly the asked length', async () => {
    const { ca } = await pair(async (req) => {
      await new Promise((r) => setTimeout(r, req.offset === 0 ? 60 : 1));
      return Buffer.alloc(req.length, req.offset & 0xff);
    });
    await ca.ready;
    const [x, y] = await Promise.all([
      ca.request({ blobId, offset: 0, length: 10, digests: [d1] }, 2000),
      ca.request({ blobId, offset: 7, length: 3, digests: [] }, 2000),
    ]);
    expect(x).toEqual(Buffer.alloc(10, 0));
    expect(y).toEqual(Buffer.alloc(3, 7));
  });

  test('keeps at most maxInflight requests at the peer; the serving side sheds load with BUSY', async () => {
    let active = 0;
    let peak = 0;
    const { ca } = await pair(async (req) => {
      peak = Math.max(peak, ++active);
      await new Promise((r) => setTimeout(r, 20));
      active--;
      return Buffer.alloc(req.length);
    }, { maxInflight: 2 });
    await ca.ready;
    const all = await Promise.all(Array.from({ length: 8 }, (_, i) => ca.request({ blobId, offset: i, length: 4, digests: [] }, 5000)));
    expect(all).toHaveLength(8);
    expect(peak).toBe(2);

    const busy = await pair(async (req) => {
      await new Promise((r) => setTimeout(r, 50));
      return Buffer.alloc(req.length);
    }, { serve: 1 });
    await busy.ca.ready;
    const res = await Promise.allSettled([0, 1].map((o) => busy.ca.request({ blobId, offset: o, length: 4, digests: [] }, 5000)));
    const reasons = res.map((r) => (r.status === 'rejected' ? (r.reason as PeerUnavailableError).reason : 'ok'));
    expect(reasons.sort()).toEqual(['busy', 'ok']);
  });

  test('a request with no answer times out as unavailable and is cancelled at the peer', async () => {
    let aborted = false;
    const { ca } = await pair((_req, signal) => new Promise<Buffer>((_r, rej) => {
      signal.addEventListener('abort', () => {
        aborted = true;
        rej(new Error('cancelled'));
      });
    }));
    await ca.ready;
    const err = await ca.request({ blobId, offset: 0, length: 4, digests: [] }, 150).catch((e) => e);
    expect(err).toBeInstanceOf(SourceUnavailableError);
    expect((err as PeerUnavailableError).reason).toBe('timeout');
    for (let i = 0; i < 50 && !aborted; i++) await new Promise((r) => setTimeout(r, 10));
    expect(aborted).toBe(true);
  });

  test('an owner that goes silent after PENDING (killed, frozen) is dropped by the heartbeat, not the pending limit', async () => {
    let serverSocket: net.Socket | undefined;
    const { ca, sockets } = await pair(async (_req, signal) => {
      // After the first acknowledgements, the owner stops sending anything, as a killed process would.
      setTimeout(() => { serverSocket!.write = (() => true) as never; }, 50);
      await new Promise((r) => signal.addEventListener('abort', r, { once: true }));
      throw new Error('cancelled');
    });
    serverSocket = sockets[1];
    await ca.ready;
    const err = await ca.request({ blobId, offset: 0, length: 4, digests: [] }, 400, undefined, 60_000).catch((e) => e);
    expect((err as PeerUnavailableError).reason).toBe('timeout');
    expect((err as Error).message).toMatch(/went silent after PENDING/);
  });

  test('a peer that acknowledges with PENDING is waited for up to the pending limit, not the answer limit', async () => {
    const { ca } = await pair(async (req) => {
      await new Promise((r) => setTimeout(r, 300));
      return Buffer.alloc(req.length, 1);
    });
    await ca.ready;
    const req = { blobId, offset: 0, length: 4, digests: [] };
    await expect(ca.request(req, 100, undefined, 3000)).resolves.toEqual(Buffer.alloc(4, 1));
    const err = await ca.request(req, 100, undefined, 150).catch((e) => e);
    expect((err as PeerUnavailableError).reason).toBe('timeout');
    expect((err as Error).message).toMatch(/after PENDING/);
  });

  test('a stall of the requester\'s own event loop is not taken for a silent peer: an answer that came meanwhile wins', async () => {
    // The peer runs on a worker thread (its own event loop, the built module), so it answers while
    // this thread is blocked; the answer then waits in the socket next to the overdue timer.
    const server = net.createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
    const dist = path.resolve(__dirname, '..', 'dist', 'p2p');
    const peer = new Worker(
      `const net = require('node:net');
       const { workerData: w } = require('node:worker_threads');
       const { PeerChannel, CountingLimiter } = require(w.dist + '/channel.js');
       const { sessionProof } = require(w.dist + '/identity.js');
       const hh = Buffer.from(w.hh, 'hex');
       new PeerChannel(net.connect(w.port, '127.0.0.1'), {
         peer: 'b', maxInflight: 4, isInitiator: false, helloTimeoutMs: 5000, limiter: new CountingLimiter(4),
         proofToSend: sessionProof(w.secret, hh, false), proofExpected: sessionProof(w.secret, hh, true),
         handler: (req) => new Promise((r) => setTimeout(() => r(Buffer.alloc(req.length, 9)), 50)),
       });`,
      { eval: true, workerData: { dist, port: (server.address() as net.AddressInfo).port, hh: hh.toString('hex'), secret } },
    );
    const ca = new PeerChannel(await accepted, {
      peer: 'b', maxInflight: 4, isInitiator: true, helloTimeoutMs: 5000, limiter: new CountingLimiter(4),
      proofToSend: sessionProof(secret, hh, true), proofExpected: sessionProof(secret, hh, false),
    });
    cleanup.push(() => ca.close(), () => server.close(), () => void peer.terminate());
    await ca.ready;
    const answer = ca.request({ blobId, offset: 0, length: 4, digests: [] }, 200);
    // Block this thread from ~20 ms to ~520 ms (in the loop's check phase, so the next turn starts
    // with the overdue timer): the peer answers at ~50 ms, the timer falls due at 200 ms.
    await new Promise<void>((r) => setTimeout(() => setImmediate(() => {
      const until = Date.now() + 500;
      while (Date.now() < until) { /* a stalled event loop */ }
      r();
    }), 20));
    await expect(answer).resolves.toEqual(Buffer.alloc(4, 9));
  });

  test('a peer that does not know the cluster secret is disconnected before any request', async () => {
    const { ca, cb } = await pair(async (req) => Buffer.alloc(req.length), { wrongSecret: true });
    await expect(ca.ready).rejects.toThrow(/closed before HELLO/);
    expect(ca.closeError).toBeInstanceOf(HandshakeError);
    expect((ca.closeError as HandshakeError).reason).toBe('bad_proof');
    for (let i = 0; i < 100 && !cb.closed; i++) await new Promise((r) => setTimeout(r, 10));
    expect(cb.closed).toBe(true);
    await expect(ca.request({ blobId, offset: 0, length: 4, digests: [] }, 500)).rejects.toThrow(SourceUnavailableError);
  });

  /**
   * The serving side (responder) of a raw TCP connection; the test writes raw frames as the
   * initiator and collects every byte the channel sends back.
   */
  async function rawPeer(helloTimeoutMs = 5000) {
    const [client, srv, server] = await socketPair();
    let served = 0;
    const ch = new PeerChannel(srv, {
      peer: 'raw', maxInflight: 4, isInitiator: false, helloTimeoutMs, limiter: new CountingLimiter(4),
      proofToSend: sessionProof(secret, hh, false), proofExpected: sessionProof(secret, hh, true),
      handler: async (req) => {
        served++;
        return Buffer.alloc(req.length, 1);
      },
    });
    const got: Buffer[] = [];
    client.on('data', (d: Buffer) => got.push(d));
    const closed = new Promise<void>((r) => client.on('close', () => r()));
    client.on('error', () => undefined);
    cleanup.push(() => ch.close(), () => client.destroy(), () => server.close());
    return { ch, client, closed, received: () => Buffer.concat(got), served: () => served };
  }
  const hello = (proof: Buffer) => encodeFrame({ type: FrameType.Hello, version: 1, maxInflight: 4, maxFrame: MAX_FRAME, proof });
  const request = encodeFrame({ type: FrameType.Request, reqId: 1, blobId, offset: 0, length: 4, digests: [] });

  test('the responder says nothing until the initiator\'s HELLO verified, then answers', async () => {
    const p = await rawPeer();
    await new Promise((r) => setTimeout(r, 100));
    expect(p.received().length).toBe(0);
    p.client.write(Buffer.concat([hello(sessionProof(secret, hh, true)), request]));
    for (let i = 0; i < 100 && new FrameReader().push(p.received()).length < 2; i++) await new Promise((r) => setTimeout(r, 10));
    const frames = new FrameReader().push(p.received()).filter((f) => f.type !== FrameType.Pending);
    expect(frames.map((f) => f.type)).toEqual([FrameType.Hello, FrameType.Response]);
    expect(p.served()).toBe(1);
  });

  test.each([
    ['a REQUEST before HELLO', 'before_hello', () => request],
    ['a CANCEL before HELLO', 'before_hello', () => encodeFrame({ type: FrameType.Cancel, reqId: 1 })],
    ['a HELLO with a wrong proof, then a REQUEST', 'bad_proof', () => Buffer.concat([hello(sessionProof('another-secret-entirely', hh, true)), request])],
    ['its own HELLO reflected back (responder role)', 'bad_proof', () => Buffer.concat([hello(sessionProof(secret, hh, false)), request])],
    ['a malformed frame', 'protocol', () => Buffer.from([0, 0, 0, 1, 42])],
  ])('%s closes the connection (%s): no byte sent, nothing served', async (_what, reason, bytes) => {
    const p = await rawPeer();
    p.client.write(bytes());
    await p.closed;
    expect(p.received().length).toBe(0);
    expect(p.served()).toBe(0);
    expect(p.ch.closed).toBe(true);
    expect((p.ch.closeError as HandshakeError).reason).toBe(reason);
  });

  test('silence beyond helloTimeoutMs closes the connection', async () => {
    const p = await rawPeer(200);
    const t0 = Date.now();
    await p.closed;
    expect(Date.now() - t0).toBeGreaterThanOrEqual(150);
    expect(p.received().length).toBe(0);
    expect((p.ch.closeError as HandshakeError).reason).toBe('no_hello');
  });
});

describe('rendezvous ownership', () => {
  const nodes = Array.from({ length: 5 }, (_, i) => `${i}`.repeat(64));
  test('removing a node moves only the keys it owned', () => {
    const keys = Array.from({ length: 500 }, (_, i) => `chunk-${i}`);
    const before = keys.map((k) => ownerOf(k, nodes));
    const after = keys.map((k) => ownerOf(k, nodes.slice(1)));
    keys.forEach((_, i) => {
      if (before[i] !== nodes[0]) expect(after[i]).toBe(before[i]);
    });
    const share = before.filter((o) => o === nodes[0]).length;
    expect(share).toBeGreaterThan(50);
    expect(share).toBeLessThan(150);
    expect(rankNodes('x', nodes)[0]).toBe(ownerOf('x', nodes));
  });
});

describe('default DHT bind address', () => {
  test('is the local address that routes to the bootstrap node; none when there is no route', async () => {
    expect(await localAddressToward({ host: '127.0.0.1', port: 49737 })).toBe('127.0.0.1');
    expect(await localAddressToward({ host: '127.0.0.0', port: 0 })).toBeUndefined();
  });
});

describe('p2p config', () => {
  const ok = { enable: true, cluster_secret: 'a-long-cluster-secret', bootstrap: ['127.0.0.1:49737'] };
  test('off by default, defaults filled in, keys normalised', () => {
    expect(parseP2PConfig(undefined)).toBeUndefined();
    expect(parseP2PConfig({ enable: false })).toBeUndefined();
    const c = parseP2PConfig({ ...ok, allow: ['AB'.repeat(32)] });
    expect(c).toMatchObject({
      bootstrap: [{ host: '127.0.0.1', port: 49737 }], allow: ['ab'.repeat(32)], maxPeers: 64, requestTimeoutMs: 2000, helloTimeoutMs: 5000,
    });
  });
  test.each([
    [{ ...ok, bootstrap: [] }, /cfg.json: p2p.bootstrap: must be a non-empty array/],
    [{ ...ok, bootstrap: ['nohost'] }, /p2p.bootstrap\[0\]: not "host:port"/],
    [{ ...ok, cluster_secret: 'short' }, /p2p.cluster_secret: must be a string of at least 16/],
    [{ ...ok, allow: ['xyz'] }, /p2p.allow\[0\]: must be a 64-hex-digit public key/],
    [{ ...ok, request_timeout_ms: -1 }, /p2p.request_timeout_ms: must be a positive integer/],
    [{ ...ok, hello_timeout_ms: 0 }, /p2p.hello_timeout_ms: must be a positive integer/],
    [{ ...ok, host: '0.0.0.0x' }, /p2p.host: must be an IPv4 address/],
    [{ ...ok, maxpeers: 3 }, /p2p.maxpeers: unknown key/],
    [{ ...ok, request_timeout_ms: 5000, upstream_timeout_ms: 1000 }, /p2p.upstream_timeout_ms: must be at least request_timeout_ms/],
  ])('rejects %j', (raw, msg) => {
    expect(() => parseP2PConfig(raw, 'cfg.json')).toThrow(msg);
  });
});
