/**
 * Readers of /dev/fuse. A blocking read waits until the kernel has a request, so it must not run on
 * the event loop. Three ways are offered:
 *
 *   'poll'    the descriptor made non-blocking and watched by the event loop's epoll like a socket
 *             (libuv's stream over the fd); every queued request is read as soon as it is there.
 *             No thread is held, whatever the number of mounts. `count` is ignored.
 *   'pool'    fs.read calls in libuv's thread pool. Each waiting read holds one pool thread, so the
 *             pool must have `count` threads more than the daemon's own file I/O needs
 *             (UV_THREADPOOL_SIZE, read once when the pool starts: bin/_run sets it for nydusd).
 *   'worker'  one worker thread per reader looping on readSync, posting each request (its bytes
 *             transferred, not copied twice) to the event loop. Independent of the pool's size.
 *
 *   'auto'    'pool' while the pool has `count` threads to spare beyond a reserve of 4 for the
 *             daemon's own I/O, 'poll' after that: a shared daemon with many mounts never starves
 *             its pool.
 *
 * docs/nydusd.md ("FUSE transport") has the measurements behind the default.
 *
 * Contract: `onRequest` gets each request as a Buffer valid only during the call (a reader reuses
 * its buffer for the next request); `onEnd` is called once, after
 * every reader stopped, with the error that stopped the first one (ENODEV: the mount is gone).
 * Interrupted reads (EINTR, EAGAIN, and ENOENT for a request the kernel withdrew) are retried.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import { Worker } from 'node:worker_threads';

export type ReaderKind = 'poll' | 'pool' | 'worker' | 'auto';

/** Pool threads kept for the daemon's own file I/O, crypto and compression. */
const POOL_RESERVE = 4;
/** Pool threads held by 'pool' readers right now. */
let poolHeld = 0;

/** libuv reads UV_THREADPOOL_SIZE once, when the pool starts (default 4). */
function poolSize(): number {
  const n = Number(process.env.UV_THREADPOOL_SIZE);
  return Number.isInteger(n) && n > 0 ? Math.min(n, 1024) : 4;
}

export interface Readers {
  readonly kind: ReaderKind;
  /** Resolves once every reader has stopped. */
  readonly ended: Promise<void>;
  /** Closes the descriptor (the 'poll' reader owns it once started). */
  close(): void;
}

const RETRY = new Set(['EINTR', 'EAGAIN', 'ENOENT']);

export function startReaders(kind: ReaderKind, fd: number, count: number, bufSize: number, onRequest: (req: Buffer) => void, onEnd: (err: NodeJS.ErrnoException) => void): Readers {
  let running = count;
  let first: NodeJS.ErrnoException | undefined;
  let done!: () => void;
  const ended = new Promise<void>((r) => (done = r));
  const stopped = (err: NodeJS.ErrnoException) => {
    first ??= err;
    if (--running === 0) {
      onEnd(first);
      done();
    }
  };
  // 'auto': pool readers while the pool has threads to spare beyond the reserve (they serve
  // sequential reads fastest, docs/nydusd.md), the event loop's poll after that.
  if (kind === 'auto') kind = poolHeld + count <= poolSize() - POOL_RESERVE ? 'pool' : 'poll';
  if (kind === 'pool') {
    const held = count;
    poolHeld += held;
    void ended.then(() => (poolHeld -= held));
  }
  if (kind === 'poll') {
    running = 1;
    const sock = pollReader(fd, onRequest, stopped);
    return { kind, ended, close: () => sock.destroy() };
  }
  for (let i = 0; i < count; i++) (kind === 'pool' ? poolReader : workerReader)(fd, bufSize, onRequest, stopped);
  return { kind, ended, close: () => fs.closeSync(fd) };
}

/** libuv's pipe handle: the one public-ish way to have the event loop poll an arbitrary descriptor. */
interface PipeBinding {
  Pipe: new (type: number) => { open(fd: number): number };
  constants: { SOCKET: number };
}

function pollReader(fd: number, onRequest: (req: Buffer) => void, stopped: (err: NodeJS.ErrnoException) => void): net.Socket {
  const { Pipe, constants: pc } = (process as unknown as { binding(name: string): PipeBinding }).binding('pipe_wrap');
  const handle = new Pipe(pc.SOCKET);
  const rc = handle.open(fd);
  if (rc < 0) throw Object.assign(new Error(`/dev/fuse: cannot watch descriptor ${fd} (${rc})`), { code: 'EINVAL' });
  const sock = new net.Socket({ handle, readable: true, writable: false } as net.SocketConstructorOpts);
  // One read(2) of /dev/fuse is one request, but a paused stream may join chunks: split by length.
  let rest: Buffer | undefined;
  let err: NodeJS.ErrnoException | undefined;
  sock.on('data', (chunk: Buffer) => {
    let b = rest ? Buffer.concat([rest, chunk]) : chunk;
    rest = undefined;
    while (b.length >= 4) {
      const len = b.readUInt32LE(0);
      if (len < 4 || b.length < len) break;
      onRequest(b.subarray(0, len));
      b = b.subarray(len);
    }
    if (b.length) rest = Buffer.from(b);
  });
  sock.on('error', (e: NodeJS.ErrnoException) => (err ??= e));
  sock.on('close', () => stopped(err ?? Object.assign(new Error('FUSE connection closed'), { code: 'ENODEV' })));
  return sock;
}

function poolReader(fd: number, bufSize: number, onRequest: (req: Buffer) => void, stopped: (err: NodeJS.ErrnoException) => void): void {
  const buf = Buffer.allocUnsafeSlow(bufSize);
  const next = (): void => {
    fs.read(fd, buf, 0, bufSize, null, (err, n) => {
      if (err && RETRY.has(err.code ?? '')) return next();
      if (err) return stopped(err);
      onRequest(buf.subarray(0, n));
      next();
    });
  };
  next();
}

/** The worker's whole program: read, hand over, repeat; report the error that stops it. */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const fs = require('node:fs');
const { fd, bufSize } = workerData;
const buf = Buffer.allocUnsafeSlow(bufSize);
const retry = new Set(['EINTR', 'EAGAIN', 'ENOENT']);
for (;;) {
  let n;
  try {
    n = fs.readSync(fd, buf, 0, bufSize, null);
  } catch (e) {
    if (retry.has(e.code)) continue;
    parentPort.postMessage({ code: e.code, message: e.message });
    break;
  }
  const req = new Uint8Array(n);
  req.set(buf.subarray(0, n));
  parentPort.postMessage(req, [req.buffer]);
}
`;

function workerReader(fd: number, bufSize: number, onRequest: (req: Buffer) => void, stopped: (err: NodeJS.ErrnoException) => void): void {
  // A small heap: the worker only copies bytes.
  const w = new Worker(WORKER_SOURCE, { eval: true, workerData: { fd, bufSize }, resourceLimits: { maxOldGenerationSizeMb: 8, maxYoungGenerationSizeMb: 2 } });
  let err: NodeJS.ErrnoException | undefined;
  w.on('message', (m: Uint8Array | { code: string; message: string }) => {
    if (m instanceof Uint8Array) onRequest(Buffer.from(m.buffer, m.byteOffset, m.byteLength));
    else err = Object.assign(new Error(m.message), { code: m.code });
  });
  w.on('error', (e) => (err ??= e));
  w.on('exit', () => stopped(err ?? Object.assign(new Error('FUSE reader thread exited'), { code: 'EPIPE' })));
}
