/**
 * The slice of the holepunch packages (hyperdht and its testnet) that src/p2p uses.
 * They ship no TypeScript types; these declarations follow their README/index.js.
 */
declare module 'hyperdht' {
  import { EventEmitter } from 'node:events';
  import { Duplex } from 'node:stream';
  export interface KeyPair { publicKey: Buffer; secretKey: Buffer }
  export interface HostPort { host: string; port: number }
  /** A NoiseSecretStream: an encrypted Duplex to one peer, emits 'open' once connected. */
  export interface SecretStream extends Duplex {
    remotePublicKey: Buffer;
    publicKey: Buffer;
    handshakeHash: Buffer;
    isInitiator: boolean;
  }
  /** One announce record found by a lookup. */
  export interface PeerRecord { publicKey: Buffer; relayAddresses: HostPort[] }
  /** A DHT query: async-iterable replies, each with the records the replying node holds. */
  export interface Query extends AsyncIterable<{ peers: PeerRecord[] }> {
    finished(): Promise<void>;
  }
  export interface DhtServer extends EventEmitter {
    relayAddresses: HostPort[];
    listen(keyPair: KeyPair): Promise<void>;
    close(): Promise<void>;
  }
  export default class HyperDHT extends EventEmitter {
    constructor(opts?: { bootstrap?: (string | HostPort)[]; host?: string; port?: number; ephemeral?: boolean; firewalled?: boolean });
    static keyPair(seed?: Buffer): KeyPair;
    static bootstrapper(port: number, host: string, opts?: object): HyperDHT;
    createServer(opts: { firewall?: (remotePublicKey: Buffer, payload: unknown) => boolean }, onconnection: (s: SecretStream) => void): DhtServer;
    connect(remotePublicKey: Buffer, opts?: { keyPair?: KeyPair; relayAddresses?: HostPort[] }): SecretStream;
    announce(topic: Buffer, keyPair: KeyPair, relayAddresses?: HostPort[], opts?: { clear?: boolean }): Query;
    unannounce(topic: Buffer, keyPair: KeyPair): Promise<void>;
    lookup(topic: Buffer): Query;
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
