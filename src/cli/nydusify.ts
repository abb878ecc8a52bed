/**
 * ./bin/nydusify: convert an image in a registry to a nydus image, and check a converted image.
 * Flags follow upstream nydusify: --source-insecure / --target-insecure skip TLS verification,
 * --plain-http talks HTTP; upstream flags we cannot honour are refused or warned about by name
 * (src/convert/upstream-flags.ts).
 */
import { Command, Option } from 'commander';
import * as fs from 'node:fs';
import { checkImage, convertImage, barProgress, logProgress, parsePrefetchPatterns, ImageEndpoint } from '../convert';
import { BlobBackend, backendConfigText, openBlobBackend } from '../convert/blob-backend';
import { CHECK_FLAGS, CONVERT_FLAGS, UpstreamFlag, flagSpec, upstreamFlagWarnings } from '../convert/upstream-flags';
import { Credentials, envCredentials, parseUserPass } from '../registry/credentials';
import { parseReference, formatReference } from '../registry/reference';
import { setLogLevel } from '../util/log';

type Opts = Record<string, string | boolean | undefined>;

/** Upstream's default platform is linux/$GOARCH; Node's arch names differ from Go's for x64. */
const DEFAULT_PLATFORM = `linux/${({ x64: 'amd64', ia32: '386' } as Record<string, string>)[process.arch] ?? process.arch}`;

function endpoint(side: 'source' | 'target', ref: string, o: Opts): ImageEndpoint {
  const flag = o[`${side}User`] as string | undefined;
  // --source-user wins over NYDUSIFY_SOURCE_USER; without either the docker config file is used.
  const credentials: Credentials | undefined = flag !== undefined ? parseUserPass(flag, `--${side}-user`) : envCredentials(`NYDUSIFY_${side.toUpperCase()}`);
  return {
    ref,
    plainHttp: Boolean(o.plainHttp),
    skipVerify: Boolean(o[`${side}Insecure`]),
    ca: o[`${side}Ca`] as string | undefined,
    credentials,
  };
}

function sideOptions(cmd: Command, upstream: UpstreamFlag[]): Command {
  for (const side of ['source', 'target']) {
    cmd
      .option(`--${side}-insecure`, `skip verifying the ${side} registry's TLS certificate`)
      .option(`--${side}-ca <file>`, `extra CA certificate (PEM) for the ${side} registry and its token server`)
      .option(`--${side}-user <user:password>`, `${side} credentials (else NYDUSIFY_${side.toUpperCase()}_USER, else ~/.docker/config.json)`);
  }
  for (const f of upstream) cmd.addOption(new Option(flagSpec(f), 'upstream flag, not honoured here').hideHelp());
  return cmd
    .option('--plain-http', 'talk plain HTTP (not HTTPS) to the registries')
    .option('--log-level <level>', 'trace, debug, info, warn, error');
}

/**
 * The blob backend of `--<prefix>backend-type` (env BACKEND_TYPE etc. for convert, as upstream), or
 * undefined. Secrets on the command line are visible to every user (ps): warned, with the way out.
 */
function blobBackend(o: Opts, prefix: '' | 'target-'): BlobBackend | undefined {
  const key = prefix ? 'targetBackend' : 'backend';
  const env = (n: string) => (prefix ? undefined : process.env[n]);
  const type = (o[`${key}Type`] as string | undefined) ?? env('BACKEND_TYPE');
  const json = (o[`${key}Config`] as string | undefined) ?? env('BACKEND_CONFIG');
  const file = (o[`${key}ConfigFile`] as string | undefined) ?? env('BACKEND_CONFIG_FILE');
  if (!type) {
    if (json || file) throw new Error(`--${prefix}backend-config needs --${prefix}backend-type (s3, oss or localfs)`);
    return undefined;
  }
  const text = backendConfigText(prefix, json, file);
  if (o[`${key}Config`] !== undefined && /access_key_secret/.test(text)) {
    process.stderr.write(`nydusify: warning: --${prefix}backend-config carries access_key_secret on the command line, where other users can read it; use --${prefix}backend-config-file (mode 0600)${prefix ? '' : ' or BACKEND_CONFIG'}\n`);
  }
  if (file && /access_key_secret/.test(text) && (fs.statSync(file).mode & 0o004) !== 0) {
    process.stderr.write(`nydusify: warning: ${file} holds access_key_secret and is world-readable; chmod 600 it\n`);
  }
  return openBlobBackend(type, text, prefix, (line) => process.stderr.write(`nydusify: warning: ${line}\n`));
}

function parseSize(v: string, what: string): number {
  const n = /^0x[0-9a-f]+$/i.test(v) ? parseInt(v, 16) : /^\d+$/.test(v) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`${what} "${v}" is not a positive number (decimal or 0x hex)`);
  return n;
}

/**
 * The log level: the command's --log-level, else the global -l / -D, else upstream's default
 * (info) - or warn when progress bars on a terminal already show what info lines would.
 */
function logLevel(o: Opts, bars = false): string {
  const g = program.opts() as Opts;
  if (o.logLevel) return o.logLevel as string;
  if (g.debug) return 'debug';
  if (g.logLevel !== undefined) return g.logLevel as string;
  return bars ? 'warn' : 'info';
}

function warnUpstream(list: UpstreamFlag[], o: Opts): void {
  for (const w of upstreamFlagWarnings(list, o)) process.stderr.write(`nydusify: warning: ${w}\n`);
}

/** Upstream's target: --target, or the source's tag plus --target-suffix. */
function targetRef(o: Opts): string {
  if (o.target && o.targetSuffix) throw new Error('--target conflicts with --target-suffix');
  if (o.target) return o.target as string;
  if (!o.targetSuffix) throw new Error('--target or --target-suffix is required');
  const r = parseReference(o.source as string);
  if (r.digest) throw new Error(`--target-suffix: source ${o.source} is a digest reference`);
  return formatReference({ ...r, tag: `${r.tag ?? 'latest'}${o.targetSuffix}` });
}

/** Upstream: patterns from stdin with --prefetch-patterns, or --prefetch-dir, else "/" (everything). */
function prefetchPatterns(o: Opts): string[] {
  if (o.prefetchDir && o.prefetchPatterns) throw new Error('--prefetch-dir conflicts with --prefetch-patterns');
  if (o.prefetchPatterns) return parsePrefetchPatterns(fs.readFileSync(0, 'utf8'), 'prefetch patterns (stdin)');
  if (o.prefetchDir) return parsePrefetchPatterns(o.prefetchDir as string, '--prefetch-dir');
  return ['/'];
}

/** Upstream's --chunk-dict is `bootstrap:local:PATH` (or `bootstrap:registry:REF`); a bare path is ours. */
function chunkDictPath(v: string | undefined): string | undefined {
  if (!v) return undefined;
  const m = /^bootstrap:(local|registry):(.+)$/.exec(v);
  if (!m) return v;
  if (m[1] === 'registry') throw new Error(`--chunk-dict ${v}: a chunk dict from a registry is not supported; use bootstrap:local:PATH`);
  return m[2];
}

const program = new Command('nydusify')
  .description('Convert OCI images in a registry to nydus images, and check them')
  .option('-l, --log-level <level>', 'log level (trace, debug, info, warn, error; default info)')
  .option('-D, --debug', 'debug log level, overrides --log-level');

sideOptions(program.command('convert')
  .description('convert --source REF into a nydus image pushed as --target REF')
  .requiredOption('--source <ref>', 'source image reference')
  .option('--target <ref>', 'target image reference (a tag)')
  .option('--target-suffix <suffix>', 'target is the source reference with this suffix added to its tag')
  .addOption(new Option('--compressor <name>', 'chunk compressor').choices(['zstd', 'none']).default('zstd'))
  .option('--fs-chunk-size <bytes>', 'chunk size, a power of two from 0x1000 to 0x1000000 (alias --chunk-size)')
  .addOption(new Option('--chunk-size <bytes>').hideHelp())
  .option('--fs-version <n>', 'RAFS version (this builder writes 6 only)', '6')
  .addOption(new Option('--digester <name>', 'chunk digest').choices(['sha256', 'blake3']).default('blake3'))
  .option('--chunk-dict <bootstrap>', 'reference chunks of this bootstrap (PATH or bootstrap:local:PATH) instead of storing them again')
  .option('--platform <list>', 'platforms to convert from an index, comma-separated os/arch[/variant]', DEFAULT_PLATFORM)
  .option('--all-platforms', 'convert every platform of an index (conflicts with --platform)')
  .option('--merge-platform', 'tag an index of both the source and the nydus images (alias --multi-platform)')
  .addOption(new Option('--multi-platform').hideHelp())
  .option('--oci', 'OCI media types for the nydus image even when the source is Docker schema 2')
  .addOption(new Option('--docker-v2-format').hideHelp())
  .option('--oci-ref', 'OCI-referenced (zran) nydus image: not supported, refused')
  .option('--with-referrer', 'set the nydus manifest\'s subject to the source manifest')
  .option('--prefetch-patterns', 'read the paths to prefetch from stdin, one absolute path per line')
  .option('--prefetch-dir <path>', 'an absolute path to prefetch (conflicts with --prefetch-patterns)')
  .option('--work-dir <dir>', 'where blobs are built (a temporary subdirectory is used)')
  .option('--parallelism <n>', 'layers converted at once', '2')
  .option('--push-retry-count <n>', 'attempts per registry request', '3')
  .option('--output-json <file>', 'write upstream\'s conversion metric (sizes, elapsed times in ns) as JSON')
  .option('--backend-type <type>', 'put blobs in this storage backend instead of the target registry: s3, oss or localfs (env BACKEND_TYPE)')
  .option('--backend-config <json>', 'the backend\'s config, nydusd keys (env BACKEND_CONFIG; secrets here are visible in ps)')
  .option('--backend-config-file <file>', 'the backend\'s config from a file (env BACKEND_CONFIG_FILE)')
  .option('--backend-force-push', 'upload blobs even when the backend has them'), CONVERT_FLAGS)
  .action(async (o: Opts) => {
    setLogLevel(logLevel(o, Boolean(process.stderr.isTTY)));
    warnUpstream(CONVERT_FLAGS, o);
    if (o.ociRef) throw new Error('--oci-ref: OCI-referenced (zran) nydus images are not supported by this builder');
    if (o.fsVersion !== '6') throw new Error(o.fsVersion === '5' ? '--fs-version 5: this builder writes RAFS v6 only' : `--fs-version should be one of [5 6], not "${o.fsVersion}"`);
    if (o.dockerV2Format) process.stderr.write('nydusify: warning: --docker-v2-format is deprecated (upstream too); use --oci for OCI media types\n');
    if (o.allPlatforms && o.platform !== DEFAULT_PLATFORM) throw new Error('--all-platforms conflicts with --platform');
    if (o.chunkSize && o.fsChunkSize) throw new Error('--chunk-size is an alias of --fs-chunk-size; give one');
    const target = targetRef(o);
    const retries = parseSize(o.pushRetryCount as string, '--push-retry-count');
    const source = endpoint('source', o.source as string, o);
    const tgt = { ...endpoint('target', target, o), retryLimit: retries };
    const parallelism = parseSize(o.parallelism as string, '--parallelism');
    const patterns = prefetchPatterns(o);
    const backend = blobBackend(o, '');
    const bars = process.stderr.isTTY ? barProgress() : undefined;
    const started = Date.now();
    try {
      const res = await convertImage({
        source, target: tgt,
        platforms: o.allPlatforms ? undefined : (o.platform as string).split(',').map((p) => p.trim()).filter(Boolean),
        allPlatforms: Boolean(o.allPlatforms), oci: Boolean(o.oci), mergePlatform: Boolean(o.mergePlatform || o.multiPlatform), withReferrer: Boolean(o.withReferrer),
        compressor: o.compressor as 'zstd' | 'none', digester: o.digester as 'sha256' | 'blake3',
        chunkSize: parseSize((o.fsChunkSize ?? o.chunkSize ?? '0x100000') as string, '--fs-chunk-size'), chunkDictPath: chunkDictPath(o.chunkDict as string | undefined),
        prefetchPatterns: patterns, workDir: o.workDir as string | undefined, parallelism, onProgress: bars ?? logProgress(),
        backend, backendForcePush: Boolean(o.backendForcePush),
      });
      bars?.stop();
      if (o.outputJson) fs.writeFileSync(o.outputJson as string, `${JSON.stringify(res.metric)}\n`);
      const pushed = res.images.reduce((a, i) => a + i.layers.filter((l) => l.pushed).length, 0);
      const layers = res.images.reduce((a, i) => a + i.layers.length, 0);
      const images = res.images.length > 1 ? `${res.images.length} images, ` : '';
      const to = backend ? ` to ${backend.where}` : '';
      process.stdout.write(`converted ${o.source} -> ${res.target}@${res.manifestDigest} (${images}${layers} layers, ${pushed} blobs pushed${to}, ${((Date.now() - started) / 1000).toFixed(1)} s)\n`);
    } finally {
      bars?.stop();
      await backend?.close();
    }
  });

sideOptions(program.command('check')
  .description('verify --target (a nydus image) and, with --source, compare its files with the source')
  .option('--source <ref>', 'source image reference')
  .requiredOption('--target <ref>', 'nydus image reference')
  .option('--multi-platform', 'the target must be an index holding both the source and the nydus image')
  .option('--platform <os/arch>', 'platform to pick from an image index', DEFAULT_PLATFORM)
  .option('--work-dir <dir>', 'where blobs are downloaded (a temporary subdirectory is used)')
  .option('--target-backend-type <type>', 'the target\'s blobs are in this storage backend: s3, oss or localfs')
  .option('--target-backend-config <json>', 'the backend\'s config, nydusd keys (secrets here are visible in ps)')
  .option('--target-backend-config-file <file>', 'the backend\'s config from a file'), CHECK_FLAGS)
  .action(async (o: Opts) => {
    setLogLevel(logLevel(o));
    warnUpstream(CHECK_FLAGS, o);
    const targetBackend = blobBackend(o, 'target-');
    const res = await checkImage({
      source: o.source ? endpoint('source', o.source as string, o) : undefined, target: endpoint('target', o.target as string, o),
      platform: o.platform as string, multiPlatform: Boolean(o.multiPlatform), workDir: o.workDir as string | undefined, targetBackend,
    }).finally(() => targetBackend?.close());
    if (!res.ok) {
      for (const p of res.problems) process.stdout.write(`problem: ${p}\n`);
      throw new Error(`check of ${res.target} failed: ${res.problems.length} problem(s)`);
    }
    process.stdout.write(`check passed: ${res.target}@${res.manifestDigest}: ${res.blobs} blobs, ${res.verifiedChunks} chunks verified, ${res.entries} entries${o.source ? ' match the source' : ''}\n`);
  });

program.parseAsync(process.argv).catch((err: Error) => {
  process.stderr.write(`nydusify: error: ${String(err.message).split('\n')[0]}\n`);
  process.exit(1);
});
