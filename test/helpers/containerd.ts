/**
 * A private containerd for tests (own root, state, sockets and config in a temp dir; the proxy
 * snapshotter pointed at our socket). The implementation lives in src/ so the demo and the
 * benchmarks, which are compiled from src/, use the same code.
 *
 *   const ctd = await startContainerd({ snapshotterSocket: sock });
 *   await ctd.ctr(['images', 'pull', '--plain-http', '--snapshotter', 'nydus', ref]);
 *   await ctd.stop();
 */
export { CRI_NAMESPACE, killPids, processesUnder, recordedDaemons, startContainerd, unmountBelow } from '../../src/snapshotter/private-containerd';
export type { CommandResult, Containerd, ContainerdOptions } from '../../src/snapshotter/private-containerd';
