/**
 * The methods of the containerd services ctr-remote calls (path and message codecs, the shape of a
 * grpc-js service definition), built straight from the protobuf.js JSON descriptor (proto/containerd-services.json, see containerd-protos.ts).
 *
 * Contract: the same messages on the wire and the same objects in and out as proto-loader's
 * `fromJSON(json, { keepCase: true, longs: String, enums: String, defaults: true })` gives
 * (proto-codec.ts): snake_case fields, int64 as decimal strings, enums as their names and absent
 * fields at their defaults. Neither proto-loader (its reflection descriptors of every message,
 * encoded at each load) nor protobuf.js (its generated code per message type) is loaded: together
 * they cost a pull ~0.1 s of start-up (docs/ctr-remote.md "Start-up").
 */
import * as fs from 'node:fs';
import { DESCRIPTOR_FILE, SERVICES } from './containerd-protos';
import { ProtoCodec } from './proto-codec';

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

/** Package path of each service in the descriptor. */
const SERVICE_PATH: Record<ServiceName, string> = {
  content: 'containerd.services.content.v1.Content',
  images: 'containerd.services.images.v1.Images',
  leases: 'containerd.services.leases.v1.Leases',
  snapshots: 'containerd.services.snapshots.v1.Snapshots',
  diff: 'containerd.services.diff.v1.Diff',
};

/** The methods of each service, keyed as SERVICES names them. */
export function loadServiceDefinitions(): Record<ServiceName, Record<string, RpcMethod>> {
  const codec = new ProtoCodec(JSON.parse(fs.readFileSync(DESCRIPTOR_FILE, 'utf8')));
  const serializer = (type: string) => (v: object): Buffer => {
    if (Array.isArray(v)) throw new Error(`Failed to serialize message: expected object with ${type.slice(type.lastIndexOf('.') + 1)} structure, got array instead`);
    return codec.encode(type, v);
  };
  const deserializer = (type: string) => (b: Buffer): object => codec.decode(type, b);
  const out = {} as Record<ServiceName, Record<string, RpcMethod>>;
  for (const name of SERVICES) {
    const def: Record<string, RpcMethod> = {};
    for (const m of codec.methods(SERVICE_PATH[name])) {
      def[m.name] = {
        path: `/${SERVICE_PATH[name]}/${m.name}`,
        requestStream: m.requestStream,
        responseStream: m.responseStream,
        requestSerialize: serializer(m.requestType),
        requestDeserialize: deserializer(m.requestType),
        responseSerialize: serializer(m.responseType),
        responseDeserialize: deserializer(m.responseType),
      };
    }
    out[name] = def;
  }
  return out;
}
