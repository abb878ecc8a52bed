/**
 * nydus-backend-proxy: serves a local directory of blobs over the subset of the OCI distribution API
 * that nydusd's registry backend uses, for clusters that have no registry or object store for blobs.
 *
 *   GET  /v2/                                  -> 200 (API version check)
 *   HEAD /v2/<repo>/blobs/sha256:<hex>          -> 200 with Content-Length, or 404
 *   GET  /v2/<repo>/blobs/sha256:<hex>          -> the blob; a single `Range: bytes=a-b` gives 206
 *   (the same blob paths without the /v2 prefix are accepted too, as upstream's proxy does)
 *
 * The repository part is ignored: blobs are content-addressed, so the file name is the digest.
 * Nothing outside the directory can be named: the digest must be 64 lowercase hex characters.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { logger } from '../util/log';

const log = logger('backend-proxy');
const BLOB_PATH = /^(?:\/v2)?\/(.+)\/blobs\/sha256:([0-9a-f]{64})$/;

export interface BackendProxyOptions {
  blobsDir: string;
  host?: string;
  port?: number;
}

/** A parsed single byte range, inclusive end, or a reason it cannot be served. */
export type RangeResult = { start: number; end: number } | { error: string } | undefined;

/** Parses `bytes=a-b`, `bytes=a-` and `bytes=-n` against a file size. Multiple ranges are refused. */
export function parseRange(header: string | undefined, size: number): RangeResult {
  if (header === undefined) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return { error: `unsupported Range header ${JSON.stringify(header)}` };
  let start: number;
  let end: number;
  if (m[1] === '') {
    const n = Number(m[2]);
    start = Math.max(0, size - n);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  }
  if (start > end || start >= size) return { error: `range ${header} not satisfiable for size ${size}` };
  return { start, end };
}

function handle(blobsDir: string, req: http.IncomingMessage, res: http.ServerResponse): void {
  const url = new URL(req.url ?? '/', 'http://proxy');
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { Allow: 'GET, HEAD' }).end();
    return;
  }
  if (url.pathname === '/v2/' || url.pathname === '/v2') {
    res.writeHead(200, { 'Content-Type': 'application/json', 'Docker-Distribution-API-Version': 'registry/2.0' }).end('{}');
    return;
  }
  const m = BLOB_PATH.exec(url.pathname);
  if (!m) {
    res.writeHead(404, { 'Content-Type': 'application/json' }).end(JSON.stringify({ errors: [{ code: 'NOT_FOUND', message: 'no such route' }] }));
    return;
  }
  const digest = m[2];
  const file = path.join(blobsDir, digest);
  let size: number;
  try {
    const st = fs.statSync(file);
    if (!st.isFile()) throw new Error('not a file');
    size = st.size;
  } catch {
    res.writeHead(404, { 'Content-Type': 'application/json' }).end(JSON.stringify({ errors: [{ code: 'BLOB_UNKNOWN', message: `blob sha256:${digest} unknown` }] }));
    return;
  }
  const headers: http.OutgoingHttpHeaders = {
    'Content-Type': 'application/octet-stream',
    'Docker-Content-Digest': `sha256:${digest}`,
    'Accept-Ranges': 'bytes',
  };
  const range = parseRange(req.headers.range, size);
  if (range && 'error' in range) {
    res.writeHead(416, { 'Content-Range': `bytes */${size}` }).end(range.error);
    return;
  }
  const start = range ? range.start : 0;
  const end = range ? range.end : size - 1;
  const length = size === 0 ? 0 : end - start + 1;
  headers['Content-Length'] = length;
  if (range) headers['Content-Range'] = `bytes ${start}-${end}/${size}`;
  res.writeHead(range ? 206 : 200, headers);
  if (req.method === 'HEAD' || length === 0) {
    res.end();
    return;
  }
  const stream = fs.createReadStream(file, { start, end });
  stream.on('error', (err) => {
    log.warn({ digest, err: err.message }, 'blob read failed mid-response');
    res.destroy(err);
  });
  stream.pipe(res);
}

/** Starts the server; resolves with it listening and its bound address. */
export async function startBackendProxy(opts: BackendProxyOptions): Promise<{ server: http.Server; url: string }> {
  const dir = path.resolve(opts.blobsDir);
  if (!fs.statSync(dir, { throwIfNoEntry: false })?.isDirectory()) {
    throw new Error(`blobs dir ${dir} is not a directory`);
  }
  const server = http.createServer((req, res) => {
    try {
      handle(dir, req, res);
    } catch (err) {
      log.error({ err: (err as Error).message, url: req.url }, 'request failed');
      if (!res.headersSent) res.writeHead(500).end();
      else res.destroy();
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 8000, opts.host ?? '127.0.0.1', () => resolve());
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : opts.port;
  const url = `http://${opts.host ?? '127.0.0.1'}:${port}`;
  log.info({ url, dir }, 'serving blobs');
  return { server, url };
}
