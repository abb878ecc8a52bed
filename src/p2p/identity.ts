/**
 * Who this node is and how nodes of one cluster recognise each other:
 *  - the node key pair (Ed25519, from a 32-byte seed kept in `key_file` so the public key that
 *    other nodes put in their allowlist survives restarts; a fresh random seed without a file);
 *  - the cluster topic, sha256 of a label and the cluster secret (32 bytes, as DHT topics are);
 *  - the session proof each side sends in HELLO: HMAC-SHA256 keyed by the secret over the Noise
 *    handshake hash and the sender's role, so it proves knowledge of the secret for this very
 *    connection and cannot be replayed or reflected.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import HyperDHT, { KeyPair } from 'hyperdht';

export function clusterTopic(secret: string): Buffer {
  return createHash('sha256').update('nydus-ts/p2p/v1/topic\0').update(secret).digest();
}

export function sessionProof(secret: string, handshakeHash: Buffer, fromInitiator: boolean): Buffer {
  const key = createHash('sha256').update('nydus-ts/p2p/v1/auth\0').update(secret).digest();
  return createHmac('sha256', key).update(handshakeHash).update(Buffer.from([fromInitiator ? 1 : 0])).digest();
}

export function loadKeyPair(keyFile?: string): KeyPair {
  if (!keyFile) return HyperDHT.keyPair(randomBytes(32));
  let seed: Buffer;
  try {
    seed = fs.readFileSync(keyFile);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new Error(`p2p key_file ${keyFile}: ${(e as Error).message}`);
    seed = randomBytes(32);
    fs.mkdirSync(path.dirname(keyFile), { recursive: true });
    fs.writeFileSync(keyFile, seed, { mode: 0o600, flag: 'wx' });
  }
  if (seed.length !== 32) throw new Error(`p2p key_file ${keyFile}: expected a 32-byte seed, found ${seed.length} bytes`);
  return HyperDHT.keyPair(seed);
}
