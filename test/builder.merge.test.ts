/**
 * Acceptance 2: a multi-layer image with deletions and an opaque directory. Each layer tar is built
 * on its own (whiteouts kept as entries), the layer bootstraps are merged, and the merged bootstrap
 * mounted by the kernel with every blob as a device equals the root filesystem `umoci unpack`
 * makes of the same layers. Also: mergeLayers semantics on the model, and the blob table shrinking
 * to the blobs still referenced.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createLayer, mergeBootstraps, mergeLayers } from '../src/builder';
import { decodeBootstrap } from '../src/format/decode';
import { RafsImage } from '../src/format/model';
import { REPO_ROOT } from './helpers/fixtures';
import { multiLayerEntries, writeTar } from './helpers/tars';
import { compareTrees, fsckErofs, Mounted, mountRafs, snapshotTree } from './helpers/erofs';
import { testWith } from './helpers/capabilities';

jest.setTimeout(10 * 60_000);

let work: string;
const mounts: Mounted[] = [];
beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'builder-merge-'));
});
afterAll(() => {
  for (const m of mounts.splice(0)) m.unmount();
  fs.rmSync(work, { recursive: true, force: true });
});

async function buildLayers(dir: string, compressor: 'none' | 'zstd'): Promise<{ tars: string[]; boots: string[]; blobDir: string; images: RafsImage[] }> {
  const blobDir = path.join(dir, 'blobs');
  const tars: string[] = [];
  const boots: string[] = [];
  const images: RafsImage[] = [];
  const layers = multiLayerEntries();
  for (let i = 0; i < layers.length; i++) {
    const tar = path.join(dir, `layer${i + 1}.tar`);
    await writeTar(tar, layers[i]);
    const boot = path.join(dir, `layer${i + 1}.boot`);
    const res = await createLayer({ source: { kind: 'tar', stream: fs.createReadStream(tar), gzip: false }, bootstrapPath: boot, blobDir, compressor });
    tars.push(tar);
    boots.push(boot);
    images.push(res.image);
  }
  return { tars, boots, blobDir, images };
}

testWith(['root', 'erofs', 'loop'], 'merged bootstrap mounted by the kernel equals umoci unpack of the same image', async () => {
  const dir = path.join(work, 'kernel');
  const { tars, boots, blobDir } = await buildLayers(dir, 'none');
  // Layer bootstraps keep whiteouts as ordinary entries.
  const layer2 = decodeBootstrap(fs.readFileSync(boots[1]));
  expect(layer2.root.children!.get('var')!.children!.get('cache')!.children!.has('.wh..wh..opq')).toBe(true);

  const merged = path.join(dir, 'merged.boot');
  execFileSync(path.join(REPO_ROOT, 'bin', 'nydus-image'), ['merge', '--bootstrap', merged, ...boots]);
  const image = decodeBootstrap(fs.readFileSync(merged));
  const blobs = image.blobs.map((b) => path.join(blobDir, b.blobId));
  expect(blobs.length).toBe(3);
  expect(fsckErofs(merged, blobs)).toMatchObject({ ok: true });

  // The same layers through umoci.
  const layout = path.join(dir, 'oci');
  execFileSync('umoci', ['init', '--layout', layout]);
  execFileSync('umoci', ['new', '--image', `${layout}:t`]);
  for (const tar of tars) execFileSync('umoci', ['raw', 'add-layer', '--image', `${layout}:t`, tar]);
  const bundle = path.join(dir, 'bundle');
  execFileSync('umoci', ['unpack', '--image', `${layout}:t`, bundle]);

  const m = mountRafs(merged, blobs);
  mounts.push(m);
  const got = snapshotTree(m.dir);
  // The root's own attributes come from umoci's bundle, not from the layers: leave it out.
  expect(compareTrees(snapshotTree(path.join(bundle, 'rootfs')), got, { ignore: (p) => p === '/' })).toEqual([]);
  // What the layers did is visible (so the equality is about something).
  expect(got.get('/etc/motd')).toMatchObject({ mode: 0o600 });
  expect(got.get('/usr/share/doc')).toBeUndefined();
  expect([...got.keys()].filter((p) => p.startsWith('/var/cache/'))).toEqual(['/var/cache/new']);
  expect(got.get('/var/cache')!.mode).toBe(0o700);
  expect(got.get('/opt/app')!.type).toBe('file');
  expect(got.get('/srv/added-in-2')).toBeUndefined();
  expect(got.get('/usr/lib/libx.so')!.links).toEqual(['/usr/lib/libx.so', '/usr/lib/libx.so.1']);
  expect([...got.keys()].some((p) => p.includes('.wh.'))).toBe(false);
});

test('mergeLayers drops blobs no longer referenced and remaps chunk blob indexes', async () => {
  const dir = path.join(work, 'model');
  const { images, blobDir } = await buildLayers(dir, 'zstd');
  // A fourth layer that makes the root opaque hides every lower blob.
  const top = path.join(dir, 'top.tar');
  await writeTar(top, [
    { name: '.wh..wh..opq', type: 'file', mode: 0o644, size: 0 },
    { name: 'only', type: 'file', mode: 0o644, size: 5, body: Buffer.from('only\n') },
  ]);
  const res = await createLayer({ source: { kind: 'tar', stream: fs.createReadStream(top), gzip: false }, bootstrapPath: path.join(dir, 'top.boot'), blobDir });
  const merged = mergeLayers([...images, res.image]);
  expect([...merged.root.children!.keys()]).toEqual(['only']);
  expect(merged.blobs.map((b) => b.blobId)).toEqual([res.blobId]);
  expect(merged.root.children!.get('only')!.chunks![0].blobIndex).toBe(0);

  // Without the opaque layer, layer 3 references no blob of its own data twice; all three remain.
  const three = mergeLayers(images);
  expect(three.blobs.length).toBe(3);
  const libx = three.root.children!.get('usr')!.children!.get('lib')!.children!.get('libx.so')!;
  expect(three.blobs[libx.chunks![0].blobIndex].blobId).toBe(images[0].blobs[0].blobId);

  // The file-level API writes a bootstrap that decodes to the same tree.
  const out = path.join(dir, 'merged.boot');
  mergeBootstraps(out, [path.join(dir, 'layer1.boot'), path.join(dir, 'layer2.boot'), path.join(dir, 'layer3.boot')]);
  const back = decodeBootstrap(fs.readFileSync(out));
  expect([...back.root.children!.keys()].sort()).toEqual([...three.root.children!.keys()].sort());
});

test('merge refuses layers with different chunk sizes, naming them', async () => {
  const dir = path.join(work, 'sizes');
  const tar = path.join(dir, 'a.tar');
  await writeTar(tar, [{ name: 'f', type: 'file', mode: 0o644, size: 3, body: Buffer.from('abc') }]);
  const a = await createLayer({ source: { kind: 'tar', stream: fs.createReadStream(tar), gzip: false }, bootstrapPath: path.join(dir, 'a.boot'), blobDir: dir, chunkSize: 0x10000 });
  const b = await createLayer({ source: { kind: 'tar', stream: fs.createReadStream(tar), gzip: false }, bootstrapPath: path.join(dir, 'b.boot'), blobDir: dir });
  expect(() => mergeLayers([a.image, b.image])).toThrow(/layer 2 has chunk size 1048576, layer 1 has 65536/);
});
