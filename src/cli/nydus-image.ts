/**
 * nydus-image: build and merge RAFS v6 images; check, inspect and unpack RAFS v5 and v6 images.
 *
 *   nydus-image create --type dir-rafs|tar-rafs|targz-rafs --bootstrap FILE (--blob FILE | --blob-dir DIR)
 *     [--compressor zstd|none] [--chunk-size 0x100000] [--digester sha256|blake3]
 *     [--chunk-dict BOOTSTRAP] [--prefetch-files LIST] [--output-json FILE] SOURCE
 *   nydus-image merge --bootstrap OUT LAYER_BOOTSTRAP...
 *   nydus-image check --bootstrap FILE [--blob-dir DIR] [--json]
 *   nydus-image inspect --bootstrap FILE [--json]
 *   nydus-image unpack --bootstrap FILE --blob-dir DIR --output OUT.tar
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Transform } from 'node:stream';
import { Command, Option } from 'commander';
import { SingleBar } from 'cli-progress';
import {
  checkBootstrap,
  createLayer,
  CreateOptions,
  CreateResult,
  DEFAULT_CHUNK_SIZE,
  inspectBootstrap,
  InspectReport,
  loadBootstrap,
  mergeBootstraps,
  unpackToTar,
} from '../builder';
import { setLogLevel } from '../util/log';

const TOOL = 'nydus-image';
/** Upstream conversion types we do not build (OCI-ref/zran, estargz, tarfs): named, then refused. */
const UNSUPPORTED_TYPES = ['estargz-rafs', 'estargz-ref', 'estargztoc-ref', 'tar-tarfs', 'targz-ref', 'stargz_index'];

const program = new Command(TOOL)
  .description('build and examine RAFS v6 (nydus) images')
  .option('-l, --log-level <level>', 'trace | debug | info | warn | error (debug: build statistics)', 'warn')
  .version('0.1.0')
  .configureOutput({ outputError: (s, write) => write(`${TOOL}: ${s.trim()}\n`) })
  .hook('preAction', () => setLogLevel(program.opts<{ logLevel: string }>().logLevel));

program
  .command('create')
  .description('build one layer: a data blob (blob meta, chunk digests and ToC at its tail) and its bootstrap')
  .argument('<source>', "directory, tar or tar.gz file ('-' for stdin)")
  .addOption(new Option('-t, --type <type>', 'source type (upstream: --source-type; directory = dir-rafs)').choices(['dir-rafs', 'directory', 'tar-rafs', 'targz-rafs', ...UNSUPPORTED_TYPES]).default('dir-rafs'))
  .addOption(new Option('--source-type <type>').hideHelp())
  .option('-B, --bootstrap <file>', 'bootstrap to write (default with --blob-dir: in it, named by its sha256)')
  .option('-b, --blob <file>', 'blob file to write')
  .option('-D, --blob-dir <dir>', 'directory for the blob, named by its sha256')
  .option('--blob-inline-meta', 'put the bootstrap into the blob (found through its ToC); no bootstrap file (alias --inline-bootstrap)')
  .addOption(new Option('--inline-bootstrap').hideHelp())
  .option('--features <list>', "comma-separated: blob-toc (always written here)")
  .addOption(new Option('--compressor <c>', 'chunk compressor').choices(['zstd', 'none', 'lz4_block']).default('zstd'))
  .option('--chunk-size <size>', 'chunk size, power of two 0x1000..0x1000000', `0x${DEFAULT_CHUNK_SIZE.toString(16)}`)
  .addOption(new Option('--digester <d>', 'chunk digest').choices(['sha256', 'blake3']).default('blake3'))
  .option('--chunk-dict <bootstrap>', 'bootstrap whose chunks are referenced instead of stored again ([bootstrap=]PATH)')
  .option('--prefetch-files <list>', "file with one absolute path per line to prefetch ('-' for stdin)")
  .addOption(new Option('--prefetch-policy <p>', 'fs: prefetch paths read from stdin, one per line').choices(['fs', 'blob', 'none']).default('none'))
  .addOption(new Option('-v, --fs-version <v>', 'RAFS version (6 is written)').choices(['5', '6']).default('6'))
  .addOption(new Option('--whiteout-spec <spec>', 'OCI whiteouts stay entries of the layer (merge applies them)').choices(['oci', 'overlayfs', 'none']).default('oci'))
  .option('--aligned-chunk', 'align chunks to 4 KiB (always so in RAFS v6)')
  .option('--batch-size <size>', 'merge small chunks into batches (0: off)', '0')
  .option('-E, --encrypt', 'encrypt blob and bootstrap (refused: not implemented)')
  .option('--repeatable', 'reproducible output: build time 0')
  .option('-J, --output-json <file>', 'write the result (blob id, sizes) as JSON')
  .action(async (source: string, o: CreateFlags) => {
    const result = await create(source, o);
    const summary = {
      bootstrap: result.bootstrapPath,
      blob_id: result.blobId,
      blob_path: result.blobPath,
      blob_size: result.blobSize,
      data_size: result.dataSize,
      uncompressed_size: result.uncompressedSize,
      // Ours: bytes at the head of the blob holding the prefetch list's files (docs/builder.md).
      prefetch_size: result.prefetchSize,
      // The blob table's ids, and (as upstream) a blob written only to carry the bootstrap.
      blobs: [...new Set([...result.image.blobs.map((b) => b.blobId), ...(result.blobId ? [result.blobId] : [])])],
      fs_version: '6',
      compressor: o.compressor,
    };
    if (o.outputJson) fs.writeFileSync(o.outputJson, JSON.stringify(summary, null, 2) + '\n');
    process.stdout.write(
      (result.blobId
        ? `blob ${result.blobId} (${result.blobSize} bytes, ${result.uncompressedSize} uncompressed) -> ${result.blobPath}\n`
        : `no file data: no blob written\n`) + (result.bootstrapPath ? `bootstrap -> ${result.bootstrapPath}\n` : `bootstrap inlined in the blob\n`),
    );
  });

program
  .command('merge')
  .description('flatten layer bootstraps (lowest first) into one, applying OCI whiteouts')
  .argument('<layers...>', 'layer bootstraps (or blobs carrying them), lowest first')
  .requiredOption('-B, --bootstrap <file>', 'merged bootstrap to write')
  .option('--parent-bootstrap <file>', 'bootstrap placed below the first layer')
  .option('--chunk-dict <bootstrap>', "the chunk dict the layers were built with ([bootstrap=]PATH): its blobs are not a layer's own")
  .addOption(new Option('--prefetch-policy <p>', 'fs: prefetch paths read from stdin, one per line').choices(['fs', 'blob', 'none']).default('none'))
  .option('--blob-digests <list>', "each layer's own blob id (sha256), comma-separated, one per layer")
  .option('--original-blob-ids <list>', "each layer's own blob id before --blob-digests, comma-separated")
  .option('--blob-sizes <list>', "each layer's own blob size in bytes, comma-separated")
  .option('--blob-toc-digests <list>', "each layer's blob ToC sha256, comma-separated")
  .option('--blob-toc-sizes <list>', "each layer's blob ToC size, comma-separated")
  .option('-J, --output-json <file>', 'write the merged blob ids as JSON ({"blobs": [...]})')
  .action((layers: string[], o: MergeFlags) => {
    const list = (v: string | undefined): string[] | undefined => (v === undefined ? undefined : v.split(',').map((x) => x.trim()).filter(Boolean));
    const sizes = (v: string | undefined, what: string): number[] | undefined =>
      list(v)?.map((x) => {
        if (!/^\d+$/.test(x)) throw new Error(`--${what}: '${x}' is not a size`);
        return Number(x);
      });
    warnPrefetchPolicy(o.prefetchPolicy);
    const image = mergeBootstraps(o.bootstrap, layers, {
      parentBootstrap: o.parentBootstrap,
      chunkDict: o.chunkDict ? loadBootstrap(o.chunkDict.replace(/^bootstrap=/, '')).image : undefined,
      blobDigests: list(o.blobDigests),
      originalBlobIds: list(o.originalBlobIds),
      blobSizes: sizes(o.blobSizes, 'blob-sizes'),
      blobTocDigests: list(o.blobTocDigests),
      blobTocSizes: sizes(o.blobTocSizes, 'blob-toc-sizes'),
      prefetch: o.prefetchPolicy === 'fs' ? readList('-') : undefined,
    });
    if (o.outputJson) fs.writeFileSync(o.outputJson, JSON.stringify({ bootstrap: o.bootstrap, blobs: image.blobs.map((b) => b.blobId), fs_version: '6', compressor: image.compressor }, null, 2) + '\n');
    process.stdout.write(`merged ${layers.length} layers (${image.blobs.length} blobs) -> ${o.bootstrap}\n`);
  });

program
  .command('check')
  .description('verify every structure of a bootstrap, and with --blob-dir every chunk digest')
  .argument('[bootstrap]', 'bootstrap, or a data blob carrying its bootstrap in its ToC (or --bootstrap)')
  .option('-B, --bootstrap <file>', 'bootstrap to check')
  .option('-D, --blob-dir <dir>', 'directory with the blobs, named by blob id (default for a blob carrying its bootstrap: that blob)')
  .option('--json', 'print the report as JSON')
  .action(async (arg: string | undefined, o: { bootstrap?: string; blobDir?: string; json?: boolean }) => {
    const report = await checkBootstrap(bootstrapArg(arg, o.bootstrap), o.blobDir);
    if (o.json) {
      process.stdout.write(JSON.stringify(report, null, 2) + '\n');
      return;
    }
    process.stdout.write(
      `${report.bootstrap}: ok: ${report.inodes} inodes, ${report.files} files, ${report.chunks} chunks in ${report.blobs.length} blobs` +
        (report.verifiedChunks ? `, ${report.verifiedChunks} chunk digests verified` : '') +
        (report.blobMetaChunks ? `, ${report.blobMetaChunks} chunks match the blob meta` : '') +
        '\n',
    );
  });

program
  .command('inspect')
  .description('show superblock facts, blobs, counts, sizes and the tree')
  .argument('[bootstrap]', 'bootstrap, or a data blob carrying its bootstrap in its ToC (or --bootstrap)')
  .option('-B, --bootstrap <file>', 'bootstrap to inspect')
  .option('-D, --blob-dir <dir>', 'blobs, for images whose chunk details live only in the blob meta')
  .option('--json', 'print the report as JSON')
  .option('--no-tree', 'leave out the tree listing')
  .action((arg: string | undefined, o: { bootstrap?: string; blobDir?: string; json?: boolean; tree: boolean }) => {
    const report = inspectBootstrap(bootstrapArg(arg, o.bootstrap), o.blobDir);
    const shown = o.tree ? report : { ...report, tree: undefined };
    if (o.json) process.stdout.write(JSON.stringify(shown, (_k, v: unknown) => (v instanceof Map ? Object.fromEntries(v) : v), 2) + '\n');
    else process.stdout.write(formatInspect(report, o.tree));
  });

program
  .command('unpack')
  .description('write the tree of an image back as a tar, verifying every chunk')
  .argument('[bootstrap]', 'bootstrap, or a data blob carrying its bootstrap in its ToC (or --bootstrap)')
  .option('-B, --bootstrap <file>', 'bootstrap to unpack')
  .option('-D, --blob-dir <dir>', 'directory with the blobs, named by blob id (default for a blob carrying its bootstrap: that blob)')
  .option('--blob <file>', 'the data blob of a single-blob image')
  .option('--backend-type <type>', 'storage backend: localfs (others: fetch the blob and use --blob)')
  .option('--backend-config <json>', 'backend config JSON (localfs: {"dir": ...} or {"blob_file": ...})')
  .requiredOption('-o, --output <file>', "tar file to write ('-' for stdout)")
  .action(async (arg: string | undefined, o: UnpackFlags) => {
    const source = unpackSource(o);
    const { image, blobFile } = loadBootstrap(bootstrapArg(arg, o.bootstrap), source.blobDir);
    const single = source.blobFile ?? (blobFile && !source.blobDir ? blobFile : undefined);
    if (single && image.blobs.length !== 1) throw new Error(`--blob names one blob; the image has ${image.blobs.length} (use --blob-dir)`);
    const own = single ? new Map([[image.blobs[0].blobId, single]]) : undefined;
    if (!source.blobDir && !own) throw new Error("required option '-D, --blob-dir <dir>' not specified");
    if (o.output === '-') {
      await unpackToTar(image, source.blobDir, process.stdout, own);
      return;
    }
    const tmp = `${o.output}.${process.pid}.tmp`;
    try {
      await unpackToTar(image, source.blobDir, fs.createWriteStream(tmp), own);
      fs.renameSync(tmp, o.output);
    } finally {
      fs.rmSync(tmp, { force: true });
    }
  });

/** Where unpack finds blob data: --blob-dir, --blob, or a localfs backend config. */
function unpackSource(o: UnpackFlags): { blobDir?: string; blobFile?: string } {
  if (o.backendType === undefined) {
    if (o.backendConfig !== undefined) throw new Error('--backend-config needs --backend-type');
    return { blobDir: o.blobDir, blobFile: o.blob };
  }
  if (o.backendType !== 'localfs') throw new Error(`--backend-type ${o.backendType}: only localfs is read here; fetch the blob and pass --blob`);
  let cfg: { dir?: unknown; blob_file?: unknown };
  try {
    cfg = JSON.parse(o.backendConfig ?? '{}') as typeof cfg;
  } catch (err) {
    throw new Error(`--backend-config: not JSON: ${(err as Error).message}`);
  }
  if (typeof cfg.blob_file === 'string') return { blobFile: cfg.blob_file };
  if (typeof cfg.dir === 'string') return { blobDir: cfg.dir };
  throw new Error('--backend-config: localfs needs "dir" or "blob_file"');
}

interface CreateFlags {
  type: string;
  sourceType?: string;
  bootstrap?: string;
  blob?: string;
  blobDir?: string;
  blobInlineMeta?: boolean;
  inlineBootstrap?: boolean;
  features?: string;
  compressor: 'zstd' | 'none' | 'lz4_block';
  chunkSize: string;
  digester: 'sha256' | 'blake3';
  chunkDict?: string;
  prefetchFiles?: string;
  prefetchPolicy: 'fs' | 'blob' | 'none';
  fsVersion: '5' | '6';
  whiteoutSpec: 'oci' | 'overlayfs' | 'none';
  alignedChunk?: boolean;
  batchSize: string;
  encrypt?: boolean;
  repeatable?: boolean;
  outputJson?: string;
}

interface MergeFlags {
  bootstrap: string;
  parentBootstrap?: string;
  chunkDict?: string;
  prefetchPolicy: 'fs' | 'blob' | 'none';
  blobDigests?: string;
  originalBlobIds?: string;
  blobSizes?: string;
  blobTocDigests?: string;
  blobTocSizes?: string;
  outputJson?: string;
}

interface UnpackFlags {
  bootstrap?: string;
  blobDir?: string;
  blob?: string;
  backendType?: string;
  backendConfig?: string;
  output: string;
}

function warn(msg: string): void {
  process.stderr.write(`${TOOL}: warning: ${msg}\n`);
}

function warnPrefetchPolicy(p: string): void {
  if (p === 'blob') warn('--prefetch-policy blob: no blob-level prefetch list is written; nothing is prefetched (use fs)');
}

/** Checks upstream's create flags against what this builder does; refuses what it cannot honour. */
function createSettings(o: CreateFlags): { type: 'dir-rafs' | 'tar-rafs' | 'targz-rafs'; inline: boolean } {
  const raw = o.sourceType ?? o.type;
  const type = raw === 'directory' ? 'dir-rafs' : raw;
  if (UNSUPPORTED_TYPES.includes(type)) throw new Error(`--type ${type} is not supported (dir-rafs, tar-rafs and targz-rafs are)`);
  if (type !== 'dir-rafs' && type !== 'tar-rafs' && type !== 'targz-rafs') throw new Error(`--type ${type}: unknown conversion type`);
  if (o.fsVersion === '5') throw new Error('--fs-version 5: this builder writes RAFS v6 only');
  if (o.compressor === 'lz4_block') throw new Error('--compressor lz4_block: this builder writes zstd or none');
  if (o.encrypt) throw new Error('--encrypt: blob encryption is not implemented; refusing to write plaintext');
  for (const f of (o.features ?? '').split(',').map((x) => x.trim()).filter(Boolean)) {
    if (f !== 'blob-toc') throw new Error(`--features ${f}: unknown feature (blob-toc is known)`);
  }
  if (o.whiteoutSpec === 'overlayfs') warn('--whiteout-spec overlayfs: whiteouts are kept as entries; merge applies OCI (.wh.) whiteouts only');
  const batch = parseSize(o.batchSize, '--batch-size');
  if (batch !== 0) warn(`--batch-size ${o.batchSize}: small chunks are stored one by one, not batched`);
  warnPrefetchPolicy(o.prefetchPolicy);
  const inline = Boolean(o.blobInlineMeta || o.inlineBootstrap);
  if (inline && o.bootstrap) throw new Error('--bootstrap conflicts with --blob-inline-meta (the bootstrap goes into the blob)');
  return { type, inline };
}

async function create(source: string, o: CreateFlags): Promise<CreateResult> {
  if (!o.blob && !o.blobDir) throw new Error('create needs --blob FILE or --blob-dir DIR');
  if (o.blob && o.blobDir) throw new Error('--blob and --blob-dir are exclusive');
  const { type, inline } = createSettings(o);
  if (!inline && !o.bootstrap && !o.blobDir) throw new Error('create needs --bootstrap FILE, --blob-dir DIR or --blob-inline-meta');
  const chunkSize = parseSize(o.chunkSize, '--chunk-size');
  const chunkDict = o.chunkDict ? loadBootstrap(o.chunkDict.replace(/^bootstrap=/, '')).image : undefined;
  if (o.prefetchFiles && o.prefetchPolicy === 'fs') throw new Error('--prefetch-files and --prefetch-policy fs both read the prefetch list; give one');
  if (source === '-' && (o.prefetchPolicy === 'fs' || o.prefetchFiles === '-')) throw new Error('stdin cannot carry both the source and the prefetch list');
  const prefetchFiles = o.prefetchFiles ? readList(o.prefetchFiles) : o.prefetchPolicy === 'fs' ? readList('-') : undefined;
  // Without --bootstrap, upstream writes it into the blob dir named by its sha256: written to a
  // temp name there and renamed once its digest is known.
  const bootstrapTemp = !inline && !o.bootstrap ? path.join(o.blobDir!, `.nydus-bootstrap-${process.pid}.tmp`) : undefined;
  const total = source === '-' ? 0 : type === 'dir-rafs' ? (process.stderr.isTTY ? treeBytes(source) : 0) : fileSize(source);
  const progress = new Progress(total);
  const common = {
    bootstrapPath: inline ? undefined : (o.bootstrap ?? bootstrapTemp),
    inlineBootstrap: inline,
    buildTime: o.repeatable ? 0 : undefined,
    blobPath: o.blob,
    blobDir: o.blobDir,
    compressor: o.compressor as 'zstd' | 'none', // lz4_block refused in createSettings
    chunkSize,
    digester: o.digester,
    chunkDict,
    prefetchFiles,
  };
  try {
    const result = await build(source, type, common, progress);
    if (bootstrapTemp && result.bootstrapPath) {
      const named = path.join(o.blobDir!, createHash('sha256').update(fs.readFileSync(bootstrapTemp)).digest('hex'));
      fs.renameSync(bootstrapTemp, named);
      result.bootstrapPath = named;
    }
    return result;
  } finally {
    if (bootstrapTemp) fs.rmSync(bootstrapTemp, { force: true });
    progress.stop();
  }
}

async function build(source: string, type: string, common: Omit<CreateOptions, 'source'>, progress: Progress): Promise<CreateResult> {
  if (type === 'dir-rafs') {
    return await createLayer({ ...common, source: { kind: 'dir', path: source }, onProgress: (n) => progress.add(n) });
  }
  const input = source === '-' ? process.stdin : openForRead(source);
  // Progress counts input bytes (compressed for tar.gz), which is what the total is.
  const counter = new Transform({
    transform(buf: Buffer, _enc, done) {
      progress.add(buf.length);
      done(null, buf);
    },
  });
  input.on('error', (err: Error) => counter.destroy(err));
  const stream = input.pipe(counter);
  return await createLayer({ ...common, source: { kind: 'tar', stream, gzip: type === 'targz-rafs' } });
}

/** A bar on a terminal, a line on stderr every 256 MiB otherwise. */
class Progress {
  private bar: SingleBar | null = null;
  private done = 0;
  private nextLog = 256 << 20;

  constructor(total: number) {
    if (process.stderr.isTTY && total > 0) {
      this.bar = new SingleBar({ format: 'building [{bar}] {percentage}% {value}/{total} bytes', stream: process.stderr, hideCursor: true });
      this.bar.start(total, 0);
    }
  }

  add(n: number): void {
    this.done += n;
    if (this.bar) this.bar.update(this.done);
    else if (this.done >= this.nextLog) {
      process.stderr.write(`${TOOL}: building: ${Math.floor(this.done / 2 ** 20)} MiB read\n`);
      this.nextLog += 256 << 20;
    }
  }

  stop(): void {
    this.bar?.stop();
  }
}

function bootstrapArg(arg: string | undefined, flag: string | undefined): string {
  const file = flag ?? arg;
  if (!file) throw new Error('a bootstrap is required (--bootstrap FILE)');
  return file;
}

function parseSize(s: string, flag: string): number {
  const n = /^0x[0-9a-f]+$/i.test(s) ? parseInt(s, 16) : /^\d+$/.test(s) ? parseInt(s, 10) : NaN;
  if (!Number.isSafeInteger(n)) throw new Error(`${flag}: '${s}' is not a number`);
  return n;
}

function readList(file: string): string[] {
  const text = file === '-' ? fs.readFileSync(0, 'utf8') : fs.readFileSync(file, 'utf8');
  const lines = text.split('\n').map((l) => l.trim()).filter(Boolean);
  for (const l of lines) if (!l.startsWith('/')) throw new Error(`${file}: prefetch path '${l}' is not absolute`);
  return lines;
}

/** Bytes of regular files under `dir`, for the progress bar's total (0 if unreadable). */
function treeBytes(dir: string): number {
  let total = 0;
  const visit = (p: string): void => {
    for (const e of fs.readdirSync(p, { withFileTypes: true })) {
      const q = `${p}/${e.name}`;
      if (e.isDirectory()) visit(q);
      else if (e.isFile()) total += fs.lstatSync(q).size;
    }
  };
  try {
    visit(dir);
  } catch {
    return 0;
  }
  return total;
}

function fileSize(file: string): number {
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
}

function openForRead(file: string): fs.ReadStream {
  const st = fs.statSync(file);
  if (st.isDirectory()) throw new Error(`${file}: is a directory (use --type dir-rafs)`);
  return fs.createReadStream(file, { highWaterMark: 1 << 20 });
}

function formatInspect(r: InspectReport, withTree: boolean): string {
  const lines = [
    `bootstrap:   ${r.bootstrap} (${r.bootstrapSize} bytes, RAFS v${r.rafsVersion})`,
    `chunk size:  0x${r.chunkSize.toString(16)}`,
    `digester:    ${r.digester}`,
    `compressor:  ${r.compressor}`,
    `build time:  ${r.buildTime === null ? '-' : new Date(r.buildTime * 1000).toISOString()}`,
    `inodes:      ${r.counts.inodes} (${r.counts.file} files, ${r.counts.dir} dirs, ${r.counts.symlink} symlinks, ${r.counts.chardev + r.counts.blockdev} devices, ${r.counts.fifo} fifos, ${r.counts.socket} sockets; ${r.counts.hardlinkedInodes} hard-linked)`,
    `entries:     ${r.counts.entries}`,
    `file bytes:  ${r.fileBytes}`,
    `chunks:      ${r.counts.chunks} (${r.counts.uniqueChunks} distinct)`,
    `prefetch:    ${r.prefetch.length ? r.prefetch.join(' ') : '-'}`,
    `blobs:       ${r.blobs.length}`,
    ...r.blobs.map(
      (b, i) =>
        `  [${i}] ${b.blobId} ${b.compressor}/${b.digester} chunks=${b.chunkCount} compressed=${b.compressedSize} uncompressed=${b.uncompressedSize} features=0x${b.features.toString(16)}`,
    ),
  ];
  if (withTree) {
    lines.push('tree:');
    for (const e of r.tree) {
      const extra = e.target !== undefined ? ` -> ${e.target}` : e.rdev !== undefined ? ` rdev=0x${e.rdev.toString(16)}` : '';
      lines.push(`  ${e.kind.padEnd(8)} ${e.mode.toString(8).padStart(4, '0')} ${e.uid}:${e.gid} ${String(e.size).padStart(10)} ${e.path}${extra}`);
    }
  }
  return lines.join('\n') + '\n';
}

program.parseAsync().catch((err: unknown) => {
  const msg = err instanceof Error ? err.message : String(err);
  process.stderr.write(`${TOOL}: error: ${msg.replace(/\s*\n\s*/g, ' ')}\n`);
  process.exit(1);
});
