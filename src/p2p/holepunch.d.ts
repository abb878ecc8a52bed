/**
 * The slice of the holepunch packages (hyperswarm, hyperdht and its testnet) that src/p2p uses.
 * They ship no TypeScript types; these declarations follow their README/index.js.
 */
declare module 'hyperdht' {
  import { EventEmitter } from 'node:events';
  export interface KeyPair { publicKey: Buffer; secretKey: Buffer }
  export interface HostPort { host: string; port: number }
  export default class HyperDHT extends EventEmitter {
    constructor(opts?: { bootstrap?: (string | HostPort)[]; host?: string; port?: number; ephemeral?: boolean; firewalled?: boolean });
    static keyPair(seed?: Buffer): KeyPair;
    static bootstrapper(port: number, host: string, opts?: object): HyperDHT;
    fullyBootstrapped(): Promise<void>;
    address(): { host: string; port: number };
    destroy(opts?: { force?: boolean }): Promise<void>;
  }
}

declare module 'hyperdht/testnet' {
  import HyperDHT, { HostPort } from 'hyperdht';
  interface Testnet {
    nodes: HyperDHT[];
    bootstrap: HostPort[];
    createNode(opts?: object): HyperDHT;
    destroy(): Promise<void>;
  }
  function createTestnet(size?: number, opts?: { host?: string; port?: number }): Promise<Testnet>;
  export = createTestnet;
}

declare module 'hyperswarm' {
  import { EventEmitter } from 'node:events';
  import { Duplex } from 'node:stream';
  import HyperDHT, { KeyPair } from 'hyperdht';
  /** A hyperdht NoiseSecretStream: an encrypted Duplex to one peer. */
  export interface SecretStream extends Duplex {
    remotePublicKey: Buffer;
    publicKey: Buffer;
    handshakeHash: Buffer;
    isInitiator: boolean;
  }
  export interface PeerInfo { publicKey: Buffer; ban(banned?: boolean): void }
  export interface PeerDiscovery {
    flushed(): Promise<void>;
    refresh(opts?: { client?: boolean; server?: boolean }): Promise<void>;
    destroy(): Promise<void>;
  }
  export default class Hyperswarm extends EventEmitter {
    constructor(opts?: {
      keyPair?: KeyPair; dht?: HyperDHT; maxPeers?: number; maxParallel?: number;
      firewall?: (remotePublicKey: Buffer, payload: unknown) => boolean;
      backoffs?: number[]; jitter?: number;
    });
    keyPair: KeyPair;
    connections: Set<SecretStream>;
    join(topic: Buffer, opts?: { server?: boolean; client?: boolean }): PeerDiscovery;
    leave(topic: Buffer): Promise<void>;
    flush(): Promise<void>;
    destroy(opts?: { force?: boolean }): Promise<void>;
    on(event: 'connection', fn: (socket: SecretStream, info: PeerInfo) => void): this;
    on(event: string, fn: (...args: any[]) => void): this;
  }
}
