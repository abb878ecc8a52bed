/**
 * containerd's gRPC service definitions (proto/) as a protobuf.js JSON descriptor, which the client
 * loads with proto-loader's `fromJSON`: parsing the .proto text costs ctr-remote a few hundred
 * milliseconds of start-up on every pull, reading the descriptor a few tens.
 *
 * `proto/containerd-services.json` is generated from the .proto files by running this module
 * (`node dist/ctr/containerd-protos.js > proto/containerd-services.json`); a test checks that it
 * matches them. Parsing uses the protobuf.js that proto-loader itself depends on.
 */
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';

export const PROTO_DIR = path.join(__dirname, '../../proto');
export const SERVICES = ['content', 'images', 'leases', 'snapshots', 'diff'] as const;
export const DESCRIPTOR_FILE = path.join(PROTO_DIR, 'containerd-services.json');

/** Parses the service .proto files (and what they import) into a JSON descriptor. */
export function parseContainerdProtos(): object {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const pb = createRequire(require.resolve('@grpc/proto-loader'))('protobufjs') as any;
  const root = new pb.Root();
  root.resolvePath = (_origin: string, target: string): string => {
    const local = path.join(PROTO_DIR, target);
    return fs.existsSync(local) ? local : target;
  };
  root.loadSync(
    SERVICES.map((s) => `services/${s}/v1/${s}.proto`),
    { keepCase: true },
  );
  root.resolveAll();
  return root.toJSON({ keepComments: false });
}

if (require.main === module) process.stdout.write(`${JSON.stringify(parseContainerdProtos(), null, 1)}\n`);
