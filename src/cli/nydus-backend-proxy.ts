/** ./bin/nydus-backend-proxy: serve a directory of blobs as a registry-like blob backend for nydusd. */
import { Command } from 'commander';
import { startBackendProxy } from '../backend-proxy/server';

const program = new Command('nydus-backend-proxy')
  .description('Serve a local directory of blobs over HTTP (HEAD and Range GET on /v2/<repo>/blobs/sha256:<hex>)')
  .requiredOption('-b, --blobsdir <dir>', 'directory holding blobs named by their sha256 hex digest')
  .option('-p, --port <port>', 'TCP port to listen on', '8000')
  .option('-H, --host <addr>', 'address to listen on', '127.0.0.1')
  .action(async (opts: { blobsdir: string; port: string; host: string }) => {
    const port = Number(opts.port);
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port ${opts.port} is not a TCP port`);
    const { server, url } = await startBackendProxy({ blobsDir: opts.blobsdir, port, host: opts.host });
    process.stdout.write(`nydus-backend-proxy listening on ${url}\n`);
    const stop = () => server.close(() => process.exit(0));
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });

program.parseAsync(process.argv).catch((err: Error) => {
  process.stderr.write(`nydus-backend-proxy: error: ${err.message}\n`);
  process.exit(1);
});
