/**
 * Which files of a layer are "hot", and in what order: a file named by a prefetch pattern, or below
 * a directory one names, takes that pattern's position in the list as its rank (upstream's
 * builder/src/core/prefetch.rs `Prefetch::insert`: the path itself, then each parent, the first
 * match wins). Hot chunks go to the head of the blob in rank order (files of one rank in source
 * order), ahead of the rest, so the prefetch list is one contiguous range in the order the
 * workload read it, which the daemon fetches in a few large requests.
 *
 * `null` when nothing needs reordering: no patterns, or `/` among them (everything is hot).
 */
import { entryComponents } from './paths';

/** The rank of a file (by its path components under the root), or -1 when it is not hot. */
export type HotMatcher = (parts: readonly string[]) => number;

export function hotMatcher(patterns: readonly string[] | undefined): HotMatcher | null {
  if (!patterns?.length) return null;
  const rank = new Map<string, number>();
  for (const [i, p] of patterns.entries()) {
    const parts = entryComponents(p.replace(/^\/+/, '') || '.', `prefetch path '${p}'`);
    if (parts.length === 0) return null;
    const key = parts.join('/');
    if (!rank.has(key)) rank.set(key, i);
  }
  return (parts) => {
    for (let n = parts.length; n > 0; n--) {
      const r = rank.get(parts.slice(0, n).join('/'));
      if (r !== undefined) return r;
    }
    return -1;
  };
}
