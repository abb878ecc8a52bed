/** The builder's public API: build a layer, merge layers, unpack, check and inspect bootstraps. */
export { createLayer } from './create';
export type { CreateOptions, CreateResult, LayerSource } from './options';
export { DEFAULT_CHUNK_SIZE } from './options';
export { mergeLayers, mergeBootstraps } from './merge';
export type { MergeOptions } from './merge';
export { unpackToTar } from './unpack';
export { checkBootstrap, inspectBootstrap } from './check';
export { loadBootstrap } from './load';
export type { CheckReport, InspectReport, TreeEntry } from './check';
export { BuildError } from './errors';
export { TarWriter } from './tar-writer';
export type { TarHeader, TarType } from './tar-writer';
