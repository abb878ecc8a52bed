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
import * as fs from 'node:fs';
import { Transform } from 'node:stream';
import { Command, Option } from 'commander';
import { SingleBar } from 'cli-progress';
import {
  checkBootstrap,
  createLayer,
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

const program = new Command(TOOL)
  .description('build and examine RAFS v6 (nydus) images')
  .option('-l, --log-level <level>', 'trace | debug | info | warn | error (debug: build statistics)', 'warn')
  .version('0.1.0')
  .configureOutput({ outputError: (s, write) => write(`${TOOL}: ${s.trim()}\n`) })
  .hook('preAction', () => setLogLevel(program.opts<{ logLevel: string }>().logLevel));

program
  .command('create')
  .description('build one layer: a data blob and its bootstrap')
  .argument('<source>', "directory, tar or tar.gz file ('-' for stdin)")
  .addOption(new Option('-t, --type <type>', 'source type').choices(['dir-rafs', 'tar-rafs', 'targz-rafs']).default('dir-rafs'))
  .requiredOption('-B, --bootstrap <file>', 'bootstrap to write')
  .option('-b, --blob <file>', 'blob file to write')
  .option('-D, --blob-dir <dir>', 'directory for the blob, named by its sha256')
  .addOption(new Option('--compressor <c>', 'chunk compressor').choices(['zstd', 'none']).default('zstd'))
  .option('--chunk-size <size>', 'chunk size, power of two 0x1000..0x1000000', `0x${DEFAULT_CHUNK_SIZE.toString(16)}`)
  .addOption(new Option('--digester <d>', 'chunk digest').choices(['sha256', 'blake3']).default('sha256'))
  .option('--chunk-dict <bootstrap>', 'bootstrap whose chunks are referenced instead of stored again ([bootstrap=]PATH)')
  .option('--prefetch-files <list>', "file with one absolute path per line to prefetch ('-' for stdin)")
  .option('-J, --output-json <file>', 'write the result (blob id, sizes) as JSON')
  .action(async (source: string, o: CreateFlags) => {
    const result = await create(source, o);
    const summary = {
      bootstrap: result.bootstrapPath,
      blob_id: result.blobId,
      blob_path: result.blobPath,
      blob_size: result.blobSize,
      uncompressed_size: result.uncompressedSize,
      blobs: result.image.blobs.map((b) => b.blobId),
    };
    if (o.outputJson) fs.writeFileSync(o.outputJson, JSON.stringify(summary, null, 2) + '\n');
    process.stdout.write(
      result.blobId
        ? `blob ${result.blobId} (${result.blobSize} bytes, ${result.uncompressedSize} uncompressed) -> ${result.blobPath}\nbootstrap -> ${result.bootstrapPath}\n`
        : `no file data: no blob written\nbootstrap -> ${result.bootstrapPath}\n`,
    );
  });

program
  .command('merge')
  .description('flatten layer bootstraps (lowest first) into one, applying OCI whiteouts')
  .argument('<layers...>', 'layer bootstraps, lowest first')
  .requiredOption('-B, --bootstrap <file>', 'merged bootstrap to write')
  .action((layers: string[], o: { bootstrap: string }) => {
    const image = mergeBootstraps(o.bootstrap, layers);
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
  .requiredOption('-o, --output <file>', "tar file to write ('-' for stdout)")
  .action(async (arg: string | undefined, o: { bootstrap?: string; blobDir?: string; output: string }) => {
    const { image, blobFile } = loadBootstrap(bootstrapArg(arg, o.bootstrap), o.blobDir);
    const own = blobFile && !o.blobDir && image.blobs.length === 1 ? new Map([[image.blobs[0].blobId, blobFile]]) : undefined;
    if (!o.blobDir && !own) throw new Error("required option '-D, --blob-dir <dir>' not specified");
    if (o.output === '-') {
      await unpackToTar(image, o.blobDir, process.stdout, own);
      return;
    }
    const tmp = `${o.output}.${process.pid}.tmp`;
    try {
      await unpackToTar(image, o.blobDir, fs.createWriteStream(tmp), own);
      fs.renameSync(tmp, o.output);
    } finally {
      fs.rmSync(tmp, { force: true });
    }
  });

interface CreateFlags {
  type: 'dir-rafs' | 'tar-rafs' | 'targz-rafs';
  bootstrap: string;
  blob?: string;
  blobDir?: string;
  compressor: 'zstd' | 'none';
  chunkSize: string;
  digester: 'sha256' | 'blake3';
  chunkDict?: string;
  prefetchFiles?: string;
  outputJson?: string;
}

async function create(source: string, o: CreateFlags): Promise<CreateResult> {
  if (!o.blob && !o.blobDir) throw new Error('create needs --blob FILE or --blob-dir DIR');
  if (o.blob && o.blobDir) throw new Error('--blob and --blob-dir are exclusive');
  const chunkSize = parseSize(o.chunkSize);
  const chunkDict = o.chunkDict ? loadBootstrap(o.chunkDict.replace(/^bootstrap=/, '')).image : undefined;
  const prefetchFiles = o.prefetchFiles ? readList(o.prefetchFiles) : undefined;
  const total = source === '-' ? 0 : o.type === 'dir-rafs' ? (process.stderr.isTTY ? treeBytes(source) : 0) : fileSize(source);
  const progress = new Progress(total);
  const common = {
    bootstrapPath: o.bootstrap,
    blobPath: o.blob,
    blobDir: o.blobDir,
    compressor: o.compressor,
    chunkSize,
    digester: o.digester,
    chunkDict,
    prefetchFiles,
  };
  try {
    if (o.type === 'dir-rafs') {
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
    return await createLayer({ ...common, source: { kind: 'tar', stream, gzip: o.type === 'targz-rafs' } });
  } finally {
    progress.stop();
  }
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

function parseSize(s: string): number {
  const n = /^0x[0-9a-f]+$/i.test(s) ? parseInt(s, 16) : /^\d+$/.test(s) ? parseInt(s, 10) : NaN;
  if (!Number.isSafeInteger(n)) throw new Error(`--chunk-size: '${s}' is not a number`);
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
