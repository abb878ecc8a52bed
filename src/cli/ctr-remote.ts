/**
 * ctr-remote: containerd's `ctr` for remote snapshotters (the command stargz-snapshotter ships,
 * here for nydus). It talks to containerd's gRPC API directly.
 *
 *   ctr-remote [-a SOCK] [-n NAMESPACE] images rpull [--plain-http] [--user USER:PASS]
 *              [--tlscacert FILE] [--tlscert FILE --tlskey FILE] [-k|--skip-verify]
 *              [--snapshotter nydus] [--platform linux/amd64] REF
 *
 * Credentials: --user, else the docker config file (DOCKER_CONFIG or ~/.docker/config.json).
 * Exit 0 when the image is pulled; otherwise one line `ctr-remote: <what went wrong>` and exit 1.
 *
 * A subcommand loads its modules when it runs (gRPC, the registry client): --help and a bad flag
 * load only commander, and a pull starts its first request sooner (cold start, docs/benchmarks.md).
 */
import { Command } from 'commander';

const DEFAULT_ADDRESS = '/run/containerd/containerd.sock';

/**
 * V8 flag for a pull: no optimizing compile of undici's WebAssembly HTTP parser. V8 would recompile
 * it with TurboFan on a background thread after a few responses (0.3-0.6 s of CPU), and the process
 * exit waits for that job; the parser's baseline code is fast enough for the few responses a pull
 * parses (docs/ctr-remote.md "Start-up"). Set before undici compiles the parser at the first request.
 */
const NO_WASM_TIER_UP = '--wasm-tiering-budget=2000000000';

function fail(msg: string): never {
  process.stderr.write(`ctr-remote: ${msg.split('\n')[0]}\n`);
  process.exit(1);
}

const program = new Command('ctr-remote')
  .description('pull images into containerd for remote (lazy) snapshotters')
  .option('-a, --address <sock>', 'containerd gRPC socket', process.env.CONTAINERD_ADDRESS ?? DEFAULT_ADDRESS)
  .option('-n, --namespace <ns>', 'containerd namespace', process.env.CONTAINERD_NAMESPACE ?? 'default')
  .version('0.1.0');

const images = program.command('images').aliases(['image', 'i']).description('manage images');

images
  .command('rpull')
  .description('pull an image; layers the snapshotter serves remotely are not downloaded')
  .argument('<ref>', 'image reference (host[:port]/repository[:tag|@digest])')
  .option('--plain-http', 'talk to the registry over plain HTTP')
  .option('-u, --user <user:password>', 'registry credentials')
  .option('--tlscacert <file>', 'CA certificate (PEM) that signs the registry\'s and its token realm\'s certificates')
  .option('--tlscert <file>', 'client certificate (PEM)')
  .option('--tlskey <file>', 'client key (PEM)')
  .option('-k, --skip-verify', 'accept any registry TLS certificate')
  .option('--snapshotter <name>', 'snapshotter to unpack into', 'nydus')
  .option('--platform <os/arch>', 'platform to pull from an index', 'linux/amd64')
  .action(async (ref: string, o: { plainHttp?: boolean; user?: string; tlscacert?: string; tlscert?: string; tlskey?: string; skipVerify?: boolean; snapshotter: string; platform: string }) => {
    const g = program.opts<{ address: string; namespace: string }>();
    const [{ parseUserPass }, { ContainerdClient }, { Progress }, { rpull }, v8] = await Promise.all([
      import('../registry/credentials'), import('../ctr/containerd-client'), import('../ctr/progress'), import('../ctr/rpull'), import('node:v8'),
    ]);
    v8.setFlagsFromString(NO_WASM_TIER_UP);
    const ctd = new ContainerdClient(g.address, g.namespace);
    try {
      const credentials = o.user !== undefined ? parseUserPass(o.user, '--user') : undefined;
      if (!!o.tlscert !== !!o.tlskey) fail('--tlscert and --tlskey go together');
      const tls = { ca: o.tlscacert, cert: o.tlscert, key: o.tlskey, skipVerify: o.skipVerify };
      await rpull(ctd, { ref, snapshotter: o.snapshotter, plainHttp: o.plainHttp, tls, credentials, platform: o.platform, progress: new Progress((s) => process.stdout.write(s)) });
    } finally {
      ctd.close();
    }
    // The image is in place and the lease gone: exit once stdout is flushed instead of waiting for
    // the clients' idle sockets and timers to wind down (the next step of a cold start waits on us).
    await new Promise<void>((resolve) => process.stdout.write('', () => resolve()));
    process.exit(0);
  });

program.parseAsync().catch((err: Error) => fail(err.message));
