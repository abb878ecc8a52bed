/** ./bin/nydusify: convert an image in a registry to a nydus image, and check a converted image. */
import { Command, Option } from 'commander';
import * as fs from 'node:fs';
import { checkImage, convertImage, barProgress, logProgress, ImageEndpoint } from '../convert';
import { Credentials, envCredentials, parseUserPass } from '../registry/credentials';
import { setLogLevel } from '../util/log';

interface SideFlags {
  sourceInsecure?: boolean; targetInsecure?: boolean;
  sourceSkipVerify?: boolean; targetSkipVerify?: boolean;
  sourceCa?: string; targetCa?: string;
  sourceUser?: string; targetUser?: string;
}

function endpoint(side: 'source' | 'target', ref: string, o: SideFlags): ImageEndpoint {
  const flag = side === 'source' ? o.sourceUser : o.targetUser;
  // --source-user wins over NYDUSIFY_SOURCE_USER; without either the docker config file is used.
  const credentials: Credentials | undefined = flag !== undefined ? parseUserPass(flag, `--${side}-user`) : envCredentials(`NYDUSIFY_${side.toUpperCase()}`);
  return {
    ref,
    insecure: side === 'source' ? o.sourceInsecure : o.targetInsecure,
    skipVerify: side === 'source' ? o.sourceSkipVerify : o.targetSkipVerify,
    ca: side === 'source' ? o.sourceCa : o.targetCa,
    credentials,
  };
}

function sideOptions(cmd: Command): Command {
  for (const side of ['source', 'target']) {
    cmd
      .option(`--${side}-insecure`, `talk plain HTTP to the ${side} registry`)
      .option(`--${side}-skip-verify`, `accept any TLS certificate from the ${side} registry`)
      .option(`--${side}-ca <file>`, `extra CA certificate (PEM) for the ${side} registry and its token server`)
      .option(`--${side}-user <user:password>`, `${side} credentials (else NYDUSIFY_${side.toUpperCase()}_USER, else ~/.docker/config.json)`);
  }
  return cmd.option('--log-level <level>', 'trace, debug, info, warn, error', 'warn');
}

function parseSize(v: string, what: string): number {
  const n = /^0x[0-9a-f]+$/i.test(v) ? parseInt(v, 16) : /^\d+$/.test(v) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`${what} "${v}" is not a positive number (decimal or 0x hex)`);
  return n;
}

const program = new Command('nydusify').description('Convert OCI images in a registry to nydus images, and check them');

sideOptions(program.command('convert')
  .description('convert --source REF into a nydus image pushed as --target REF')
  .requiredOption('--source <ref>', 'source image reference')
  .requiredOption('--target <ref>', 'target image reference (a tag)')
  .addOption(new Option('--compressor <name>', 'chunk compressor').choices(['zstd', 'none']).default('zstd'))
  .option('--chunk-size <bytes>', 'chunk size, a power of two from 0x1000 to 0x1000000', '0x100000')
  .addOption(new Option('--digester <name>', 'chunk digest').choices(['sha256', 'blake3']).default('sha256'))
  .option('--chunk-dict <bootstrap>', 'reference chunks of this bootstrap instead of storing them again')
  .option('--platform <os/arch>', 'platform to pick from an image index', 'linux/amd64')
  .option('--prefetch-patterns <file>', 'absolute paths to prefetch, one per line')
  .option('--work-dir <dir>', 'where blobs are built (a temporary subdirectory is used)')
  .option('--parallelism <n>', 'layers converted at once', '2')
  .option('--output-json <file>', 'write the result (target, manifest digest, layers) as JSON'))
  .action(async (o: SideFlags & Record<string, string | undefined>) => {
    setLogLevel(o.logLevel ?? 'warn');
    const parallelism = parseSize(o.parallelism ?? '2', '--parallelism');
    const bars = process.stderr.isTTY ? barProgress() : undefined;
    if (!bars) setLogLevel(o.logLevel === 'warn' ? 'info' : o.logLevel ?? 'info');
    const started = Date.now();
    try {
      const res = await convertImage({
        source: endpoint('source', o.source!, o), target: endpoint('target', o.target!, o),
        platform: o.platform, compressor: o.compressor as 'zstd' | 'none', digester: o.digester as 'sha256' | 'blake3',
        chunkSize: parseSize(o.chunkSize!, '--chunk-size'), chunkDictPath: o.chunkDict, prefetchPatternsPath: o.prefetchPatterns,
        workDir: o.workDir, parallelism, onProgress: bars ?? logProgress(),
      });
      bars?.stop();
      const pushed = res.layers.filter((l) => l.pushed).length;
      process.stdout.write(`converted ${o.source} -> ${res.target}@${res.manifestDigest} (${res.layers.length} layers, ${pushed} blobs pushed, ${((Date.now() - started) / 1000).toFixed(1)} s)\n`);
      if (o.outputJson) fs.writeFileSync(o.outputJson, JSON.stringify({ ...res, elapsedMs: Date.now() - started }, null, 2));
    } finally {
      bars?.stop();
    }
  });

sideOptions(program.command('check')
  .description('verify --target (a nydus image) and compare its files with --source')
  .requiredOption('--source <ref>', 'source image reference')
  .requiredOption('--target <ref>', 'nydus image reference')
  .option('--platform <os/arch>', 'platform to pick from an image index', 'linux/amd64')
  .option('--work-dir <dir>', 'where blobs are downloaded (a temporary subdirectory is used)'))
  .action(async (o: SideFlags & Record<string, string | undefined>) => {
    setLogLevel(o.logLevel ?? 'warn');
    const res = await checkImage({ source: endpoint('source', o.source!, o), target: endpoint('target', o.target!, o), platform: o.platform, workDir: o.workDir });
    if (!res.ok) {
      for (const p of res.problems) process.stdout.write(`problem: ${p}\n`);
      throw new Error(`check of ${res.target} failed: ${res.problems.length} problem(s)`);
    }
    process.stdout.write(`check passed: ${res.target}@${res.manifestDigest}: ${res.blobs} blobs, ${res.verifiedChunks} chunks verified, ${res.entries} entries match the source\n`);
  });

program.parseAsync(process.argv).catch((err: Error) => {
  process.stderr.write(`nydusify: error: ${String(err.message).split('\n')[0]}\n`);
  process.exit(1);
});
