/**
 * The methods of the containerd services ctr-remote calls (path and message codecs, the shape of a
 * grpc-js service definition), built straight from the protobuf.js JSON descriptor (proto/containerd-services.json, see containerd-protos.ts).
 *
 * Contract: the same messages on the wire and the same objects in and out as proto-loader's
 * `fromJSON(json, { keepCase: true, longs: String, enums: String, defaults: true })` gives:
 * requests are built with `fromObject` and encoded, responses decoded and turned into plain objects
 * with snake_case fields, int64 as decimal strings, enums as their names and absent fields at
 * their defaults. What proto-loader adds for reflection (every message's descriptor, encoded once
 * per file at load) and its .proto parser are left out: they cost a pull ~50 ms of start-up
 * (docs/ctr-remote.md "Start-up").
 */
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import { DESCRIPTOR_FILE, SERVICES } from './containerd-protos';

/** The parts of protobuf.js (the copy proto-loader depends on) used here. */
interface PbType {
  name: string;
  fromObject(o: object): unknown;
  encode(m: unknown): { finish(): Uint8Array };
  decode(b: Uint8Array): unknown;
  toObject(m: unknown, o: object): object;
}
interface PbMethod {
  name: string;
  requestStream?: boolean;
  responseStream?: boolean;
  resolve(): PbMethod;
  resolvedRequestType: PbType;
  resolvedResponseType: PbType;
}
interface PbRoot {
  lookupService(path: string): { methodsArray: PbMethod[] };
}

/** A method: its HTTP/2 path, whether it streams, and its messages' codecs. */
export interface RpcMethod {
  path: string;
  requestStream: boolean;
  responseStream: boolean;
  requestSerialize(v: object): Buffer;
  requestDeserialize(b: Buffer): object;
  responseSerialize(v: object): Buffer;
  responseDeserialize(b: Buffer): object;
}

export type ServiceName = (typeof SERVICES)[number];

/** proto-loader's conversion options, as ctr-remote always passed them. */
const TO_OBJECT = { keepCase: true, longs: String, enums: String, defaults: true };

/** Package path of each service in the descriptor. */
const SERVICE_PATH: Record<ServiceName, string> = {
  content: 'containerd.services.content.v1.Content',
  images: 'containerd.services.images.v1.Images',
  leases: 'containerd.services.leases.v1.Leases',
  snapshots: 'containerd.services.snapshots.v1.Snapshots',
  diff: 'containerd.services.diff.v1.Diff',
};

function serializer(t: PbType): (v: object) => Buffer {
  return (v) => {
    if (Array.isArray(v)) throw new Error(`Failed to serialize message: expected object with ${t.name} structure, got array instead`);
    return t.encode(t.fromObject(v)).finish() as Buffer; // a Buffer under Node (protobuf.js's BufferWriter)
  };
}

function deserializer(t: PbType): (b: Buffer) => object {
  return (b) => t.toObject(t.decode(b), TO_OBJECT);
}

/** The methods of each service, keyed as SERVICES names them. */
export function loadServiceDefinitions(): Record<ServiceName, Record<string, RpcMethod>> {
  // protobuf.js without its .proto parser: the descriptor is JSON already.
  const pb = createRequire(require.resolve('@grpc/proto-loader'))('protobufjs/light') as { Root: { fromJSON(j: object): PbRoot } };
  const root = pb.Root.fromJSON(JSON.parse(fs.readFileSync(DESCRIPTOR_FILE, 'utf8')) as object);
  const out = {} as Record<ServiceName, Record<string, RpcMethod>>;
  for (const name of SERVICES) {
    const def: Record<string, RpcMethod> = {};
    for (const m of root.lookupService(SERVICE_PATH[name]).methodsArray) {
      m.resolve();
      def[m.name] = {
        path: `/${SERVICE_PATH[name]}/${m.name}`,
        requestStream: !!m.requestStream,
        responseStream: !!m.responseStream,
        requestSerialize: serializer(m.resolvedRequestType),
        requestDeserialize: deserializer(m.resolvedRequestType),
        responseSerialize: serializer(m.resolvedResponseType),
        responseDeserialize: deserializer(m.resolvedResponseType),
      };
    }
    out[name] = def;
  }
  return out;
}
