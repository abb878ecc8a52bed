/**
 * Acceptance 5 (tars; bootstrap corruption is the format's test): at least 1,000 randomly
 * corrupted tars and tar.gz files each end, within a time bound, in either a valid build or a
 * clean one-line BuildError, and a failed build leaves nothing behind. Header-field mutations get a
 * fixed checksum so they reach our parser instead of stopping at tar-stream's checksum test.
 * Also: the builder's bootstrap consumers (check, inspect, merge, unpack) on corrupted bootstraps;
 * `..` components and absolute names are refused naming the entry; the CLI prints one line.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { BuildError, checkBootstrap, createLayer, inspectBootstrap, loadBootstrap, mergeBootstraps, unpackToTar } from '../src/builder';
import { decodeBootstrap } from '../src/format/decode';
import { REPO_ROOT } from './helpers/fixtures';
import { everyKindEntries, tarBuffer } from './helpers/tars';

jest.setTimeout(10 * 60_000);
const CASES = Number(process.env.BUILDER_FUZZ_CASES ?? 1200);
const PER_CASE_MS = 10_000;

let work: string;
beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'builder-robust-'));
});
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

/** Seeded PRNG so a failing case can be reproduced from its number. */
function rng(seed: number): () => number {
  let x = seed * 2654435761 + 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

function headerOffsets(tar: Buffer): number[] {
  // Walk the archive's 512-byte headers (valid input, so sizes are trustworthy).
  const out: number[] = [];
  let off = 0;
  while (off + 512 <= tar.length && tar[off] !== 0) {
    out.push(off);
    const size = parseInt(tar.toString('latin1', off + 124, off + 136).replace(/\0.*$/, '').trim() || '0', 8);
    off += 512 + Math.ceil(size / 512) * 512;
  }
  return out;
}

function fixChecksum(tar: Buffer, off: number): void {
  tar.fill(0x20, off + 148, off + 156);
  let sum = 0;
  for (let i = off; i < off + 512; i++) sum += tar[i];
  tar.write(sum.toString(8).padStart(6, '0') + '\0 ', off + 148, 'latin1');
}

const FIELDS: Array<[number, number]> = [[0, 100], [100, 8], [108, 8], [116, 8], [124, 12], [136, 12], [156, 1], [157, 100], [329, 8], [337, 8], [345, 155]];

function corrupt(base: Buffer, headers: number[], r: () => number): Buffer {
  const buf = Buffer.from(base);
  const kind = Math.floor(r() * 5);
  if (kind === 0) {
    // Bit flips anywhere.
    for (let i = 0, n = 1 + Math.floor(r() * 16); i < n; i++) buf[Math.floor(r() * buf.length)] ^= 1 << Math.floor(r() * 8);
    return buf;
  }
  if (kind === 1) return buf.subarray(0, Math.floor(r() * buf.length));
  const h = headers[Math.floor(r() * headers.length)];
  if (kind === 2) {
    // A header field replaced with random bytes or digits, checksum fixed.
    const [o, len] = FIELDS[Math.floor(r() * FIELDS.length)];
    for (let i = 0; i < len; i++) buf[h + o + i] = r() < 0.5 ? 0x30 + Math.floor(r() * 10) : Math.floor(r() * 256);
    fixChecksum(buf, h);
    return buf;
  }
  if (kind === 3) {
    // The bytes after a header (PAX records, sparse maps, file data) scrambled.
    for (let i = 0, n = 1 + Math.floor(r() * 64); i < n; i++) buf[h + 512 + Math.floor(r() * 512)] = Math.floor(r() * 256);
    return buf;
  }
  // Typeflag set to something arbitrary, checksum fixed.
  buf[h + 156] = [0x53, 0x4b, 0x4c, 0x78, 0x67, 0x37, 0x31, 0x32, Math.floor(r() * 256)][Math.floor(r() * 9)];
  fixChecksum(buf, h);
  return buf;
}

async function bounded<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no result within ${PER_CASE_MS} ms`)), PER_CASE_MS);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

test(`${CASES} corrupted tars and tar.gz files end in a valid build or a clean error`, async () => {
  const base = await tarBuffer(everyKindEntries(0x1000));
  const headers = headerOffsets(base);
  expect(headers.length).toBeGreaterThan(30);
  const out = path.join(work, 'out');
  fs.mkdirSync(out);
  const outcomes = { built: 0, refused: 0 };
  const messages = new Set<string>();
  for (let i = 0; i < CASES; i++) {
    const r = rng(i + 1);
    let input = corrupt(base, headers, r);
    const gzip = i % 4 === 3;
    if (gzip) {
      input = gzipSync(input);
      // Damage the gzip stream itself half of the time.
      if (i % 8 === 7) input[10 + Math.floor(r() * (input.length - 10))] ^= 0xff;
    }
    const boot = path.join(out, 'layer.boot');
    try {
      const res = await bounded(
        createLayer({ source: { kind: 'tar', stream: Readable.from([input]), gzip }, bootstrapPath: boot, blobDir: out, compressor: 'none', chunkSize: 0x1000 }),
        `case ${i}`,
      );
      // A build that succeeds must be a readable image.
      expect(decodeBootstrap(fs.readFileSync(boot)).root.kind).toBe('dir');
      outcomes.built++;
      if (res.blobPath) fs.rmSync(res.blobPath);
      fs.rmSync(boot);
    } catch (err) {
      if (!(err instanceof BuildError)) throw new Error(`case ${i}: not a clean error: ${(err as Error)?.stack ?? String(err)}`);
      expect(err.message).not.toContain('\n');
      expect(err.message).toMatch(/^tar(\.gz)?(( after)? entry #\d+ '.*')?: /s);
      messages.add(err.message.replace(/#\d+ '.*?'/, '#N').slice(0, 60));
      outcomes.refused++;
      // Nothing left behind: no bootstrap, no partial blob.
      expect(fs.readdirSync(out)).toEqual([]);
    }
  }
  expect(outcomes.built + outcomes.refused).toBe(CASES);
  // Both outcomes happen and the refusals are varied (the corruptions reach different checks).
  expect(outcomes.refused).toBeGreaterThan(CASES / 4);
  expect(outcomes.built).toBeGreaterThan(0);
  expect(messages.size).toBeGreaterThan(8);
});

test('a parser that stops making progress ends in an error, not a hang', async () => {
  // A PAX size on a directory leaves tar-stream waiting for data it never reads.
  const tar = await tarBuffer([
    { name: 'd', type: 'directory', mode: 0o755, pax: new Map([['size', '5']]) },
    { name: 'd/f', type: 'file', mode: 0o644, size: 1, body: Buffer.from('x') },
  ]);
  await expect(
    bounded(createLayer({ source: { kind: 'tar', stream: Readable.from([tar]), gzip: false }, bootstrapPath: path.join(work, 's.boot'), blobDir: path.join(work, 's') }), 'stall'),
  ).rejects.toThrow(/^tar entry #1 'd': the tar parser stopped making progress/);
});

test('check, inspect, merge and unpack on 400 corrupted bootstraps end in a result or a clean error', async () => {
  const dir = path.join(work, 'boots');
  const blobDir = path.join(dir, 'blobs');
  const tar = await tarBuffer(everyKindEntries(0x1000));
  const good = path.join(dir, 'good.boot');
  await createLayer({ source: { kind: 'tar', stream: Readable.from([tar]), gzip: false }, bootstrapPath: good, blobDir, chunkSize: 0x1000 });
  const base = fs.readFileSync(good);
  const bad = path.join(dir, 'bad.boot');
  let refused = 0;
  for (let i = 0; i < 400; i++) {
    const r = rng(10_000 + i);
    const buf = Buffer.from(base);
    // Flip bytes in the metadata (the first blocks hold superblock, tables, inodes, dirents).
    for (let k = 0, n = 1 + Math.floor(r() * 8); k < n; k++) buf[Math.floor(r() * Math.min(buf.length, 64 << 10))] = Math.floor(r() * 256);
    fs.writeFileSync(bad, r() < 0.1 ? buf.subarray(0, Math.floor(r() * buf.length)) : buf);
    const ops: Array<[string, () => unknown]> = [
      ['check', () => checkBootstrap(bad, blobDir)],
      ['inspect', () => inspectBootstrap(bad)],
      ['merge', () => mergeBootstraps(path.join(dir, 'merged.boot'), [good, bad])],
      ['unpack', () => unpackToTar(loadBootstrap(bad).image, blobDir, new Writable({ write: (_c, _e, done) => done() }))],
    ];
    for (const [name, op] of ops) {
      try {
        await bounded(Promise.resolve().then(op), `case ${i} ${name}`);
      } catch (err) {
        if (!(err instanceof BuildError)) throw new Error(`case ${i} ${name}: not a clean error: ${(err as Error)?.stack ?? String(err)}`);
        expect(err.message).not.toContain('\n');
        refused++;
      }
    }
  }
  expect(refused).toBeGreaterThan(400);
});

test('names with .. or absolute paths are refused, naming the entry', async () => {
  for (const [name, why] of [
    ['../escape', /tar entry #1 '..\/escape': path '..\/escape' has a '..' component/],
    ['a/../../b', /has a '..' component/],
    ['/etc/passwd', /tar entry #1 '\/etc\/passwd': absolute path '\/etc\/passwd' is not allowed/],
  ] as const) {
    const tar = await tarBuffer([{ name, type: 'file', mode: 0o644, size: 1, body: Buffer.from('x') }]);
    await expect(
      createLayer({ source: { kind: 'tar', stream: Readable.from([tar]), gzip: false }, bootstrapPath: path.join(work, 'x.boot'), blobDir: path.join(work, 'x') }),
    ).rejects.toThrow(why);
  }
  const link = await tarBuffer([{ name: 'ok', type: 'link', mode: 0o644, linkname: '../../etc/shadow' }]);
  await expect(
    createLayer({ source: { kind: 'tar', stream: Readable.from([link]), gzip: false }, bootstrapPath: path.join(work, 'x.boot'), blobDir: path.join(work, 'x') }),
  ).rejects.toThrow(/tar entry #1 'ok': path '..\/..\/etc\/shadow' has a '..' component/);
  expect(fs.existsSync(path.join(work, 'x.boot'))).toBe(false);
});

test('the CLI reports bad input in one line with a non-zero exit and no stack trace', async () => {
  const bin = path.join(REPO_ROOT, 'bin', 'nydus-image');
  const base = await tarBuffer(everyKindEntries(0x1000));
  const cases: Array<[string, Buffer]> = [
    ['truncated.tar', base.subarray(0, 700)],
    ['garbage.tar', Buffer.from('this is not a tar archive at all'.repeat(40))],
  ];
  for (const [name, data] of cases) fs.writeFileSync(path.join(work, name), data);
  fs.writeFileSync(path.join(work, 'bad.tar.gz'), Buffer.concat([gzipSync(base).subarray(0, 200), Buffer.alloc(100, 1)]));
  fs.writeFileSync(path.join(work, 'bad.boot'), Buffer.alloc(8192, 7));
  const runs: Array<[string[], RegExp]> = [
    [['create', '--type', 'tar-rafs', '-B', path.join(work, 'o.boot'), '-D', work, path.join(work, 'truncated.tar')], /^nydus-image: error: tar/],
    [['create', '--type', 'tar-rafs', '-B', path.join(work, 'o.boot'), '-D', work, path.join(work, 'garbage.tar')], /^nydus-image: error: tar/],
    [['create', '--type', 'targz-rafs', '-B', path.join(work, 'o.boot'), '-D', work, path.join(work, 'bad.tar.gz')], /^nydus-image: error: tar\.gz.*/],
    [['create', '--type', 'tar-rafs', '-B', path.join(work, 'o.boot'), '-D', work, path.join(work, 'missing.tar')], /^nydus-image: error: .*missing\.tar/],
    [['create', '--chunk-size', '0x3000', '-B', path.join(work, 'o.boot'), '-D', work, work], /^nydus-image: error: chunk size 12288 is not a power of two/],
    [['check', '--bootstrap', path.join(work, 'bad.boot')], /^nydus-image: error: .*bad\.boot: /],
    [['inspect', '--bootstrap', path.join(work, 'bad.boot')], /^nydus-image: error: .*bad\.boot: /],
    [['unpack', '--bootstrap', path.join(work, 'bad.boot'), '--blob-dir', work, '--output', path.join(work, 'o.tar')], /^nydus-image: error: .*bad\.boot: /],
    [['merge', '--bootstrap', path.join(work, 'o.boot'), path.join(work, 'bad.boot')], /^nydus-image: error: .*bad\.boot: /],
    [['create', '-B', 'x', '--bogus', work], /^nydus-image: error: unknown option '--bogus'/],
  ];
  for (const [args, want] of runs) {
    const r = spawnSync(bin, args, { encoding: 'utf8', timeout: 60_000 });
    expect({ args, status: r.status === 0 ? 0 : 'failed' }).toEqual({ args, status: 'failed' });
    const lines = r.stderr.trim().split('\n');
    expect({ args, lines }).toEqual({ args, lines: [expect.stringMatching(want)] });
    expect(r.stderr).not.toMatch(/\n\s+at /);
  }
  expect(fs.existsSync(path.join(work, 'o.boot'))).toBe(false);
  expect(fs.readdirSync(work).filter((f) => f.endsWith('.tmp'))).toEqual([]);
});
