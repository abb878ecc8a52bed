/** nydusify as a library: convert an image in a registry to nydus, and check the result. */
export { convertImage, ConvertOptions, ConvertResult, ConvertedImage, ConvertedLayer, ConvertMetric, parsePrefetchPatterns } from './convert';
export { checkImage, CheckOptions, CheckResult } from './check';
export { ImageEndpoint } from './endpoint';
export { ProgressEvent, ProgressFn, logProgress, barProgress } from './progress';
export * from './nydus-manifest';
export { packBootstrap, unpackBootstrap } from './bootstrap-layer';
