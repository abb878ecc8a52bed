/**
 * The snapshots gRPC service against containerd's contracts, over a real unix socket with a gRPC
 * client built from the same proto: mount shapes, error codes, Update/List/Usage semantics, the
 * remote-snapshot handshake for nydus blob layers, and crash safety of the metadata store.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import Database from 'better-sqlite3';
import { parseConfig } from '../src/snapshotter/config';
import { runSnapshotter, RunningSnapshotter } from '../src/snapshotter/run';
import { loadSnapshotsService } from '../src/snapshotter/service';
import { MetaStore } from '../src/snapshotter/store';
import { REPO_ROOT } from './helpers/fixtures';

type Client = grpc.Client & Record<string, Function>;

function call<T = any>(c: Client, method: string, req: object): Promise<T> {
  return new Promise((resolve, reject) => c[method](req, (err: grpc.ServiceError | null, res: T) => (err ? reject(err) : resolve(res))));
}

function list(c: Client, filters: string[] = []): Promise<{ batches: number; infos: any[] }> {
  return new Promise((resolve, reject) => {
    const infos: any[] = [];
    let batches = 0;
    const s = c.List({ snapshotter: 'nydus', filters });
    s.on('data', (m: { info: any[] }) => {
      batches++;
      infos.push(...m.info);
    });
    s.on('error', reject);
    s.on('end', () => resolve({ batches, infos }));
  });
}

async function code(p: Promise<unknown>): Promise<number> {
  try {
    await p;
  } catch (e) {
    return (e as grpc.ServiceError).code;
  }
  return grpc.status.OK;
}

describe('snapshots service', () => {
  let dir: string;
  let sn: RunningSnapshotter;
  let c: Client;
  let root: string;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'snsvc-'));
    root = path.join(dir, 'root');
    // Shared mode: nydus blob layers are handled remotely; no nydusd is started unless an image is mounted.
    const cfg = parseConfig('daemon_mode = "shared"\n[metrics]\naddress = "127.0.0.1:0"', 'test', { root, address: path.join(dir, 'sn.sock') });
    sn = await runSnapshotter(cfg);
    const Ctor = grpc.makeGenericClientConstructor(loadSnapshotsService(), 'Snapshots');
    c = new Ctor(`unix://${cfg.address}`, grpc.credentials.createInsecure()) as unknown as Client;
  });

  afterAll(async () => {
    c?.close();
    await sn?.close(true);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('overlay lifecycle: bind for a root layer, overlay over committed parents, ro views', async () => {
    const p1 = await call(c, 'Prepare', { key: 'default/1/base', parent: '' });
    expect(p1.mounts).toHaveLength(1);
    expect(p1.mounts[0].type).toBe('bind');
    expect(p1.mounts[0].options).toEqual(['rw', 'rbind']);
    const baseFs = p1.mounts[0].source as string;
    fs.writeFileSync(path.join(baseFs, 'hello'), 'world');
    await call(c, 'Commit', { name: 'default/2/base-c', key: 'default/1/base', labels: { 'containerd.io/snapshot/x': '1' } });
    expect(fs.existsSync(path.join(baseFs, 'hello'))).toBe(true); // the id (directory) survives Commit

    await call(c, 'Prepare', { key: 'default/3/l2', parent: 'default/2/base-c' });
    await call(c, 'Commit', { name: 'default/4/l2-c', key: 'default/3/l2' });
    const child = await call(c, 'Prepare', { key: 'default/5/ctr', parent: 'default/4/l2-c' });
    expect(child.mounts[0].type).toBe('overlay');
    const opts: string[] = child.mounts[0].options;
    const lower = opts.find((o) => o.startsWith('lowerdir='))!.slice('lowerdir='.length).split(':');
    expect(lower).toHaveLength(2);
    expect(lower[1]).toBe(baseFs); // nearest parent first
    expect(opts.some((o) => o.startsWith('upperdir='))).toBe(true);
    expect(opts.some((o) => o.startsWith('workdir='))).toBe(true);

    const v1 = await call(c, 'View', { key: 'default/6/v1', parent: 'default/2/base-c' });
    expect(v1.mounts[0]).toMatchObject({ type: 'bind', source: baseFs, options: ['ro', 'rbind'] });
    const v2 = await call(c, 'View', { key: 'default/7/v2', parent: 'default/4/l2-c' });
    expect(v2.mounts[0].type).toBe('overlay');
    expect(v2.mounts[0].options.some((o: string) => o.startsWith('upperdir='))).toBe(false);

    const m = await call(c, 'Mounts', { key: 'default/5/ctr' });
    expect(m.mounts).toEqual(child.mounts);
    const st = await call(c, 'Stat', { key: 'default/2/base-c' });
    expect(st.info).toMatchObject({ name: 'default/2/base-c', parent: '', kind: 'COMMITTED' });
    expect(st.info.labels['containerd.io/snapshot/x']).toBe('1');
  });

  test("containerd's error codes", async () => {
    await call(c, 'Prepare', { key: 'e/1/a', parent: '' });
    expect(await code(call(c, 'Prepare', { key: 'e/1/a', parent: '' }))).toBe(grpc.status.ALREADY_EXISTS);
    expect(await code(call(c, 'Prepare', { key: 'e/2/b', parent: 'nope' }))).toBe(grpc.status.NOT_FOUND);
    expect(await code(call(c, 'Prepare', { key: 'e/3/c', parent: 'e/1/a' }))).toBe(grpc.status.INVALID_ARGUMENT);
    expect(await code(call(c, 'Stat', { key: 'missing' }))).toBe(grpc.status.NOT_FOUND);
    expect(await code(call(c, 'Mounts', { key: 'default/2/base-c' }))).toBe(grpc.status.FAILED_PRECONDITION);
    expect(await code(call(c, 'Remove', { key: 'default/2/base-c' }))).toBe(grpc.status.FAILED_PRECONDITION);
    expect(await code(call(c, 'Commit', { name: 'e/4/x', key: 'default/6/v1' }))).toBe(grpc.status.FAILED_PRECONDITION);
    expect(await code(call(c, 'Commit', { name: 'default/2/base-c', key: 'e/1/a' }))).toBe(grpc.status.ALREADY_EXISTS);
    expect(await code(call(c, 'Remove', { key: 'missing' }))).toBe(grpc.status.NOT_FOUND);
    expect(
      await code(call(c, 'Update', { info: { name: 'e/1/a', labels: {} }, update_mask: { paths: ['parent'] } })),
    ).toBe(grpc.status.INVALID_ARGUMENT);
    expect(await code(list(c, ['labels."unterminated'] as string[]))).toBe(grpc.status.INVALID_ARGUMENT);
  });

  test('Update follows field paths; List filters and streams in batches', async () => {
    await call(c, 'Prepare', { key: 'u/1/a', parent: '', labels: { keep: 'k', drop: 'd' } });
    // As containerd sends it: only the forwarded subset, Go zero times, a path whose value is absent.
    const res = await call(c, 'Update', {
      info: { name: 'u/1/a', labels: { 'containerd.io/snapshot/foo': 'bar' }, kind: 'COMMITTED', created_at: { seconds: '-62135596800', nanos: 0 } },
      update_mask: { paths: ['labels.containerd.io/snapshot/foo', 'labels.drop'] },
    });
    expect(res.info.labels).toEqual({ keep: 'k', 'containerd.io/snapshot/foo': 'bar' });
    expect(res.info.kind).toBe('ACTIVE');
    const replaced = await call(c, 'Update', { info: { name: 'u/1/a', labels: { only: 'this' } }, update_mask: { paths: ['labels'] } });
    expect(replaced.info.labels).toEqual({ only: 'this' });

    expect((await list(c, ['labels."only"==this'])).infos.map((i) => i.name)).toEqual(['u/1/a']);
    expect((await list(c, ['labels.only==other'])).infos).toHaveLength(0);
    expect((await list(c, ['kind==committed,parent==""'])).infos.map((i) => i.name)).toEqual(['default/2/base-c']);
    expect((await list(c, ['name~=^u/', 'name==default/2/base-c'])).infos.map((i) => i.name).sort()).toEqual(['default/2/base-c', 'u/1/a']);

    for (let i = 0; i < 150; i++) await call(c, 'Prepare', { key: `bulk/${i}`, parent: '' });
    const all = await list(c);
    expect(all.infos.length).toBeGreaterThanOrEqual(150 + 7);
    expect(all.batches).toBeGreaterThanOrEqual(2);
    for (let i = 0; i < 150; i++) await call(c, 'Remove', { key: `bulk/${i}` });
  });

  test('Usage counts the upper dir of active snapshots and the stored size of committed ones', async () => {
    const p = await call(c, 'Prepare', { key: 'us/1/a', parent: '' });
    fs.writeFileSync(path.join(p.mounts[0].source, 'f'), Buffer.alloc(64 * 1024, 1));
    const u = await call(c, 'Usage', { key: 'us/1/a' });
    expect(Number(u.size)).toBeGreaterThanOrEqual(64 * 1024);
    expect(Number(u.inodes)).toBe(2);
    await call(c, 'Commit', { name: 'us/2/a-c', key: 'us/1/a' });
    const uc = await call(c, 'Usage', { key: 'us/2/a-c' });
    expect(uc).toEqual(u);
  });

  test('remote handshake: a nydus blob layer is committed under its chainID and answered AlreadyExists', async () => {
    const labels = {
      'containerd.io/snapshot.ref': 'sha256:chain1',
      'containerd.io/snapshot/nydus-blob': 'true',
      'containerd.io/snapshot/remote/stargz.reference': '127.0.0.1:5000/x:latest',
    };
    const err = await call(c, 'Prepare', { key: 'default/20/extract-1 sha256:chain1', parent: '', labels }).catch((e) => e);
    expect(err.code).toBe(grpc.status.ALREADY_EXISTS);
    // What containerd asks next, with exactly this filter.
    const found = await list(c, ['labels."containerd.io/snapshot.ref"==sha256:chain1,parent==""']);
    expect(found.infos).toHaveLength(1);
    expect(found.infos[0]).toMatchObject({ name: 'sha256:chain1', parent: '', kind: 'COMMITTED' });
    expect(found.infos[0].labels['containerd.io/snapshot/remote']).toBeTruthy();
    // Second layer on top; then the same chain from another namespace is the same success.
    const l2 = { ...labels, 'containerd.io/snapshot.ref': 'sha256:chain2' };
    expect(await code(call(c, 'Prepare', { key: 'default/21/extract-2', parent: 'sha256:chain1', labels: l2 }))).toBe(grpc.status.ALREADY_EXISTS);
    expect((await call(c, 'Stat', { key: 'sha256:chain2' })).info.parent).toBe('sha256:chain1');
    expect(await code(call(c, 'Prepare', { key: 'other/1/extract-1', parent: '', labels }))).toBe(grpc.status.ALREADY_EXISTS);
    // Only the committed snapshots exist: no leftover active keys.
    expect(await code(call(c, 'Stat', { key: 'default/20/extract-1 sha256:chain1' }))).toBe(grpc.status.NOT_FOUND);
    // A plain layer with a target label is prepared normally (containerd downloads it).
    const plain = await call(c, 'Prepare', { key: 'default/22/extract-3', parent: '', labels: { 'containerd.io/snapshot.ref': 'sha256:plain' } });
    expect(plain.mounts[0].type).toBe('bind');
  });

  test('a nydus image without an image reference label is refused clearly and leaves nothing behind', async () => {
    const boot = await call(c, 'Prepare', { key: 'nr/1/boot', parent: '', labels: { 'containerd.io/snapshot/nydus-bootstrap': 'true' } });
    fs.mkdirSync(path.join(boot.mounts[0].source, 'image'));
    fs.writeFileSync(path.join(boot.mounts[0].source, 'image', 'image.boot'), 'not used');
    await call(c, 'Commit', { name: 'nr/2/boot-c', key: 'nr/1/boot' });
    const err = await call(c, 'Prepare', { key: 'nr/3/ctr', parent: 'nr/2/boot-c' }).catch((e) => e);
    expect(err.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(err.details).toContain('containerd.io/snapshot/cri.image-ref');
    expect(await code(call(c, 'Stat', { key: 'nr/3/ctr' }))).toBe(grpc.status.NOT_FOUND);
  });

  test('Prometheus metrics at /v1/metrics count the RPCs by operation and result', async () => {
    expect(sn.metricsUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/v1\/metrics$/);
    // In shared mode the nydusd is started with the snapshotter, before any image needs it.
    let text = '';
    for (let i = 0; i < 300 && !text.includes('nydusd_counts 1'); i++) {
      if (i) await new Promise((r) => setTimeout(r, 100));
      text = await (await fetch(sn.metricsUrl!)).text();
    }
    expect(text).toMatch(/snapshotter_snapshot_operation_elapsed_milliseconds_count\{operation="prepare",result="ok"\} [1-9]/);
    expect(text).toMatch(/snapshotter_snapshot_operation_elapsed_milliseconds_count\{operation="prepare",result="ALREADY_EXISTS"\} [1-9]/);
    expect(text).toContain('nydusd_counts 1');
    expect(text).toContain('nydusd_lifetime_event_counts{nydusd_event="started"} 1');
    expect((await fetch(sn.metricsUrl!.replace('/v1/metrics', '/'))).status).toBe(404);
  });

  test('Cleanup running beside Prepare never removes the new snapshot (containerd GC races container starts)', async () => {
    for (let i = 0; i < 20; i++) {
      const [, p] = await Promise.all([call(c, 'Cleanup', {}), call(c, 'Prepare', { key: `race/${i}`, parent: '' })]);
      expect(fs.existsSync(p.mounts[0].source)).toBe(true);
    }
    for (let i = 0; i < 20; i++) await call(c, 'Remove', { key: `race/${i}` });
  });

  test('Remove deletes the directory; Cleanup removes directories no record owns', async () => {
    const p = await call(c, 'Prepare', { key: 'rm/1/a', parent: '' });
    const snapDir = path.dirname(p.mounts[0].source);
    await call(c, 'Remove', { key: 'rm/1/a' });
    expect(fs.existsSync(snapDir)).toBe(false);
    const orphan = path.join(root, 'snapshots', '999999');
    const tmp = path.join(root, 'snapshots', 'new-abc');
    fs.mkdirSync(path.join(orphan, 'fs'), { recursive: true });
    fs.mkdirSync(tmp);
    await call(c, 'Cleanup', {});
    expect(fs.existsSync(orphan)).toBe(false);
    expect(fs.existsSync(tmp)).toBe(false);
    expect(fs.existsSync(path.join(root, 'snapshots', path.basename(snapDir)))).toBe(false);
  });
});

describe('metadata store across kill -9', () => {
  test('a writer killed mid-stream leaves a consistent store: every record has its directory', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'snkill-'));
    try {
      const script = `
        const { Snapshotter } = require(${JSON.stringify(path.join(REPO_ROOT, 'dist/snapshotter/snapshotter.js'))});
        const sn = new Snapshotter({ root: ${JSON.stringify(dir)} });
        (async () => {
          let parent = '';
          for (let i = 0; i < 100000; i++) {
            await sn.prepare('k' + i, parent, { n: String(i) });
            require('fs').writeFileSync(${JSON.stringify(dir)} + '/progress', String(i));
            await sn.commit('c' + i, 'k' + i, {});
            parent = 'c' + i;
          }
        })();`;
      const child = spawn(process.execPath, ['-e', script], { stdio: 'ignore' });
      const deadline = Date.now() + 60_000;
      while (Date.now() < deadline) {
        const n = fs.existsSync(path.join(dir, 'progress')) ? Number(fs.readFileSync(path.join(dir, 'progress'), 'utf8')) : 0;
        if (n >= 30) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      const store = new MetaStore(path.join(dir, 'metadata.db'));
      const recs = store.all();
      store.close();
      expect(recs.length).toBeGreaterThanOrEqual(30);
      const db = new Database(path.join(dir, 'metadata.db'), { readonly: true });
      expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
      db.close();
      for (const r of recs) {
        expect(fs.existsSync(path.join(dir, 'snapshots', String(r.id), 'fs'))).toBe(true);
        if (r.parent) expect(recs.some((p) => p.name === r.parent && p.kind === 'COMMITTED')).toBe(true);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('metadata store format', () => {
  test('a store written with millisecond timestamps opens with the same times in microseconds', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'snstore-'));
    try {
      const file = path.join(dir, 'metadata.db');
      const old = new Database(file);
      old.exec(`CREATE TABLE snapshots (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE, parent TEXT NOT NULL DEFAULT '',
        kind TEXT NOT NULL, labels TEXT NOT NULL DEFAULT '{}', created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL,
        size INTEGER NOT NULL DEFAULT 0, inodes INTEGER NOT NULL DEFAULT 0)`);
      old.prepare("INSERT INTO snapshots (key, kind, created_ms, updated_ms) VALUES ('c1', 'COMMITTED', 1700000000123, 1700000000456)").run();
      old.close();
      const store = new MetaStore(file);
      try {
        expect(store.mustGet('c1')).toMatchObject({ name: 'c1', kind: 'COMMITTED', createdUs: 1700000000123000, updatedUs: 1700000000456000 });
        const before = Date.now() * 1000;
        const a = store.create('ACTIVE', 'a1', 'c1', {});
        expect(a.createdUs).toBeGreaterThanOrEqual(before);
        expect(a.createdUs).toBeLessThanOrEqual(Date.now() * 1000 + 999);
      } finally {
        store.close();
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
