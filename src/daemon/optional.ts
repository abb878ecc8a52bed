/**
 * Modules only some daemons need, loaded on first use: the peer swarm (hyperdht, ~16 MB of RSS),
 * mirrors and the proxy (undici, ~20 MB) and the certs.d watcher (chokidar, ~8 MB). A localfs-only
 * shared daemon never loads them.
 *
 * Contract: `loaded*()` never loads anything; it returns the module only if this daemon loaded it
 * through the matching getter. Every source the daemon builds goes through these getters, so when
 * one answers undefined no object of that module's classes can be among the daemon's sources.
 */
type Hub = typeof import('../p2p/hub');
type MirrorSetModule = typeof import('../fetch/mirror-set');
type ProxyModule = typeof import('../fetch/proxy');
type WatcherModule = typeof import('../mirrors/watcher');

let hub: Hub | undefined;
let mirrorSet: MirrorSetModule | undefined;
let proxy: ProxyModule | undefined;

export function p2pHub(): Hub {
  return (hub ??= require('../p2p/hub') as Hub);
}

export function loadedP2pHub(): Hub | undefined {
  return hub;
}

export function mirrorSetModule(): MirrorSetModule {
  return (mirrorSet ??= require('../fetch/mirror-set') as MirrorSetModule);
}

export function loadedMirrorSet(): MirrorSetModule | undefined {
  return mirrorSet;
}

export function proxyModule(): ProxyModule {
  return (proxy ??= require('../fetch/proxy') as ProxyModule);
}

export function loadedProxy(): ProxyModule | undefined {
  return proxy;
}

export function watcherModule(): WatcherModule {
  return require('../mirrors/watcher') as WatcherModule;
}
