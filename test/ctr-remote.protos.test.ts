/**
 * ctr-remote loads containerd's services from proto/containerd-services.json rather than parsing
 * the .proto files at every start: the JSON must be what the .proto files say (regenerate with
 * `node dist/ctr/containerd-protos.js > proto/containerd-services.json` after changing them),
 * loading it must give every service method the client calls, and the client's own definitions
 * (containerd-services.ts, which skip proto-loader) must put the same bytes on the wire and give
 * the same objects back as proto-loader's.
 */
import * as fs from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { DESCRIPTOR_FILE, parseContainerdProtos } from '../src/ctr/containerd-protos';
import { loadServiceDefinitions } from '../src/ctr/containerd-services';

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

test('the client\'s own service definitions encode and decode as proto-loader\'s do', () => {
  const def = protoLoader.fromJSON(JSON.parse(fs.readFileSync(DESCRIPTOR_FILE, 'utf8')), { keepCase: true, longs: String, enums: String, defaults: true });
  const ours = loadServiceDefinitions();
  const theirs = (service: string, method: string) => (def[`containerd.services.${service}.v1.${service[0].toUpperCase()}${service.slice(1)}`] as grpc.ServiceDefinition)[method];
  // Requests as rpull sends them, and answers as containerd gives them (int64, enums, maps, nested messages, bytes).
  const cases: [string, string, object, object][] = [
    ['content', 'Write', { action: 'COMMIT', ref: 'layer-x', total: 1303, offset: 1303, expected: 'sha256:ab', labels: { 'containerd.io/uncompressed': 'sha256:cd' }, data: Buffer.from('xyz') },
      { action: 'WRITE', started_at: { seconds: '1796227666', nanos: 902270675 }, offset: '429', total: '429', digest: 'sha256:ab' }],
    ['content', 'Info', { digest: 'sha256:ab' }, { info: { digest: 'sha256:ab', size: '12', labels: { a: 'b' } } }],
    ['content', 'Update', { info: { digest: 'sha256:ab', labels: { k: 'v' } }, update_mask: { paths: ['labels.k'] } }, { info: { digest: 'sha256:ab', size: '5' } }],
    ['snapshots', 'Prepare', { snapshotter: 'nydus', key: 'extract-1 sha256:x', parent: '', labels: { 'containerd.io/snapshot.ref': 'sha256:x' } },
      { mounts: [{ type: 'overlay', source: 'overlay', target: '', options: ['lowerdir=/a', 'upperdir=/b'] }] }],
    ['snapshots', 'Stat', { snapshotter: 'nydus', key: 'k' }, { info: { name: 'k', parent: 'p', kind: 'COMMITTED', labels: {} } }],
    ['diff', 'Apply', { diff: { media_type: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: 'sha256:ab', size: '1303', annotations: {} }, mounts: [{ type: 'bind', source: '/x', options: ['rbind'] }] },
      { applied: { media_type: 'application/vnd.oci.image.layer.v1.tar', digest: 'sha256:cd', size: '10240', annotations: {} } }],
    ['images', 'Create', { image: { name: 'r', labels: {}, target: { media_type: 'm', digest: 'sha256:ab', size: '7' } } }, { image: { name: 'r', target: { digest: 'sha256:ab', size: '7' } } }],
    ['leases', 'Create', { id: 'l', labels: { 'containerd.io/gc.expire': '2026-12-03T00:00:00Z' } }, { lease: { id: 'l', created_at: { seconds: '7', nanos: 9 }, labels: {} } }],
    ['leases', 'Delete', { id: 'l' }, {}],
    // Edge values: negative and 64-bit numbers, defaults given explicitly, enum by number and by an
    // unknown name, bytes as base64, empty lists and maps, a 200 kB payload.
    ['content', 'Write', { action: 2, ref: '', total: '-5', offset: '9007199254740993', expected: '', labels: {}, data: 'aGVsbG8=' },
      { action: 'NOPE', offset: -1, total: '18446744073709551615', digest: '' }],
    ['content', 'Write', { action: 'WRITE', ref: 'r', offset: 0, data: Buffer.alloc(200_000, 1) }, { action: 1 }],
    ['snapshots', 'Prepare', { snapshotter: 'n', key: 'k', labels: {} }, { mounts: [] }],
    ['diff', 'Apply', { diff: { digest: 'sha256:x' }, mounts: [], payloads: {} }, { applied: null }],
  ];
  for (const [service, method, req, res] of cases) {
    const m = ours[service as keyof typeof ours][method];
    const t = theirs(service, method);
    expect([service, method, m.path]).toEqual([service, method, t.path]);
    expect([m.requestStream, m.responseStream]).toEqual([t.requestStream, t.responseStream]);
    const wire = m.requestSerialize(req);
    expect(Buffer.from(wire).equals(Buffer.from(t.requestSerialize(req)))).toBe(true);
    expect(m.requestDeserialize(wire)).toEqual(t.requestDeserialize(wire));
    const answer = t.responseSerialize(res);
    expect(Buffer.from(m.responseSerialize(res)).equals(Buffer.from(answer))).toBe(true);
    expect(m.responseDeserialize(answer)).toEqual(t.responseDeserialize(answer));
  }
});

test('every method\'s messages: an empty request and an empty answer give what proto-loader gives', () => {
  const def = protoLoader.fromJSON(JSON.parse(fs.readFileSync(DESCRIPTOR_FILE, 'utf8')), { keepCase: true, longs: String, enums: String, defaults: true });
  const ours = loadServiceDefinitions();
  let n = 0;
  for (const [service, methods] of Object.entries(ours)) {
    const theirs = def[`containerd.services.${service}.v1.${service[0].toUpperCase()}${service.slice(1)}`] as grpc.ServiceDefinition;
    expect(Object.keys(methods).sort()).toEqual(Object.keys(theirs).sort());
    for (const [name, m] of Object.entries(methods)) {
      const t = theirs[name];
      expect([service, name, Buffer.from(m.requestSerialize({})).toString('hex')]).toEqual([service, name, Buffer.from(t.requestSerialize({})).toString('hex')]);
      expect(m.requestDeserialize(Buffer.alloc(0))).toEqual(t.requestDeserialize(Buffer.alloc(0)));
      expect(m.responseDeserialize(Buffer.alloc(0))).toEqual(t.responseDeserialize(Buffer.alloc(0)));
      n++;
    }
  }
  expect(n).toBeGreaterThan(20);
  // A field of the wrong shape is refused as protobuf.js refuses it.
  const prepare = ours.snapshots.Prepare;
  expect(() => prepare.requestSerialize({ labels: 'x' })).toThrow('.containerd.services.snapshots.v1.PrepareSnapshotRequest.labels: object expected');
  expect(() => ours.diff.Apply.requestSerialize({ mounts: {} })).toThrow('.containerd.services.diff.v1.ApplyRequest.mounts: array expected');
});
