/**
 * A client for containerd's own gRPC API (the services `ctr` uses): content, images, leases,
 * snapshots and diff, from proto/containerd-services.json (containerd v1.6's definitions, see
 * containerd-protos.ts and containerd-services.ts). Every call carries the
 * namespace header, and the lease header once `withLease` is set, as containerd's Go client does.
 *
 * Contract: methods resolve with the response object (proto-loader shape: snake_case fields,
 * int64 as strings) or reject with a `ContainerdError` that keeps the gRPC code and names the
 * service and method. `writeContent` streams a blob into the content store and resolves once it
 * is committed under `expected`; content that is already there is not sent again, nor fetched
 * when its source is given as a function (containerd already holding the bytes, e.g. pulled into
 * another namespace, answers the opening STAT with the whole size).
 */
import { RpcMethod, ServiceName, loadServiceDefinitions } from './containerd-services';
import { GrpcCall, GrpcError, Status, UnixGrpcClient } from './grpc-client';

const NAMESPACE_HEADER = 'containerd-namespace';
const LEASE_HEADER = 'containerd-lease';
/** Bytes per WRITE message (containerd's client sends 1 MiB buffers too). */
const WRITE_CHUNK = 1 << 20;

export class ContainerdError extends Error {
  constructor(
    /** The gRPC status code (grpc-client.ts `Status`). */
    readonly code: number,
    readonly op: string,
    readonly details: string,
  ) {
    super(`containerd ${op}: ${details}`);
    this.name = 'ContainerdError';
  }
}

export interface Descriptor {
  media_type: string;
  digest: string;
  size: string | number;
  annotations?: Record<string, string>;
}

export interface Mount {
  type: string;
  source: string;
  target?: string;
  options: string[];
}

export class ContainerdClient {
  private readonly services = loadServiceDefinitions();
  private readonly grpc: UnixGrpcClient;
  private lease?: string;

  constructor(
    readonly address: string,
    readonly namespace: string,
  ) {
    this.grpc = new UnixGrpcClient(address);
  }

  /** Later calls run inside this lease (content and snapshots they create are held by it). */
  withLease(id: string | undefined): void {
    this.lease = id;
  }

  private md(): Record<string, string> {
    return this.lease ? { [NAMESPACE_HEADER]: this.namespace, [LEASE_HEADER]: this.lease } : { [NAMESPACE_HEADER]: this.namespace };
  }

  private method(service: string, method: string): RpcMethod {
    const m = this.services[service as ServiceName]?.[method];
    if (!m) throw new ContainerdError(Status.UNIMPLEMENTED, `${service}.${method}`, 'not in proto/containerd-services.json');
    return m;
  }

  /** Encodes a request; a request the message type cannot take fails as grpc-js fails it. */
  private encode(m: RpcMethod, op: string, req: object): Buffer {
    try {
      return m.requestSerialize(req);
    } catch (e) {
      throw new ContainerdError(Status.INTERNAL, op, `Request message serialization failure: ${(e as Error).message}`);
    }
  }

  private decode<T>(m: RpcMethod, op: string, res: Buffer): T {
    try {
      return m.responseDeserialize(res) as T;
    } catch (e) {
      throw new ContainerdError(Status.INTERNAL, op, `Response message parsing error: ${(e as Error).message}`);
    }
  }

  /** One unary call; `timeoutMs` bounds it (applying a big layer takes a while). */
  async call<T = any>(service: string, method: string, req: object, timeoutMs = 60_000): Promise<T> { // eslint-disable-line @typescript-eslint/no-explicit-any
    const op = `${service}.${method}`;
    const m = this.method(service, method);
    let res: Buffer;
    try {
      res = await this.grpc.unary(m.path, this.encode(m, op, req), this.md(), timeoutMs);
    } catch (e) {
      if (e instanceof GrpcError) throw new ContainerdError(e.code, op, e.details);
      throw e;
    }
    return this.decode<T>(m, op, res);
  }

  /** Content info, or undefined when this namespace does not have `digest`. */
  async contentInfo(digest: string): Promise<{ digest: string; size: string; labels: Record<string, string> } | undefined> {
    try {
      return (await this.call('content', 'Info', { digest })).info;
    } catch (err) {
      if (err instanceof ContainerdError && err.code === Status.NOT_FOUND) return undefined;
      throw err;
    }
  }

  /** Sets content labels `keys` (field paths `labels.<key>`) to the values in `labels`. */
  async setContentLabels(digest: string, labels: Record<string, string>): Promise<void> {
    const paths = Object.keys(labels).map((k) => `labels.${k}`);
    await this.call('content', 'Update', { info: { digest, labels }, update_mask: { paths } });
  }

  /**
   * Writes `data` (a Buffer, or a function that opens the bytes: called only when containerd needs
   * them) as blob `expected` of `size` bytes, under the ingest `ref`, committing it with `labels`.
   * `onBytes` hears progress.
   */
  async writeContent(ref: string, expected: string, size: number, data: Buffer | (() => Promise<Buffer | AsyncIterable<Buffer>>), labels: Record<string, string>, onBytes?: (n: number) => void, retried = false): Promise<void> {
    const op = 'content.Write';
    const m = this.method('content', 'Write');
    const stream: GrpcCall = this.grpc.start(m.path, this.md());
    const pending: { resolve: (r: { offset: string; digest: string }) => void; reject: (e: Error) => void }[] = [];
    let failed: Error | undefined;
    stream.on('message', (b: Buffer) => {
      const p = pending.shift();
      if (!p) return; // the answer to the half-close
      try {
        p.resolve(this.decode(m, op, b));
      } catch (e) {
        p.reject(e as Error);
      }
    });
    stream.once('status', (st: GrpcError) => {
      // A stream that ends (even with OK) while a request waits for its answer has failed it.
      failed = new ContainerdError(st.code === Status.OK ? Status.UNKNOWN : st.code, op, st.code === Status.OK ? 'stream ended before answering' : st.details);
      for (const p of pending.splice(0)) p.reject(failed);
    });
    const send = (req: object): Promise<{ offset: string; digest: string }> => {
      if (failed) return Promise.reject(failed);
      const bytes = this.encode(m, op, req);
      return new Promise((resolve, reject) => {
        pending.push({ resolve, reject });
        stream.write(bytes);
      });
    };
    try {
      // STAT opens the ingest. Bytes left by an interrupted pull are discarded once (no resume).
      const st = await send({ action: 'STAT', ref, total: size, expected });
      let offset = 0;
      // The whole blob is there already: containerd's content store holds these bytes for another
      // namespace and shares them (its default policy). Commit without sending, as containerd's own
      // fetch does (remotes/handlers.go).
      const complete = Number(st.offset) === size && st.digest === expected;
      if (Number(st.offset) > 0 && !complete && !retried) {
        stream.end();
        await this.call('content', 'Abort', { ref }).catch(() => undefined);
        return await this.writeContent(ref, expected, size, data, labels, onBytes, true);
      }
      if (Number(st.offset) > 0 && !complete) throw new ContainerdError(Status.ABORTED, op, `ingest ${ref} is busy (another pull of the same blob?)`);
      const bytes = complete ? [] : Buffer.isBuffer(data) ? data : await data();
      const chunks: AsyncIterable<Buffer> | Buffer[] = Buffer.isBuffer(bytes) ? [bytes] : bytes;
      if (complete) offset = size;
      for await (const chunk of chunks) {
        for (let i = 0; i < chunk.length; i += WRITE_CHUNK) {
          const part = chunk.subarray(i, i + WRITE_CHUNK);
          const r = await send({ action: 'WRITE', ref, offset, data: part });
          if (Number(r.offset) !== offset + part.length) throw new ContainerdError(Status.DATA_LOSS, op, `short write at offset ${offset}`);
          offset += part.length;
          onBytes?.(part.length);
        }
      }
      const r = await send({ action: 'COMMIT', ref, total: size, offset, expected, labels });
      if (r.digest !== expected) throw new ContainerdError(Status.DATA_LOSS, op, `committed ${r.digest}, expected ${expected}`);
    } catch (err) {
      // Someone committed the same blob meanwhile: that is the same result.
      if (err instanceof ContainerdError && err.code === Status.ALREADY_EXISTS) return;
      throw err;
    } finally {
      stream.end();
    }
  }

  close(): void {
    this.grpc.close();
  }
}
