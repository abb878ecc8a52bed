/**
 * The pieces of undici this project's HTTP clients use (its `Agent` and `request`), loaded without
 * undici's package entry. That entry loads all of undici (fetch, WebSocket, mocks, caches: ~110
 * modules, and through its cookie code Node's own bundled copy of undici): 0.1 s of every command's
 * start, and of nydusd's first mount from a registry (the registry client, mirrors and proxy load on
 * first use). undici is pinned to an exact version (package.json) because these are its internal
 * paths; test/registry.client.test.ts and the mirror tests run them against real servers.
 *
 * Contract: `request(url, opts)` is undici's `request(url, { dispatcher, ... })`; `requestOn(dispatcher, opts)` is `dispatcher.request(opts)` (undici adds that method to
 * its dispatchers only from the package entry).
 */
import type { Agent as AgentType, Dispatcher } from 'undici';

/* eslint-disable @typescript-eslint/no-require-imports */
export const Agent = require('undici/lib/dispatcher/agent') as typeof AgentType;
export type Agent = AgentType;
const apiRequest = require('undici/lib/api/api-request') as (this: Dispatcher, opts: Dispatcher.RequestOptions) => Promise<Dispatcher.ResponseData>;
const { parseURL } = require('undici/lib/core/util') as { parseURL(url: string | URL): URL };
/* eslint-enable @typescript-eslint/no-require-imports */

/** Without a dispatcher, one shared Agent with undici's defaults (as undici's global dispatcher). */
export type RequestOptions = Omit<Dispatcher.RequestOptions, 'origin' | 'path' | 'method'> & { method?: Dispatcher.HttpMethod; dispatcher?: Dispatcher };

let shared: AgentType | undefined;

export function requestOn(dispatcher: Dispatcher, opts: Dispatcher.RequestOptions): Promise<Dispatcher.ResponseData> {
  return apiRequest.call(dispatcher, opts);
}

export function request(url: string | URL, opts: RequestOptions): Promise<Dispatcher.ResponseData> {
  const u = parseURL(url);
  const { dispatcher, ...rest } = opts;
  return apiRequest.call(dispatcher ?? (shared ??= new Agent()), { ...rest, method: rest.method ?? 'GET', origin: u.origin, path: u.search ? `${u.pathname}${u.search}` : u.pathname });
}
