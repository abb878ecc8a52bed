/**
 * ctr-remote loads containerd's services from proto/containerd-services.json rather than parsing
 * the .proto files at every start: the JSON must be what the .proto files say (regenerate with
 * `node dist/ctr/containerd-protos.js > proto/containerd-services.json` after changing them), and
 * loading it must give every service method the client calls.
 */
import * as fs from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { DESCRIPTOR_FILE, parseContainerdProtos } from '../src/ctr/containerd-protos';

test('proto/containerd-services.json is the descriptor of the .proto files', () => {
  expect(JSON.parse(fs.readFileSync(DESCRIPTOR_FILE, 'utf8'))).toEqual(parseContainerdProtos());
});

test('the descriptor gives the services and methods ctr-remote calls, with their messages', () => {
  const def = protoLoader.fromJSON(JSON.parse(fs.readFileSync(DESCRIPTOR_FILE, 'utf8')), { keepCase: true, longs: String, enums: String, defaults: true });
  const s = (grpc.loadPackageDefinition(def) as any).containerd.services; // eslint-disable-line @typescript-eslint/no-explicit-any
  const methods = (svc: grpc.ServiceClientConstructor): string[] => Object.keys(svc.service);
  expect(methods(s.content.v1.Content)).toEqual(expect.arrayContaining(['Info', 'Update', 'Write']));
  expect(methods(s.images.v1.Images)).toEqual(expect.arrayContaining(['Create', 'Update']));
  expect(methods(s.leases.v1.Leases)).toEqual(expect.arrayContaining(['Create', 'Delete']));
  expect(methods(s.snapshots.v1.Snapshots)).toEqual(expect.arrayContaining(['Prepare', 'Commit', 'Stat', 'Remove']));
  expect(methods(s.diff.v1.Diff)).toEqual(expect.arrayContaining(['Apply']));
  // A message with a Timestamp and a map round-trips: the google.protobuf types are in the JSON.
  const create = s.leases.v1.Leases.service.Create;
  const wire = create.requestSerialize({ id: 'x', labels: { a: 'b' } });
  expect(create.requestDeserialize(wire)).toMatchObject({ id: 'x', labels: { a: 'b' } });
  const resp = create.responseSerialize({ lease: { id: 'x', created_at: { seconds: '7', nanos: 9 }, labels: {} } });
  expect(create.responseDeserialize(resp).lease.created_at).toEqual({ seconds: '7', nanos: 9 });
});
