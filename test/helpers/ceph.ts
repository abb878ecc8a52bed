/**
 * A real S3 service for tests: Ceph's RADOS gateway (Debian's ceph-mon, ceph-osd, radosgw) on
 * 127.0.0.1, in a throwaway directory: one monitor, one OSD on memstore (RAM only), pool size 1,
 * cephx off between the daemons, and radosgw with its beast frontend on a free port. S3 requests
 * are checked by the gateway as on any S3 service: SigV4 with the user made here
 * (`radosgw-admin user create --access-key --secret`), anonymous requests refused.
 *
 *   const ceph = await startCeph();          // about 15 s; ~150 MB of RAM for the three daemons
 *   await ceph.createBucket('images');
 *   ... s3 backend config: ceph.s3Config('images', 'nydus/') ...
 *   ceph.gatewayRequests()                   // the gateway's own access log: method, path, status, range
 *   await ceph.stop();                       // every daemon stopped by its PID, directory removed
 *
 * One cluster runs on the host at a time: two started side by side by two test files talked to each
 * other's daemons ("wrong fsid", seen even with distinct ports for all daemons), so `startCeph` waits
 * (bounded) for a host-wide lock that `stop` releases; a lock whose holder died is taken over.
 *
 * The gateway can be stopped and started again (`stopGateway` / `startGateway`, same port) to show
 * what readers do when the service goes away mid-read.
 */
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { request } from 'undici';
import { signS3 } from '../../src/fetch/sigv4';

/** A port in 10000-19999 that binds on 127.0.0.1 now. */
async function randomFreePort(): Promise<number> {
  for (let i = 0; i < 100; i++) {
    const port = crypto.randomInt(10000, 20000);
    const ok = await new Promise<boolean>((resolve) => {
      const srv = net.createServer();
      srv.once('error', () => resolve(false));
      srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
    });
    if (ok) return port;
  }
  throw new Error('ceph: no free port in 10000-19999');
}

export interface GatewayRequest {
  method: string;
  path: string;
  status: number;
  /** The Range header as the gateway logged it (`bytes=A-B`), if any. */
  range?: string;
  /** The S3 user, or `anonymous`. */
  user: string;
}

export interface CephS3 {
  /** `127.0.0.1:PORT` (an S3 `endpoint`). */
  endpoint: string;
  region: string;
  accessKey: string;
  secretKey: string;
  dir: string;
  /** nydusd / nydusify `s3` config for a bucket of this service. */
  s3Config(bucket: string, objectPrefix?: string): Record<string, unknown>;
  createBucket(name: string): Promise<void>;
  /** Uploads `data` as object `key` (tests that plant a damaged object). */
  putObject(bucket: string, key: string, data: Buffer): Promise<void>;
  gatewayRequests(): GatewayRequest[];
  stopGateway(): Promise<void>;
  startGateway(): Promise<void>;
  stop(): Promise<void>;
}

const REGION = 'us-east-1';

function conf(dir: string, monPort: number, rgwPort: number, fsid: string, daemonPorts: number): string {
  return `[global]
fsid = ${fsid}
mon host = v1:127.0.0.1:${monPort}
mon initial members = a
public addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
mon data avail crit = 1
run dir = ${dir}/run
admin socket = ${dir}/run/$name.asok
log file = ${dir}/$name.log
pid file = ${dir}/run/$name.pid
ms bind ipv6 = false
ms bind port min = ${daemonPorts}
ms bind port max = ${daemonPorts + 99}
[mon]
mon data = ${dir}/mon/$name
[osd]
osd objectstore = memstore
memstore device bytes = 2147483648
osd data = ${dir}/osd/$name
osd crush update on start = false
osd class update on start = false
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:${rgwPort}
rgw data = ${dir}/rgw
debug rgw = 1
`;
}

async function until(what: string, ms: number, ok: () => Promise<boolean> | boolean): Promise<void> {
  const end = Date.now() + ms;
  for (let i = 0; i < 1000 && Date.now() < end; i++) {
    if (await ok()) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`ceph: ${what} not ready after ${ms} ms`);
}

async function stopProc(p: ChildProcess | undefined): Promise<void> {
  if (!p || p.exitCode !== null || p.signalCode !== null) return;
  const gone = new Promise<void>((r) => p.once('exit', () => r()));
  p.kill('SIGTERM');
  const t = setTimeout(() => p.kill('SIGKILL'), 5000);
  await gone;
  clearTimeout(t);
}

const LOCK = path.join(os.tmpdir(), 'nydus-ts-ceph.lock');

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Takes the host-wide cluster lock (a directory holding the owner's pid), waiting up to `ms`. */
async function lockHost(ms = 20 * 60_000): Promise<void> {
  const end = Date.now() + ms;
  for (let i = 0; Date.now() < end && i < 100_000; i++) {
    try {
      fs.mkdirSync(LOCK);
      fs.writeFileSync(path.join(LOCK, 'pid'), String(process.pid));
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    let owner = NaN;
    try {
      owner = Number(fs.readFileSync(path.join(LOCK, 'pid'), 'utf8'));
    } catch {
      // Being written or removed right now.
    }
    if (Number.isInteger(owner) && owner > 0 && !pidAlive(owner)) fs.rmSync(LOCK, { recursive: true, force: true });
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`ceph: another test's cluster held ${LOCK} for ${ms} ms`);
}

function unlockHost(): void {
  try {
    if (Number(fs.readFileSync(path.join(LOCK, 'pid'), 'utf8')) === process.pid) fs.rmSync(LOCK, { recursive: true, force: true });
  } catch {
    // Not ours or already gone.
  }
}

/** beast's access-log line: `"GET /b/k HTTP/1.1" 206 500 - "agent" bytes=0-499 latency=…`. */
const ACCESS = / - (\S+) \[[^\]]*\] "(\w+) (\S+) HTTP\/[\d.]+" (\d{3}) \S+ \S+ "[^"]*" (\S+)/;

export async function startCeph(): Promise<CephS3> {
  await lockHost();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nydus-ceph-'));
  for (const d of ['mon', 'osd/osd.0', 'run', 'rgw']) fs.mkdirSync(path.join(dir, d), { recursive: true });
  // Ports are drawn at random below the kernel's ephemeral range rather than handed out by it: two
  // test files starting clusters at once were given the same just-freed port, and one cluster's OSD
  // then joined the other's monitor ("wrong fsid"). The OSD's own ports get a range of this
  // cluster's too (the default 6800-7300 is shared by every cluster on the host).
  const monPort = await randomFreePort();
  let rgwPort = await randomFreePort();
  while (rgwPort === monPort) rgwPort = await randomFreePort();
  const daemonPorts = 20000 + crypto.randomInt(0, 120) * 100;
  const cfg = path.join(dir, 'ceph.conf');
  fs.writeFileSync(cfg, conf(dir, monPort, rgwPort, crypto.randomUUID(), daemonPorts));
  const fsid = /fsid = (\S+)/.exec(fs.readFileSync(cfg, 'utf8'))![1];
  const procs: ChildProcess[] = [];
  let rgw: ChildProcess | undefined;
  const daemon = (cmd: string, args: string[]): ChildProcess => {
    const p = spawn(cmd, ['-c', cfg, ...args, '-f'], { stdio: ['ignore', 'ignore', fs.openSync(path.join(dir, `${path.basename(cmd)}.stderr`), 'a')] });
    p.on('error', () => undefined);
    return p;
  };
  const run = (cmd: string, args: string[]) => execFileSync(cmd, ['-c', cfg, ...args], { encoding: 'utf8', timeout: 60_000, stdio: ['ignore', 'pipe', 'pipe'] });
  // Ceph 16 clients without cephx sometimes send their first command before they hold the monitor
  // map, and the monitor refuses it ("wrong fsid", EPERM): such commands are tried again (bounded).
  const admin = async (cmd: 'ceph' | 'ceph-osd' | 'radosgw-admin', args: string[]): Promise<string> => {
    for (let i = 1; ; i++) {
      try {
        return run(cmd, args);
      } catch (e) {
        if (i >= 10) throw e;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  };
  const stopAll = async () => {
    await stopProc(rgw);
    for (const p of procs.reverse()) await stopProc(p);
  };
  const accessKey = `AK${crypto.randomBytes(8).toString('hex').toUpperCase()}`;
  const secretKey = crypto.randomBytes(20).toString('base64url');
  const endpoint = `127.0.0.1:${rgwPort}`;
  const startGateway = async () => {
    rgw = daemon('radosgw', ['-n', 'client.rgw']);
    await until('radosgw', 60_000, async () => {
      try {
        const r = await request(`http://${endpoint}/`);
        await r.body.dump();
        return true;
      } catch {
        return false;
      }
    });
  };
  try {
    execFileSync('monmaptool', ['--create', '--add', 'a', `v1:127.0.0.1:${monPort}`, '--fsid', fsid, path.join(dir, 'monmap')], { stdio: 'ignore' });
    run('ceph-mon', ['--mkfs', '-i', 'a', '--monmap', path.join(dir, 'monmap')]);
    procs.push(daemon('ceph-mon', ['-i', 'a']));
    const mon = (await admin('ceph', ['--connect-timeout', '30', 'fsid'])).trim();
    if (mon !== fsid) throw new Error(`ceph: the monitor on port ${monPort} is another cluster's (${mon})`);
    const id = (await admin('ceph', ['--connect-timeout', '30', 'osd', 'create'])).trim();
    if (id !== '0') throw new Error(`ceph: expected OSD id 0, got ${id}`);
    // The OSD is placed in the CRUSH map here rather than by itself at start: on a loaded machine
    // its start-up command sometimes reached the monitor before its monitor map ("wrong fsid"), and
    // it never came up.
    await admin('ceph', ['osd', 'crush', 'add-bucket', 'h1', 'host']);
    await admin('ceph', ['osd', 'crush', 'move', 'h1', 'root=default']);
    await admin('ceph', ['osd', 'crush', 'add', 'osd.0', '1.0', 'host=h1']);
    await admin('ceph-osd', ['-i', '0', '--mkfs']);
    procs.push(daemon('ceph-osd', ['-i', '0']));
    await until('osd.0 up', 60_000, async () => /"num_up_osds":1/.test(await admin('ceph', ['osd', 'stat', '-f', 'json']).catch(() => '')));
    await startGateway();
    await admin('radosgw-admin', ['user', 'create', '--uid=nydus', '--display-name=nydus', `--access-key=${accessKey}`, `--secret=${secretKey}`]);
  } catch (e) {
    await stopAll();
    const logs = ['ceph-mon.stderr', 'ceph-osd.stderr', 'radosgw.stderr'].map((f) => { try { return fs.readFileSync(path.join(dir, f), 'utf8').slice(-400); } catch { return ''; } }).join('\n');
    if (!process.env.KEEP_CEPH) fs.rmSync(dir, { recursive: true, force: true });
    unlockHost();
    throw new Error(`${(e as Error).message}\n${logs}`);
  }

  const signed = async (method: string, p: string, body?: Buffer) => {
    const url = new URL(`http://${endpoint}${p}`);
    const sha = crypto.createHash('sha256').update(body ?? Buffer.alloc(0)).digest('hex');
    const headers = signS3(method, url, body ? { 'content-length': String(body.length) } : {}, REGION, { accessKeyId: accessKey, secretAccessKey: secretKey }, sha);
    const r = await request(url, { method: method as 'PUT', headers, body });
    const text = await r.body.text();
    if (r.statusCode !== 200) throw new Error(`ceph: ${method} ${p}: HTTP ${r.statusCode} ${text.slice(0, 200)}`);
  };
  return {
    endpoint,
    region: REGION,
    accessKey,
    secretKey,
    dir,
    s3Config: (bucket, objectPrefix = '') => ({
      scheme: 'http', endpoint, region: REGION, bucket_name: bucket, object_prefix: objectPrefix, access_key_id: accessKey, access_key_secret: secretKey,
    }),
    createBucket: (name) => signed('PUT', `/${name}`),
    putObject: (bucket, key, data) => signed('PUT', `/${bucket}/${key}`, data),
    gatewayRequests: () => {
      let text = '';
      try {
        text = fs.readFileSync(path.join(dir, 'client.rgw.log'), 'utf8');
      } catch {
        return [];
      }
      const out: GatewayRequest[] = [];
      for (const line of text.split('\n')) {
        if (!line.includes(' beast: ')) continue;
        const m = ACCESS.exec(line);
        if (m) out.push({ user: m[1], method: m[2], path: m[3], status: Number(m[4]), range: m[5] === '-' ? undefined : m[5] });
      }
      return out;
    },
    stopGateway: () => stopProc(rgw),
    startGateway,
    stop: async () => {
      await stopAll();
      fs.rmSync(dir, { recursive: true, force: true });
      unlockHost();
    },
  };
}
