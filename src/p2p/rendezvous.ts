/**
 * Rendezvous (highest-random-weight) hashing: the owner of a key among a set of nodes is the node
 * whose sha256(key | nodeKey) is largest. Every node computes the same owner from the same member
 * set, and when a node leaves only the keys it owned move (each to its own runner-up).
 */
import { createHash } from 'node:crypto';

function weight(key: string, node: string): Buffer {
  return createHash('sha256').update(key).update('\0').update(node).digest();
}

/** Nodes ordered from owner to last resort for `key`; `nodes` are hex public keys. */
export function rankNodes(key: string, nodes: Iterable<string>): string[] {
  return [...nodes]
    .map((n) => ({ n, w: weight(key, n) }))
    .sort((a, b) => Buffer.compare(b.w, a.w) || (a.n < b.n ? -1 : 1))
    .map((x) => x.n);
}

export function ownerOf(key: string, nodes: Iterable<string>): string | undefined {
  let best: { n: string; w: Buffer } | undefined;
  for (const n of nodes) {
    const w = weight(key, n);
    if (!best || Buffer.compare(w, best.w) > 0) best = { n, w };
  }
  return best?.n;
}
