/**
 * containerd-nydus-grpc: the containerd proxy snapshotter for nydus images.
 *
 *   containerd-nydus-grpc --config /etc/nydus/config.toml [--nydusd-config nydusd.json]
 *     [--address SOCK] [--root DIR] [--daemon-mode multiple|dedicated|shared|none] [--log-level L]
 *     [--log-to-stdout] [--nydusd PATH] [--nydus-image PATH] [--fs-driver D] [--nydus-overlayfs-path P]
 * Upstream's flags; values override the file. Config keys this implementation does not honour are
 * logged once each at start (see docs/compatibility.md).
 */
import * as path from 'node:path';
import { Command } from 'commander';
import { DEFAULT_ADDRESS, loadConfig, parseConfig } from '../snapshotter/config';
import { runSnapshotter } from '../snapshotter/run';
import { logger, setLogLevel } from '../util/log';

const program = new Command('containerd-nydus-grpc')
  .description('containerd proxy snapshotter that runs nydus images lazily')
  .option('--config <file>', 'config.toml (without it, the built-in defaults)')
  .option('--nydusd-config <file>', 'nydusd JSON config template')
  .option('--address <sock>', `gRPC unix socket (default ${DEFAULT_ADDRESS})`)
  .option('--root <dir>', 'state directory')
  .option('--daemon-mode <mode>', 'multiple (= dedicated, the default) | dedicated | shared | none')
  .option('--nydusd <path>', 'nydusd binary')
  .option('--nydus-image <path>', 'nydus-image binary (accepted; not run by the snapshotter)')
  .option('--fs-driver <driver>', 'fusedev (FUSE) | erofs (kernel EROFS over nydusd\'s blob view)')
  .option('--nydus-overlayfs-path <path>', 'nydus-overlayfs helper (accepted; not used)')
  .option('--log-level <level>', 'trace | debug | info | warn | error')
  .option('--log-to-stdout', 'send nydusd logs to stdout instead of files')
  .version('0.1.0');

async function main(): Promise<void> {
  program.parse();
  const o = program.opts<{
    config?: string;
    nydusdConfig?: string;
    address?: string;
    root?: string;
    daemonMode?: string;
    logLevel?: string;
    logToStdout?: boolean;
    nydusd?: string;
    nydusImage?: string;
    fsDriver?: string;
    nydusOverlayfsPath?: string;
  }>();
  const over = {
    root: o.root,
    address: o.address,
    nydusdConfig: o.nydusdConfig,
    daemonMode: o.daemonMode,
    logLevel: o.logLevel,
    logToStdout: o.logToStdout,
    nydusdPath: o.nydusd,
    nydusImagePath: o.nydusImage,
    fsDriver: o.fsDriver,
    nydusOverlayfsPath: o.nydusOverlayfsPath,
  };
  const cfg = o.config ? loadConfig(path.resolve(o.config), over) : parseConfig('', '(defaults)', over);
  setLogLevel(cfg.log.level);
  const log = logger('containerd-nydus-grpc');
  for (const w of cfg.warnings) log.warn(w);
  const running = await runSnapshotter(cfg);
  let stopping = false;
  const stop = (sig: string): void => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`containerd-nydus-grpc: ${sig}: stopping (nydusd daemons keep running)\n`);
    running.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((err: Error) => {
  process.stderr.write(`containerd-nydus-grpc: error: ${err.message}\n`);
  process.exit(1);
});
