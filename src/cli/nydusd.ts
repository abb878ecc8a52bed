/**
 * nydusd: mount a RAFS v6 image read-only over FUSE, fetching its data lazily.
 *   nydusd --config CFG.json --mountpoint DIR --bootstrap FILE [--apisock SOCK] [--id ID]
 *   nydusd --apisock SOCK [--config CFG.json]      shared daemon; mount through the API
 */
import '../daemon/heap';
import { Command } from 'commander';
import * as fs from 'node:fs';
import { randomUUID } from 'node:crypto';
import { Daemon } from '../daemon/daemon';
import { NydusdConfig, parseNydusdConfigText } from '../daemon/config';
import { applyImagePullAuth } from '../daemon/sources';
import { logger, setLogLevel } from '../util/log';

const log = logger('nydusd');

function fail(msg: string): never {
  process.stderr.write(`nydusd: error: ${msg}\n`);
  process.exit(1);
}

async function main(): Promise<void> {
  const program = new Command('nydusd')
    .description('Lazy FUSE filesystem over RAFS v6 images, with blob cache, prefetch and an HTTP API')
    .option('-C, --config <file>', 'nydusd JSON config (device.backend, device.cache, fs_prefetch, ...)')
    .option('-M, --mountpoint <dir>', 'where to mount the image')
    .option('--bootstrap <file>', 'the image bootstrap (RAFS v6 metadata)')
    .option('--apisock <path>', 'unix socket for the HTTP API')
    .option('--id <id>', 'daemon id reported by the API')
    .option('--prefetch-files <paths>', 'comma-separated files to prefetch instead of the image table')
    .option('--mirrors-dir <dir>', 'certs.d directory (<registry>/hosts.toml) watched for mirrors, applied live')
    .option('--log-level <level>', 'trace, debug, info, warn or error', 'info')
    .argument('[mode]', 'fuse (the only mode; accepted for compatibility)')
    .showHelpAfterError()
    .parse();
  const o = program.opts<{ config?: string; mountpoint?: string; bootstrap?: string; apisock?: string; id?: string; prefetchFiles?: string; logLevel: string; mirrorsDir?: string }>();
  const mode = program.args[0];
  if (mode && mode !== 'fuse') fail(`unsupported mode ${JSON.stringify(mode)} (only fuse)`);
  if (!['trace', 'debug', 'info', 'warn', 'error'].includes(o.logLevel)) fail(`--log-level: expected trace, debug, info, warn or error, got ${o.logLevel}`);
  setLogLevel(o.logLevel);
  if (!!o.bootstrap !== !!o.mountpoint) fail('--bootstrap and --mountpoint go together (omit both for a shared daemon)');
  if (!o.bootstrap && !o.apisock) fail('a shared daemon (no --bootstrap) needs --apisock');
  let config: NydusdConfig | undefined;
  if (o.config) {
    let text: string;
    try {
      text = fs.readFileSync(o.config, 'utf8');
    } catch (e) {
      fail(`${o.config}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
    }
    try {
      const parsed = parseNydusdConfigText(text, o.config);
      config = parsed.config;
      applyImagePullAuth(config);
      for (const w of parsed.warnings) log.warn(w);
    } catch (e) {
      fail((e as Error).message);
    }
  }
  if (o.bootstrap && !config) fail('--config is required with --bootstrap');
  if (o.mirrorsDir && !fs.statSync(o.mirrorsDir, { throwIfNoEntry: false })?.isDirectory()) fail(`--mirrors-dir: ${o.mirrorsDir}: not a directory`);
  const daemon = new Daemon({ id: o.id ?? config?.id ?? randomUUID(), apisock: o.apisock, defaultConfig: config, mirrorsDir: o.mirrorsDir });
  let stopping = false;
  const stop = (sig: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal: sig }, 'shutting down');
    daemon.shutdown().then(
      () => process.exit(0),
      (e) => {
        log.error({ err: (e as Error).message }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  try {
    await daemon.listen();
    if (o.bootstrap && o.mountpoint && config) {
      const files = o.prefetchFiles?.split(',').map((s) => s.trim()).filter(Boolean);
      await daemon.mount(o.mountpoint, o.bootstrap, config, files, false);
      daemon.state = 'READY';
    }
    daemon.run();
    log.info({ id: daemon.opts.id, apisock: o.apisock, mountpoint: o.mountpoint }, 'nydusd running');
  } catch (e) {
    await daemon.shutdown().catch(() => undefined);
    fail((e as Error).message);
  }
}

main().catch((e) => fail((e as Error).message));
