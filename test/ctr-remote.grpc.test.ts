/**
 * ctr-remote's own gRPC client (src/ctr/grpc-client.ts) against a real gRPC server implementation,
 * grpc-js's Server, on a unix socket: metadata arrives as headers, unary answers and streamed
 * answers come back in order, a status with details is read back verbatim (details are
 * percent-encoded on the wire), a deadline ends the call, an unknown method, an oversized message
 * and a socket nobody listens on each end with the code grpc-js would give. Calls against
 * containerd itself are in test/ctr-remote.pull.test.ts.
 *
 * The deadline test is timing-dependent; it was run in a loop before being trusted:
 *   for i in $(seq 20); do npx jest --runInBand test/ctr-remote.grpc.test.ts || break; done
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { GrpcError, Status, UnixGrpcClient } from '../src/ctr/grpc-client';

const raw = { serialize: (b: Buffer) => b, deserialize: (b: Buffer) => b };
const method = (name: string, stream: boolean): grpc.MethodDefinition<Buffer, Buffer> => ({
  path: `/test.v1.Probe/${name}`,
  requestStream: stream,
  responseStream: stream,
  requestSerialize: raw.serialize,
  requestDeserialize: raw.deserialize,
  responseSerialize: raw.serialize,
  responseDeserialize: raw.deserialize,
});
const SERVICE: grpc.ServiceDefinition = {
  Echo: method('Echo', false),
  Fail: method('Fail', false),
  Slow: method('Slow', false),
  Huge: method('Huge', false),
  Chat: method('Chat', true),
};
const DETAILS = 'blob "sha256:abc" não encontrado\n100% gone';

describe('UnixGrpcClient against grpc-js Server', () => {
  let dir: string;
  let sock: string;
  let server: grpc.Server;
  const slowCalls: grpc.ServerUnaryCall<Buffer, Buffer>[] = [];

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'grpcc-'));
    sock = path.join(dir, 'probe.sock');
    server = new grpc.Server();
    server.addService(SERVICE, {
      Echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) =>
        cb(null, Buffer.concat([Buffer.from(`${call.metadata.get('containerd-namespace')[0]}|`), call.request])),
      Fail: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb({ code: grpc.status.NOT_FOUND, details: DETAILS }),
      Slow: (call: grpc.ServerUnaryCall<Buffer, Buffer>) => void slowCalls.push(call), // never answers
      Huge: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb(null, Buffer.alloc((4 << 20) + 1, 7)),
      Chat: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
        call.on('data', (b: Buffer) => call.write(Buffer.concat([Buffer.from('re:'), b])));
        call.on('end', () => call.end());
      },
    });
    await new Promise<void>((resolve, reject) => server.bindAsync(`unix://${sock}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? reject(e) : resolve())));
  });

  afterAll(async () => {
    server.forceShutdown();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('a unary call carries metadata and returns the answer', async () => {
    const c = new UnixGrpcClient(sock);
    try {
      const a = await c.unary('/test.v1.Probe/Echo', Buffer.from('hello'), { 'containerd-namespace': 'ns1' }, 10_000);
      const b = await c.unary('/test.v1.Probe/Echo', Buffer.alloc(0), { 'containerd-namespace': 'ns2' }, 10_000);
      expect(a.toString()).toBe('ns1|hello');
      expect(b.toString()).toBe('ns2|');
    } finally {
      c.close();
    }
  });

  test('a status with details comes back with its code and the details verbatim', async () => {
    const c = new UnixGrpcClient(sock);
    try {
      const err = await c.unary('/test.v1.Probe/Fail', Buffer.from('x'), {}, 10_000).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(GrpcError);
      expect(err).toMatchObject({ code: Status.NOT_FOUND, details: DETAILS });
      const unknown = await c.unary('/test.v1.Probe/Nope', Buffer.from('x'), {}, 10_000).catch((e: unknown) => e);
      expect(unknown).toMatchObject({ code: Status.UNIMPLEMENTED });
    } finally {
      c.close();
    }
  });

  test('the deadline ends a call the server does not answer; a message over 4 MiB is refused', async () => {
    const c = new UnixGrpcClient(sock);
    try {
      const err = await c.unary('/test.v1.Probe/Slow', Buffer.from('x'), {}, 300).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: Status.DEADLINE_EXCEEDED, details: 'Deadline exceeded' });
      expect(slowCalls.length).toBe(1);
      expect(slowCalls[0].getDeadline()).not.toBe(Infinity); // grpc-timeout reached the server
      const huge = await c.unary('/test.v1.Probe/Huge', Buffer.from('x'), {}, 10_000).catch((e: unknown) => e);
      expect(huge).toMatchObject({ code: Status.RESOURCE_EXHAUSTED });
      // The connection still serves calls.
      expect((await c.unary('/test.v1.Probe/Echo', Buffer.from('y'), { 'containerd-namespace': 'n' }, 10_000)).toString()).toBe('n|y');
    } finally {
      c.close();
    }
  });

  test('a bidirectional stream answers each message in order, 1 MiB messages included, then ends OK', async () => {
    const c = new UnixGrpcClient(sock);
    try {
      const call = c.start('/test.v1.Probe/Chat', {});
      const got: Buffer[] = [];
      const status = new Promise<GrpcError>((resolve) => call.once('status', resolve));
      call.on('message', (m: Buffer) => got.push(Buffer.from(m)));
      const big = Buffer.alloc(1 << 20, 0x5a);
      call.write(Buffer.from('one'));
      call.write(big);
      call.write(Buffer.from('three'));
      call.end();
      expect((await status).code).toBe(Status.OK);
      expect(got.map((g) => g.length)).toEqual([6, (1 << 20) + 3, 8]);
      expect(got[0].toString()).toBe('re:one');
      expect(got[1].subarray(3).equals(big)).toBe(true);
      expect(got[2].toString()).toBe('re:three');
    } finally {
      c.close();
    }
  });

  test('a socket nobody listens on fails the call with UNAVAILABLE naming the socket', async () => {
    const gone = path.join(dir, 'nobody.sock');
    const c = new UnixGrpcClient(gone);
    const err = await c.unary('/test.v1.Probe/Echo', Buffer.from('x'), {}, 10_000).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: Status.UNAVAILABLE });
    expect((err as GrpcError).details).toContain(gone);
    c.close();
  });
});
