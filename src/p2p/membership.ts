/**
 * Swarm membership over hyperdht: listen on this node's key, announce the cluster topic, look the
 * topic up and dial the peers found; refuse keys outside the allowlist; run a PeerChannel on every
 * connection and keep the set of live peers, i.e. those whose HELLO proved the cluster secret.
 *
 * Why not hyperswarm's connection manager: nodes that start together dial each other at the same
 * moment, and hyperswarm then destroys one of the two connections on each side. The survivor is
 * handed to the application on one side only once the loser's UDX stream has finished closing,
 * which takes seconds or never happens, while the other side already uses it: a four-node mesh
 * took 15 s to form on loopback and stayed incomplete for minutes on 0.0.0.0. Here every connection
 * that completes its Noise handshake is used at once and duplicates are kept (a peer may have two
 * live channels; the newest is used), so a simultaneous dial costs one idle connection, not a wait.
 *
 * Discovery: the first announce both stores this node's record and returns the peers already
 * there; lookups follow at STARTUP_LOOKUP_MS (peers that announced a moment later), then every
 * LOOKUP_MS; the record is renewed every ANNOUNCE_MS (records expire after ~20 min). A failed dial
 * backs off per key; a peer found again while not live is dialled again, so a restarted node is
 * rejoined by its own dials at start and by the others' next lookup.
 */
import * as dgram from 'node:dgram';
import { EventEmitter } from 'node:events';
import HyperDHT, { DhtServer, KeyPair, PeerRecord, SecretStream } from 'hyperdht';
import { logger } from '../util/log';
import { HandshakeError, PeerChannel, RequestHandler, ServeLimiter } from './channel';
import type { P2PConfig } from './config';
import { clusterTopic, sessionProof } from './identity';
import type { P2PMetrics } from './metrics';

const log = logger('p2p');
const STARTUP_LOOKUP_MS = [100, 250, 500, 1000, 2000, 4000, 8000];
const LOOKUP_MS = 15_000;
const ANNOUNCE_MS = 5 * 60_000;
const MAX_PARALLEL_DIALS = 16;
const DIAL_BACKOFF_MS = [250, 500, 1000, 2000, 5000, 10_000];
/** Bound on the unannounce at close: a node leaving must not hang on an unreachable DHT. */
const UNANNOUNCE_MS = 2000;

export interface MembershipOptions {
  keyPair: KeyPair;
  handler: RequestHandler;
  limiter: ServeLimiter;
  metrics: P2PMetrics;
}

interface Known { relayAddresses: PeerRecord['relayAddresses']; failures: number; nextDialAt: number }

/** Emits `peer-up` / `peer-down` with the hex public key. */
export class Membership extends EventEmitter {
  readonly publicKey: string;
  private dht!: HyperDHT;
  private server!: DhtServer;
  private readonly topic: Buffer;
  private readonly allow: Set<string>;
  /** Live channels per peer, in the order they became live. */
  private readonly channels = new Map<string, PeerChannel[]>();
  /** Connections per peer, live or handshaking (dials in flight included). */
  private readonly sockets = new Map<string, Set<SecretStream>>();
  private readonly dialing = new Set<string>();
  /** Dials not yet open, destroyed on close. */
  private readonly dials = new Set<SecretStream>();
  private readonly known = new Map<string, Known>();
  private timer?: NodeJS.Timeout;
  private lastAnnounce = 0;
  private discovering?: Promise<void>;
  private closed = false;

  constructor(private readonly cfg: P2PConfig, private readonly opts: MembershipOptions) {
    super();
    this.publicKey = opts.keyPair.publicKey.toString('hex');
    this.allow = new Set(cfg.allow);
    this.topic = clusterTopic(cfg.clusterSecret);
  }

  /**
   * Binds the DHT socket (on `host`, by default the local address facing the first bootstrap node),
   * listens on this node's key and announces the topic, dialling the peers already there.
   */
  async start(): Promise<void> {
    const host = this.cfg.host ?? await localAddressToward(this.cfg.bootstrap[0]);
    this.dht = new HyperDHT({ bootstrap: this.cfg.bootstrap, host });
    this.server = this.dht.createServer({
      firewall: (remote) => {
        const refuse = this.closed || !this.allowed(remote.toString('hex'));
        if (refuse && !this.closed) {
          this.opts.metrics.refusedBy.allowlist++;
          log.warn({ peer: short(remote.toString('hex')) }, 'refused a peer outside the allowlist');
        }
        return refuse;
      },
    }, (socket) => this.onConnection(socket));
    if (this.closed) return;
    await this.server.listen(this.opts.keyPair);
    await this.discover(true);
    this.schedule(0);
  }

  private schedule(round: number): void {
    if (this.closed) return;
    const delay = round < STARTUP_LOOKUP_MS.length ? STARTUP_LOOKUP_MS[round] : LOOKUP_MS;
    this.timer = setTimeout(() => void this.refresh().finally(() => this.schedule(round + 1)), delay);
    this.timer.unref();
  }

  /** Looks the topic up now and dials new or lost peers (renewing the announce when it is due). */
  refresh(): Promise<void> {
    if (this.closed) return Promise.resolve();
    return this.discover(Date.now() - this.lastAnnounce >= ANNOUNCE_MS);
  }

  /** One announce or lookup query at a time; a caller during one waits for it. */
  private discover(announce: boolean): Promise<void> {
    if (!this.discovering) {
      this.discovering = this.query(announce).finally(() => (this.discovering = undefined));
    }
    return this.discovering;
  }

  private async query(announce: boolean): Promise<void> {
    const q = announce
      ? this.dht.announce(this.topic, this.opts.keyPair, this.server.relayAddresses, { clear: this.lastAnnounce === 0 })
      : this.dht.lookup(this.topic);
    try {
      for await (const data of q) for (const peer of data.peers) this.found(peer);
      if (announce) this.lastAnnounce = Date.now();
    } catch (e) {
      if (!this.closed) log.warn({ err: (e as Error).message }, announce ? 'announce failed' : 'lookup failed');
    }
  }

  private allowed(key: string): boolean {
    return this.allow.size === 0 || this.allow.has(key);
  }

  /** A peer's record turned up in the DHT: dial it unless it is live, being dialled or backing off. */
  private found(peer: PeerRecord): void {
    const key = peer.publicKey.toString('hex');
    if (this.closed || key === this.publicKey || !this.allowed(key)) return;
    const k = this.known.get(key) ?? { relayAddresses: peer.relayAddresses, failures: 0, nextDialAt: 0 };
    k.relayAddresses = peer.relayAddresses;
    this.known.set(key, k);
    if (this.channels.has(key) || this.dialing.has(key) || Date.now() < k.nextDialAt) return;
    if (this.dialing.size >= MAX_PARALLEL_DIALS || this.channels.size + this.dialing.size >= this.cfg.maxPeers) return;
    this.dial(key, k);
  }

  private dial(key: string, k: Known): void {
    this.dialing.add(key);
    const socket = this.dht.connect(Buffer.from(key, 'hex'), { keyPair: this.opts.keyPair, relayAddresses: k.relayAddresses });
    let opened = false;
    this.dials.add(socket);
    socket.on('error', (e: Error) => log.debug({ peer: short(key), err: e.message }, 'dial failed'));
    socket.once('open', () => {
      opened = true;
      this.dials.delete(socket);
      this.dialing.delete(key);
      this.onConnection(socket);
    });
    socket.once('close', () => {
      if (opened) return;
      this.dials.delete(socket);
      this.dialing.delete(key);
      k.nextDialAt = Date.now() + DIAL_BACKOFF_MS[Math.min(k.failures, DIAL_BACKOFF_MS.length - 1)];
      k.failures++;
    });
  }

  /** Live peers (hex public key -> channel in use). */
  livePeers(): Map<string, PeerChannel> {
    const out = new Map<string, PeerChannel>();
    for (const [k, list] of this.channels) if (list.length) out.set(k, list[list.length - 1]);
    return out;
  }

  /** Resolves once at least `n` peers are live; rejects after `timeoutMs`. */
  async waitForPeers(n: number, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.livePeers().size < n) {
      if (Date.now() > deadline) throw new Error(`p2p: only ${this.livePeers().size} of ${n} peers after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Leaves: withdraws the announce (bounded), closes every connection and the DHT node. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    if (!this.dht) return;
    if (this.lastAnnounce > 0) {
      let t: NodeJS.Timeout | undefined;
      await Promise.race([
        this.dht.unannounce(this.topic, this.opts.keyPair).catch(() => undefined),
        new Promise((r) => (t = setTimeout(r, UNANNOUNCE_MS))),
      ]);
      clearTimeout(t);
    }
    for (const s of this.dials) s.destroy();
    for (const set of this.sockets.values()) for (const s of set) s.destroy();
    await this.server.close().catch(() => undefined);
    await this.dht.destroy();
  }

  private onConnection(socket: SecretStream): void {
    socket.on('error', (e: Error) => log.debug({ err: e.message }, 'peer socket error'));
    const remote = socket.remotePublicKey.toString('hex');
    if (this.closed || !this.allowed(remote)) {
      if (!this.closed) this.opts.metrics.refusedBy.allowlist++;
      socket.destroy();
      return;
    }
    const set = this.sockets.get(remote) ?? new Set();
    set.add(socket);
    this.sockets.set(remote, set);
    const ch = new PeerChannel(socket, {
      peer: short(remote),
      maxInflight: this.cfg.maxInflightPerPeer,
      isInitiator: socket.isInitiator,
      helloTimeoutMs: this.cfg.helloTimeoutMs,
      proofToSend: sessionProof(this.cfg.clusterSecret, socket.handshakeHash, socket.isInitiator),
      proofExpected: sessionProof(this.cfg.clusterSecret, socket.handshakeHash, !socket.isInitiator),
      handler: this.opts.handler,
      limiter: this.opts.limiter,
    });
    ch.ready.then(
      () => {
        if (ch.closed) return;
        const list = this.channels.get(remote) ?? [];
        const wasLive = list.length > 0;
        this.channels.set(remote, [...list, ch]);
        const k = this.known.get(remote);
        if (k) k.failures = 0;
        this.opts.metrics.peers = this.channels.size;
        if (!wasLive) {
          log.info({ peer: short(remote) }, 'peer up');
          this.emit('peer-up', remote);
        }
      },
      () => {
        if (!(ch.closeError instanceof HandshakeError)) return; // closed before HELLO (peer left, node closing)
        this.opts.metrics.refusedBy[ch.closeError.reason]++;
        log.warn({ peer: short(remote), reason: ch.closeError.reason, err: ch.closeError.message }, 'refused a peer');
      },
    );
    ch.on('close', () => {
      set.delete(socket);
      if (!set.size) this.sockets.delete(remote);
      const list = (this.channels.get(remote) ?? []).filter((c) => c !== ch);
      if (list.length) this.channels.set(remote, list);
      else if (this.channels.delete(remote)) {
        log.info({ peer: short(remote) }, 'peer down');
        this.emit('peer-down', remote);
      }
      this.opts.metrics.peers = this.channels.size;
    });
  }
}

/**
 * The local IPv4 address the kernel would send from to reach `to` (a UDP connect sends nothing).
 * A DHT socket bound to 0.0.0.0 makes hyperdht route connections over per-connection holepunch
 * sockets that, between nodes of one host or subnet, open on the dialling side and never reach the
 * other: the mesh does not form. Binding the address that faces the cluster avoids that.
 */
export function localAddressToward(to: { host: string; port: number }): Promise<string | undefined> {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    let settled = false;
    const done = (addr?: string) => {
      if (settled) return;
      settled = true;
      s.close();
      if (!addr) log.warn({ bootstrap: `${to.host}:${to.port}` }, 'no route to the bootstrap node; the DHT binds 0.0.0.0');
      resolve(addr);
    };
    s.once('error', () => done());
    try {
      s.connect(to.port, to.host, () => done(s.address().address));
    } catch {
      done();
    }
  });
}

export function short(hexKey: string): string {
  return hexKey.slice(0, 12);
}
