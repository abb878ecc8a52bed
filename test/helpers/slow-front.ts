/**
 * A loopback pass-through to a registry that holds each blob GET for `delayMs` while it is set: a
 * slow backend, so a read through nydusd stays in flight long enough to kill the daemon under it.
 * Everything else (and every request while `delayMs` is 0) passes at once, unchanged.
 */
import * as http from 'node:http';

export interface SlowFront {
  /** `127.0.0.1:PORT`, for image references and backend hosts. */
  host: string;
  delayMs: number;
  close(): Promise<void>;
}

export async function slowFront(target: URL): Promise<SlowFront> {
  const agent = new http.Agent({ keepAlive: true });
  const server = http.createServer((req, res) => {
    const pass = () => {
      const up = http.request({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers, agent }, (ur) => {
        res.writeHead(ur.statusCode ?? 502, ur.headers);
        ur.pipe(res);
      });
      up.on('error', () => res.destroy());
      req.pipe(up);
    };
    const slow = req.method === 'GET' && /\/blobs\/sha256:/.test(req.url ?? '') ? front.delayMs : 0;
    if (slow) setTimeout(pass, slow);
    else pass();
  });
  const front: SlowFront = {
    host: '',
    delayMs: 0,
    close: () =>
      new Promise<void>((r) => {
        agent.destroy();
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  front.host = `127.0.0.1:${(server.address() as { port: number }).port}`;
  return front;
}
