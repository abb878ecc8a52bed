/** Platform strings (`linux/amd64`, `linux/arm64/v8`) and choosing a manifest out of an index. */
import type { Descriptor, Platform } from './media';

export const DEFAULT_PLATFORM = 'linux/amd64';

export function parsePlatform(s: string): Platform {
  const parts = s.split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => !p)) {
    throw new Error(`invalid platform "${s}": expected os/arch[/variant]`);
  }
  return { os: parts[0], architecture: parts[1], variant: parts[2] };
}

export function formatPlatform(p: Platform): string {
  return [p.os, p.architecture, p.variant].filter(Boolean).join('/');
}

/** arm64 images usually omit the variant v8; treat them as equal. */
function variantMatches(want: Platform, have: Platform): boolean {
  if (!want.variant) return true;
  if (want.variant === have.variant) return true;
  return want.architecture === 'arm64' && want.variant === 'v8' && !have.variant;
}

/** The index entry for `want`, or undefined. Entries without a platform never match. */
export function choosePlatform(manifests: Descriptor[], want: Platform): Descriptor | undefined {
  return manifests.find((m) => m.platform && m.platform.os === want.os && m.platform.architecture === want.architecture && variantMatches(want, m.platform));
}
