/**
 * Readers of /dev/fuse. A read blocks until the kernel has a request, so it must not run on the
 * event loop; two ways are offered, both keeping `count` reads waiting in the kernel at once so
 * several requests can be in flight:
 *
 *   'pool'    fs.read calls in libuv's thread pool. Each waiting read holds one pool thread, so the
 *             pool must have `count` threads more than the daemon's own file I/O needs
 *             (UV_THREADPOOL_SIZE, read once when the pool starts: bin/_run sets it for nydusd).
 *   'worker'  one worker thread per reader looping on readSync, posting each request (its bytes
 *             transferred, not copied twice) to the event loop. Independent of the pool's size.
 *
 * docs/nydusd.md ("FUSE transport") has the measurements behind the default.
 *
 * Contract: `onRequest` gets each request as a Buffer valid only during the call (a reader reuses
 * its buffer for the next request); `onEnd` is called once, after
 * every reader stopped, with the error that stopped the first one (ENODEV: the mount is gone).
 * Interrupted reads (EINTR, EAGAIN, and ENOENT for a request the kernel withdrew) are retried.
 */
import * as fs from 'node:fs';
import { Worker } from 'node:worker_threads';

export type ReaderKind = 'pool' | 'worker';

export interface Readers {
  readonly kind: ReaderKind;
  /** Resolves once every reader has stopped. */
  readonly ended: Promise<void>;
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
  for (let i = 0; i < count; i++) (kind === 'pool' ? poolReader : workerReader)(fd, bufSize, onRequest, stopped);
  return { kind, ended };
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
