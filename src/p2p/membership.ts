/**
 * Swarm membership: join the cluster topic on a DHT reached through the configured bootstrap
 * nodes, refuse keys outside the allowlist (hyperswarm firewall, both when dialling and when
 * accepted), run a PeerChannel on every connection and keep the set of live peers, i.e. those whose
 * HELLO proved the cluster secret.
 *
 * hyperswarm may deliver two connections for one peer (both sides dialled); state is keyed by the
 * remote public key and the newest live channel is the one used. Peers that join at the same
 * moment can miss each other's announce, so discovery is refreshed right after the first announce,
 * a few more times in the first seconds, and then periodically.
 */
import { EventEmitter } from 'node:events';
import HyperDHT, { KeyPair } from 'hyperdht';
import Hyperswarm, { PeerDiscovery, SecretStream } from 'hyperswarm';
import { logger } from '../util/log';
import { HandshakeError, PeerChannel, RequestHandler, ServeLimiter } from './channel';
import type { P2PConfig } from './config';
import { clusterTopic, sessionProof } from './identity';
import type { P2PMetrics } from './metrics';

const log = logger('p2p');
const REFRESH_MS = 15_000;
const STARTUP_REFRESH_MS = [500, 1000, 2000, 4000, 8000];
const MAX_PARALLEL_DIALS = 16;

export interface MembershipOptions {
  keyPair: KeyPair;
  handler: RequestHandler;
  limiter: ServeLimiter;
  metrics: P2PMetrics;
}

/** Emits `peer-up` / `peer-down` with the hex public key. */
export class Membership extends EventEmitter {
  readonly publicKey: string;
  private readonly dht: HyperDHT;
  private readonly swarm: Hyperswarm;
  private readonly channels = new Map<string, PeerChannel[]>();
  private discovery?: PeerDiscovery;
  private timer?: NodeJS.Timeout;
  private closed = false;

  constructor(private readonly cfg: P2PConfig, private readonly opts: MembershipOptions) {
    super();
    this.publicKey = opts.keyPair.publicKey.toString('hex');
    const allow = new Set(cfg.allow);
    this.dht = new HyperDHT({ bootstrap: cfg.bootstrap, host: cfg.host });
    this.swarm = new Hyperswarm({
      dht: this.dht,
      keyPair: opts.keyPair,
      maxPeers: cfg.maxPeers,
      // Announce records of crashed nodes live on in the DHT for a while; dialling more than
      // hyperswarm's default 3 at once keeps dead records from delaying the live peers.
      maxParallel: MAX_PARALLEL_DIALS,
      firewall: (remote) => {
        const refuse = allow.size > 0 && !allow.has(remote.toString('hex'));
        if (refuse) {
          opts.metrics.refusedBy.allowlist++;
          log.warn({ peer: short(remote.toString('hex')) }, 'refused a peer outside the allowlist');
        }
        return refuse;
      },
    });
    this.swarm.on('connection', (socket) => this.onConnection(socket, allow));
  }

  /** Joins the cluster topic and waits for the first announce. */
  async start(): Promise<void> {
    this.discovery = this.swarm.join(clusterTopic(this.cfg.clusterSecret), { server: true, client: true });
    await this.discovery.flushed();
    await this.refresh();
    this.scheduleRefresh(0);
  }

  /** Refreshes quickly while the cluster forms (nodes start together), then every REFRESH_MS. */
  private scheduleRefresh(round: number): void {
    if (this.closed) return;
    const delay = round < STARTUP_REFRESH_MS.length ? STARTUP_REFRESH_MS[round] : REFRESH_MS;
    this.timer = setTimeout(() => {
      void this.refresh().finally(() => this.scheduleRefresh(round + 1));
    }, delay);
    this.timer.unref();
  }

  /** Re-announces and looks the topic up again now (new members, healed partitions). */
  async refresh(): Promise<void> {
    if (this.closed || !this.discovery) return;
    await this.discovery.refresh({ client: true, server: true }).catch((e: Error) => log.warn({ err: e.message }, 'discovery refresh failed'));
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
    for (let i = 0; this.livePeers().size < n; i++) {
      if (Date.now() > deadline) throw new Error(`p2p: only ${this.livePeers().size} of ${n} peers after ${timeoutMs} ms`);
      if (i % 20 === 19) await this.refresh();
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    for (const list of this.channels.values()) for (const ch of [...list]) ch.close();
    await this.swarm.destroy();
  }

  private onConnection(socket: SecretStream, allow: Set<string>): void {
    socket.on('error', (e: Error) => log.debug({ err: e.message }, 'peer socket error'));
    const remote = socket.remotePublicKey.toString('hex');
    if (this.closed || (allow.size > 0 && !allow.has(remote))) {
      if (!this.closed) this.opts.metrics.refusedBy.allowlist++;
      socket.destroy();
      return;
    }
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
        this.opts.metrics.peers = this.livePeers().size;
        if (!wasLive) {
          log.info({ peer: short(remote) }, 'peer up');
          this.emit('peer-up', remote);
        }
      },
      () => {
        if (!(ch.closeError instanceof HandshakeError)) return; // duplicate connection or early close
        this.opts.metrics.refusedBy[ch.closeError.reason]++;
        log.warn({ peer: short(remote), reason: ch.closeError.reason, err: ch.closeError.message }, 'refused a peer');
      },
    );
    ch.on('close', () => {
      const list = (this.channels.get(remote) ?? []).filter((c) => c !== ch);
      if (list.length) this.channels.set(remote, list);
      else if (this.channels.delete(remote)) {
        log.info({ peer: short(remote) }, 'peer down');
        this.emit('peer-down', remote);
      }
      this.opts.metrics.peers = this.livePeers().size;
    });
  }
}

export function short(hexKey: string): string {
  return hexKey.slice(0, 12);
}
