import { spawn, ChildProcess } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { request } from 'undici';
import { parseRange } from '../src/backend-proxy/server';
import { REPO_ROOT } from './helpers/fixtures';

describe('parseRange', () => {
  test('forms a registry client sends', () => {
    expect(parseRange('bytes=0-9', 100)).toEqual({ start: 0, end: 9 });
    expect(parseRange('bytes=90-', 100)).toEqual({ start: 90, end: 99 });
    expect(parseRange('bytes=-10', 100)).toEqual({ start: 90, end: 99 });
    expect(parseRange('bytes=95-200', 100)).toEqual({ start: 95, end: 99 });
    expect(parseRange(undefined, 100)).toBeUndefined();
  });
  test('unsatisfiable or multi-range requests are refused with a reason', () => {
    expect(parseRange('bytes=100-', 100)).toHaveProperty('error');
    expect(parseRange('bytes=5-1', 100)).toHaveProperty('error');
    expect(parseRange('bytes=0-1,4-5', 100)).toHaveProperty('error');
  });
});

describe('./bin/nydus-backend-proxy serving a blob dir', () => {
  let dir: string;
  let child: ChildProcess;
  let base: string;
  const blob = crypto.randomBytes(300_000);
  const digest = crypto.createHash('sha256').update(blob).digest('hex');

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nydus-bp-'));
    fs.writeFileSync(path.join(dir, digest), blob);
    child = spawn(path.join(REPO_ROOT, 'bin', 'nydus-backend-proxy'), ['--blobsdir', dir, '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    base = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('proxy did not start within 20 s')), 20_000);
      let out = '';
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /listening on (http:\/\/\S+)/.exec(out);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]);
        }
      });
      child.once('exit', (code) => reject(new Error(`proxy exited with ${code}`)));
    });
  });

  afterAll(() => {
    child?.kill('SIGTERM');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('HEAD reports size and digest; unknown digests are 404', async () => {
    const head = await request(`${base}/v2/library/app/blobs/sha256:${digest}`, { method: 'HEAD' });
    expect(head.statusCode).toBe(200);
    expect(Number(head.headers['content-length'])).toBe(blob.length);
    expect(head.headers['docker-content-digest']).toBe(`sha256:${digest}`);
    await head.body.dump();
    const missing = await request(`${base}/v2/library/app/blobs/sha256:${'0'.repeat(64)}`, { method: 'HEAD' });
    expect(missing.statusCode).toBe(404);
    await missing.body.dump();
  });

  test('Range GETs return exactly the requested bytes', async () => {
    const r = await request(`${base}/v2/a/b/blobs/sha256:${digest}`, { headers: { range: 'bytes=4096-69631' } });
    expect(r.statusCode).toBe(206);
    expect(r.headers['content-range']).toBe(`bytes 4096-69631/${blob.length}`);
    const body = Buffer.from(await r.body.arrayBuffer());
    expect(body.equals(blob.subarray(4096, 69632))).toBe(true);
    const whole = await request(`${base}/v2/a/blobs/sha256:${digest}`);
    expect(Buffer.from(await whole.body.arrayBuffer()).equals(blob)).toBe(true);
  });

  test('path tricks cannot escape the blob dir', async () => {
    const r = await request(`${base}/v2/x/blobs/sha256:..%2F..%2Fetc%2Fpasswd`);
    expect(r.statusCode).toBe(404);
    await r.body.dump();
    const bad = await request(`${base}/v2/x/blobs/sha256:${digest}`, { headers: { range: 'bytes=999999999-' } });
    expect(bad.statusCode).toBe(416);
    await bad.body.dump();
  });
});
