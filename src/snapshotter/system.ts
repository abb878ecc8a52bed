/**
 * The snapshotter's system controller (upstream pkg/system, `[system] enable = true`): an HTTP API
 * on a unix socket (mode 0600) for operators.
 *
 *   GET /api/v1/daemons            the nydusd processes the daemon manager runs: id, pid, API socket
 *   PUT /api/v1/daemons/upgrade    {"nydusd_path": "/new/nydusd", "version"?: "...", "policy"?: "rolling"}
 *       (also as /api/v1/nydusd/upgrade, the path upstream's docs give)
 *                                  hot upgrade: the shared nydusd is replaced by that program under
 *                                  running containers (recover_policy "failover"; docs/snapshotter.md)
 *
 * Errors are `{code, message}` with a 4xx/5xx status, one line each. Unlike upstream, the
 * configured nydusd_path is not re-pointed at the new program: the next start of a daemon uses
 * the configured one again (upstream swaps a symlink; here the config file stays the truth).
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { logger } from '../util/log';
import type { DaemonManager } from './daemons';

const log = logger('system-controller');

function send(res: http.ServerResponse, status: number, body?: unknown): void {
  if (body === undefined) {
    res.writeHead(status).end();
    return;
  }
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}

async function readJson(req: http.IncomingMessage): Promise<unknown> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const c of req) {
    n += (c as Buffer).length;
    if (n > 1 << 20) throw new Error('body larger than 1 MiB');
    parts.push(c as Buffer);
  }
  const text = Buffer.concat(parts).toString('utf8');
  return text ? JSON.parse(text) : undefined;
}

export async function serveSystemController(address: string, daemons: DaemonManager): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const route = `${req.method} ${new URL(req.url ?? '/', 'http://system').pathname}`;
    const fail = (status: number, message: string) => send(res, status, { code: status >= 500 ? 'INTERNAL' : 'INVALID', message });
    if (route === 'GET /api/v1/daemons') return send(res, 200, daemons.list().map((d) => ({ id: d.id, pid: d.pid, api_socket: d.apiSock })));
    // Upstream routes /api/v1/daemons/upgrade; its docs name /api/v1/nydusd/upgrade: both are served.
    if (route !== 'PUT /api/v1/daemons/upgrade' && route !== 'PUT /api/v1/nydusd/upgrade') return fail(404, `${route}: no such endpoint`);
    readJson(req)
      .then(async (body) => {
        const b = (body ?? {}) as { nydusd_path?: unknown; version?: unknown; policy?: unknown };
        if (typeof b.nydusd_path !== 'string' || !b.nydusd_path) return fail(400, 'nydusd_path: expected the path of the new nydusd program');
        if (b.policy !== undefined && b.policy !== 'rolling' && b.policy !== 'immediate') return fail(400, `policy: expected "rolling" or "immediate", got ${JSON.stringify(b.policy)}`);
        // One shared daemon: rolling and immediate are the same here. The version is not checked.
        if (b.version !== undefined) log.warn({ version: b.version }, 'upgrade: "version" is accepted but not compared with the new nydusd');
        try {
          const done = await daemons.upgrade(path.resolve(b.nydusd_path));
          send(res, 200, done);
        } catch (e) {
          const msg = (e as Error).message.split('\n')[0];
          log.error({ err: msg }, 'nydusd upgrade failed');
          fail(/needs recover_policy|not a file/.test(msg) ? 412 : 500, msg);
        }
      })
      .catch((e: Error) => fail(400, `body: ${e.message}`));
  });
  fs.mkdirSync(path.dirname(address), { recursive: true, mode: 0o700 });
  fs.rmSync(address, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(address, () => resolve());
  });
  fs.chmodSync(address, 0o600);
  return server;
}
