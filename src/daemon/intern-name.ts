/**
 * Names of mounted images' entries, internalized: V8 keeps one copy of each in its weak string
 * table, so images mounted side by side (often layers of one distribution) share one copy of each
 * name instead of one per image.
 */

/** The internalized copy of `s`: property keys always are, and the string table does not keep them alive. */
export function internName(s: string): string {
  const o: Record<string, number> = {};
  o[s] = 0;
  for (const k in o) return k;
  return s;
}
