/**
 * Protocol Buffers encoding and decoding of the messages in a protobuf.js JSON descriptor, by
 * walking the descriptor (no generated code): what ctr-remote needs of protobuf.js, without
 * loading it and generating four functions per message type at every start (~50 ms of a pull on
 * the loaded test machine, docs/ctr-remote.md "Start-up").
 *
 * Contract: the same bytes and objects as protobuf.js's `T.encode(T.fromObject(o)).finish()` and
 * `T.toObject(T.decode(b), { keepCase: true, longs: String, enums: String, defaults: true })`
 * (what proto-loader did with those options) for the field kinds containerd's API uses: string,
 * bytes, bool, int32, int64, enums, messages, repeated fields and maps with string keys. In
 * particular a field given in the object is written even when it holds the default; int64 comes
 * back as a decimal string, an enum as its name, absent fields at their defaults (messages as
 * null, bytes as an empty Buffer). A value of the wrong shape throws a TypeError naming the field,
 * as protobuf.js does; a descriptor using another field kind is refused when loaded.
 */

interface FieldSpec {
  name: string;
  id: number;
  kind: 'string' | 'bytes' | 'bool' | 'int32' | 'int64' | 'enum' | 'message';
  repeated: boolean;
  /** A map<string, value>: `kind` is the value's. */
  map: boolean;
  /** Full name of the enum or message type. */
  type?: string;
}

interface MessageSpec {
  name: string;
  /** By field number, ascending (protobuf.js writes fields in that order). */
  fields: FieldSpec[];
  byId: Map<number, FieldSpec>;
}

interface EnumSpec {
  byName: Map<string, number>;
  byNumber: Map<number, string>;
}

/** A descriptor node as protobuf.js's `toJSON` writes it. */
interface JsonNode {
  nested?: Record<string, JsonNode>;
  fields?: Record<string, { type: string; id: number; rule?: string; keyType?: string }>;
  values?: Record<string, number>;
  methods?: Record<string, { requestType: string; responseType: string; requestStream?: boolean; responseStream?: boolean }>;
}

const SCALARS = new Set(['string', 'bytes', 'bool', 'int32', 'int64']);

export interface MethodSpec {
  name: string;
  requestType: string;
  responseType: string;
  requestStream: boolean;
  responseStream: boolean;
}

export class ProtoCodec {
  private readonly messages = new Map<string, MessageSpec>();
  private readonly enums = new Map<string, EnumSpec>();
  private readonly services = new Map<string, MethodSpec[]>();

  constructor(root: JsonNode) {
    const pending: [string, JsonNode][] = [];
    const services: [string, NonNullable<JsonNode['methods']>][] = [];
    const walk = (node: JsonNode, name: string): void => {
      if (node.fields) pending.push([name, node]);
      if (node.values) {
        const byName = new Map(Object.entries(node.values));
        const byNumber = new Map<number, string>();
        for (const [k, v] of byName) byNumber.set(v, k); // a later alias wins, as in protobuf.js
        this.enums.set(name, { byName, byNumber });
      }
      for (const [k, child] of Object.entries(node.nested ?? {})) walk(child, name ? `${name}.${k}` : k);
      if (node.methods) services.push([name, node.methods]);
    };
    walk(root, '');
    const isMessage = new Set(pending.map(([n]) => n));
    for (const [name, methods] of services) {
      this.services.set(name, Object.entries(methods).map(([m, d]) => ({
        name: m,
        requestType: this.resolve(d.requestType, name, (n) => isMessage.has(n)),
        responseType: this.resolve(d.responseType, name, (n) => isMessage.has(n)),
        requestStream: !!d.requestStream,
        responseStream: !!d.responseStream,
      })));
    }
    for (const [name, node] of pending) {
      const fields = Object.entries(node.fields!).map(([fname, f]): FieldSpec => {
        const map = f.keyType !== undefined;
        if (map && f.keyType !== 'string') throw new Error(`${name}.${fname}: map keys of type ${f.keyType} are not supported`);
        const base = { name: fname, id: f.id, repeated: f.rule === 'repeated', map };
        if (SCALARS.has(f.type)) return { ...base, kind: f.type as FieldSpec['kind'] };
        const type = this.resolve(f.type, name, (n) => this.enums.has(n) || isMessage.has(n));
        return { ...base, kind: this.enums.has(type) ? 'enum' : 'message', type };
      });
      fields.sort((a, b) => a.id - b.id);
      this.messages.set(name, { name, fields, byId: new Map(fields.map((f) => [f.id, f])) });
    }
  }

  /** protobuf.js's lookup: `ref` relative to the scope `from`, then to each enclosing one. */
  private resolve(ref: string, from: string, exists: (full: string) => boolean): string {
    if (ref.startsWith('.')) return ref.slice(1);
    for (let scope = from; ; scope = scope.includes('.') ? scope.slice(0, scope.lastIndexOf('.')) : '') {
      const full = scope ? `${scope}.${ref}` : ref;
      if (exists(full)) return full;
      if (!scope) throw new Error(`type ${ref} (used in ${from}) is not in the descriptor`);
    }
  }

  methods(service: string): MethodSpec[] {
    const m = this.services.get(service);
    if (!m) throw new Error(`service ${service} is not in the descriptor`);
    return m;
  }

  private message(name: string): MessageSpec {
    const m = this.messages.get(name);
    if (!m) throw new Error(`message ${name} is not in the descriptor`);
    return m;
  }

  encode(type: string, obj: object): Buffer {
    const parts: Buffer[] = [];
    this.encodeInto(this.message(type), obj as Record<string, unknown>, parts);
    return Buffer.concat(parts);
  }

  private encodeInto(m: MessageSpec, o: Record<string, unknown>, out: Buffer[]): void {
    for (const f of m.fields) {
      const v = o[f.name];
      if (v === null || v === undefined) continue;
      const where = `.${m.name}.${f.name}`;
      if (f.map) {
        if (typeof v !== 'object') throw new TypeError(`${where}: object expected`);
        for (const [k, val] of Object.entries(v as Record<string, unknown>)) {
          const entry: Buffer[] = [];
          tag(entry, 1, 2);
          bytesField(entry, Buffer.from(k, 'utf8'));
          this.encodeValue({ ...f, repeated: false, map: false, id: 2 }, val, where, entry, true);
          tag(out, f.id, 2);
          bytesField(out, Buffer.concat(entry));
        }
      } else if (f.repeated) {
        if (!Array.isArray(v)) throw new TypeError(`${where}: array expected`);
        if (v.length === 0) continue;
        if (f.kind === 'string' || f.kind === 'bytes' || f.kind === 'message') {
          for (const item of v) this.encodeValue(f, item, where, out, true);
        } else {
          // proto3 packs repeated numbers and enums (protobuf.js too, unless told otherwise).
          const packed: Buffer[] = [];
          for (const item of v) this.encodeValue(f, item, where, packed, false);
          tag(out, f.id, 2);
          bytesField(out, Buffer.concat(packed));
        }
      } else {
        this.encodeValue(f, v, where, out, true);
      }
    }
  }

  /** One value of field `f` (fromObject's conversion, then encode's); `withTag` false inside a packed run. */
  private encodeValue(f: FieldSpec, v: unknown, where: string, out: Buffer[], withTag: boolean): void {
    const wire = f.kind === 'string' || f.kind === 'bytes' || f.kind === 'message' ? 2 : 0;
    if (f.kind === 'enum') {
      const e = this.enums.get(f.type!)!;
      let n: number | undefined;
      if (typeof v === 'number') n = v;
      else if (typeof v === 'string' && e.byName.has(v)) n = e.byName.get(v);
      if (n === undefined) return; // protobuf.js's fromObject leaves an unknown name unset
      if (withTag) tag(out, f.id, wire);
      out.push(varint(BigInt.asUintN(64, BigInt(n | 0))));
      return;
    }
    if (f.kind === 'message' && (typeof v !== 'object' || v === null)) throw new TypeError(`${where}: object expected`);
    if (withTag) tag(out, f.id, wire);
    switch (f.kind) {
      case 'string':
        return bytesField(out, Buffer.from(String(v), 'utf8'));
      case 'bytes':
        return bytesField(out, bytesOf(v));
      case 'bool':
        return void out.push(varint(v ? 1n : 0n));
      case 'int32':
        return void out.push(varint(BigInt.asUintN(64, BigInt((v as number) | 0))));
      case 'int64':
        return void out.push(varint(BigInt.asUintN(64, toBigInt(v))));
      case 'message': {
        const inner: Buffer[] = [];
        this.encodeInto(this.message(f.type!), v as Record<string, unknown>, inner);
        return bytesField(out, Buffer.concat(inner));
      }
    }
  }

  decode(type: string, buf: Buffer): object {
    return this.toObject(this.message(type), this.read(this.message(type), buf));
  }

  /** The fields present in `buf`, as decode gives them (int64 as BigInt, enums as numbers). */
  private read(m: MessageSpec, buf: Buffer): Map<string, unknown> {
    const r = new Reader(buf);
    const out = new Map<string, unknown>();
    while (r.more()) {
      const key = Number(r.varint());
      const f = m.byId.get(key >>> 3);
      const wire = key & 7;
      if (!f) {
        r.skip(wire);
        continue;
      }
      if (f.map) {
        const entry = new Reader(r.bytes());
        let k = '';
        let val: unknown;
        while (entry.more()) {
          const ek = Number(entry.varint());
          if (ek >>> 3 === 1) k = entry.bytes().toString('utf8');
          else if (ek >>> 3 === 2) val = this.readValue(f, entry);
          else entry.skip(ek & 7);
        }
        const map = (out.get(f.name) as Map<string, unknown>) ?? new Map<string, unknown>();
        map.set(k, val ?? this.defaultOf({ ...f, map: false, repeated: false }, false));
        out.set(f.name, map);
      } else if (f.repeated) {
        const list = (out.get(f.name) as unknown[]) ?? [];
        if (wire === 2 && f.kind !== 'string' && f.kind !== 'bytes' && f.kind !== 'message') {
          const packed = new Reader(r.bytes());
          while (packed.more()) list.push(this.readValue(f, packed));
        } else {
          list.push(this.readValue(f, r));
        }
        out.set(f.name, list);
      } else {
        out.set(f.name, this.readValue(f, r));
      }
    }
    return out;
  }

  private readValue(f: FieldSpec, r: Reader): unknown {
    switch (f.kind) {
      case 'string':
        return r.bytes().toString('utf8');
      case 'bytes':
        return r.bytes();
      case 'bool':
        return r.varint() !== 0n;
      case 'int32':
      case 'enum':
        return Number(BigInt.asIntN(32, r.varint()));
      case 'int64':
        return BigInt.asIntN(64, r.varint());
      case 'message':
        return this.read(this.message(f.type!), r.bytes());
    }
  }

  /** What protobuf.js's toObject gives for a value (`present`) or a missing field (defaults: true). */
  private defaultOf(f: FieldSpec, repeatedOrMap = true): unknown {
    if (repeatedOrMap && f.map) return {};
    if (repeatedOrMap && f.repeated) return [];
    switch (f.kind) {
      case 'string':
        return '';
      case 'bytes':
        return Buffer.alloc(0);
      case 'bool':
        return false;
      case 'int32':
        return 0;
      case 'int64':
        return 0n;
      case 'enum':
        return 0;
      case 'message':
        return null;
    }
  }

  private plain(f: FieldSpec, v: unknown): unknown {
    if (v === null) return null;
    if (f.kind === 'int64') return (v as bigint).toString();
    if (f.kind === 'enum') return this.enums.get(f.type!)!.byNumber.get(v as number) ?? v;
    if (f.kind === 'message') return this.toObject(this.message(f.type!), v as Map<string, unknown>);
    return v;
  }

  private toObject(m: MessageSpec, fields: Map<string, unknown>): object {
    const o: Record<string, unknown> = {};
    for (const f of m.fields) {
      const v = fields.has(f.name) ? fields.get(f.name) : this.defaultOf(f);
      if (f.map) {
        const out: Record<string, unknown> = {};
        if (v instanceof Map) for (const [k, val] of v) out[k] = this.plain(f, val);
        o[f.name] = out;
      } else if (f.repeated) {
        o[f.name] = (v as unknown[]).map((x) => this.plain(f, x));
      } else {
        o[f.name] = this.plain(f, v);
      }
    }
    return o;
  }
}

function varint(v: bigint): Buffer {
  const bytes: number[] = [];
  while (v > 0x7fn) {
    bytes.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  bytes.push(Number(v));
  return Buffer.from(bytes);
}

function tag(out: Buffer[], id: number, wire: number): void {
  out.push(varint(BigInt((id << 3) | wire)));
}

function bytesField(out: Buffer[], b: Buffer): void {
  out.push(varint(BigInt(b.length)), b);
}

/** A bytes field's value (a base64 string, a Buffer, a typed array or an array of numbers), not copied when it can be viewed. */
function bytesOf(v: unknown): Buffer {
  if (typeof v === 'string') return Buffer.from(v, 'base64');
  if (Buffer.isBuffer(v)) return v;
  if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  return Buffer.from(v as number[]);
}

/** int64 input as protobuf.js's Long.fromValue takes it: number, decimal string, or { low, high }. */
function toBigInt(v: unknown): bigint {
  if (typeof v === 'bigint') return v;
  if (typeof v === 'number') return Number.isFinite(v) ? BigInt(Math.trunc(v)) : 0n;
  if (typeof v === 'string') return BigInt(v);
  const l = v as { low: number; high: number };
  return (BigInt(l.high >>> 0) << 32n) | BigInt(l.low >>> 0);
}

class Reader {
  private pos = 0;

  constructor(private readonly buf: Buffer) {}

  more(): boolean {
    return this.pos < this.buf.length;
  }

  varint(): bigint {
    let v = 0n;
    for (let shift = 0n; shift < 70n; shift += 7n) {
      if (this.pos >= this.buf.length) throw new RangeError('index out of range: truncated varint');
      const b = this.buf[this.pos++];
      v |= BigInt(b & 0x7f) << shift;
      if (b < 0x80) return v;
    }
    throw new Error('invalid varint encoding');
  }

  bytes(): Buffer {
    const len = Number(this.varint());
    if (this.pos + len > this.buf.length) throw new RangeError(`index out of range: ${this.pos} + ${len} > ${this.buf.length}`);
    const b = this.buf.subarray(this.pos, this.pos + len);
    this.pos += len;
    return b;
  }

  skip(wire: number): void {
    if (wire === 0) this.varint();
    else if (wire === 1) this.pos += 8;
    else if (wire === 2) this.bytes();
    else if (wire === 5) this.pos += 4;
    else throw new Error(`invalid wire type ${wire} at offset ${this.pos}`);
    if (this.pos > this.buf.length) throw new RangeError('index out of range');
  }
}
