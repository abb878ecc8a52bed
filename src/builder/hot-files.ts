/**
 * Which files of a layer are "hot": named by a prefetch pattern, or below a directory one names
 * (upstream's builder/src/core/prefetch.rs `Prefetch::insert` matches a path or any ancestor).
 * Their chunks go to the head of the blob, ahead of the rest, so the prefetch list is one
 * contiguous range that the daemon fetches in a few large requests.
 *
 * `null` when nothing needs reordering: no patterns, or `/` among them (everything is hot).
 */
import { entryComponents } from './paths';

export type HotMatcher = (parts: readonly string[]) => boolean;

export function hotMatcher(patterns: readonly string[] | undefined): HotMatcher | null {
  if (!patterns?.length) return null;
  const set = new Set<string>();
  for (const p of patterns) {
    const parts = entryComponents(p.replace(/^\/+/, '') || '.', `prefetch path '${p}'`);
    if (parts.length === 0) return null;
    set.add(parts.join('/'));
  }
  return (parts) => {
    let key = '';
    for (const part of parts) {
      key = key ? `${key}/${part}` : part;
      if (set.has(key)) return true;
    }
    return false;
  };
}
