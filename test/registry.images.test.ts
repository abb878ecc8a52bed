/** The cached test image layouts: layer counts and the upper layer's whiteouts, checked with umoci's output. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DEBIAN_2LAYER_CHANGES, imageLayout } from './helpers/images';

function manifestOf(layout: string): any {
  const index = JSON.parse(fs.readFileSync(path.join(layout, 'index.json'), 'utf8'));
  const d = index.manifests[0].digest.split(':')[1];
  return JSON.parse(fs.readFileSync(path.join(layout, 'blobs', 'sha256', d), 'utf8'));
}

describe('test image layouts', () => {
  test('busybox, debian and debian-2layer have 1, 1 and 2 gzip layers', async () => {
    for (const [name, n] of [['busybox', 1], ['debian', 1], ['debian-2layer', 2]] as const) {
      const m = manifestOf(await imageLayout(name));
      expect(m.layers).toHaveLength(n);
      for (const l of m.layers) expect(l.mediaType).toBe('application/vnd.oci.image.layer.v1.tar+gzip');
    }
    expect(DEBIAN_2LAYER_CHANGES.deleted.length).toBeGreaterThan(0);
  }, 15 * 60_000);
});
