/**
 * `ImageClient`: the HTTP API of client-types.ts from Node (the CLI, scripts, tests), over undici.
 *
 * ```ts
 * const client = new ImageClient({ server: 'http://127.0.0.1:8080', token: process.env.API_TOKEN });
 * const { result } = await client.apply(manifest);          // 'created' | 'configured' | 'unchanged'
 * for await (const ev of client.watch('ClusterVirtualImage', { signal })) console.log(ev.type);
 * ```
 *
 * Every failure is an {@link ApiError} with the HTTP status (0 when the server could not be reached), the
 * server's error code and issues, and a message a person can read as is. `get`/`delete` answer null for an
 * object that does not exist. `watch` parses the server-sent events, reconnects after a dropped connection
 * (resuming with `Last-Event-ID`, or listing again when that position has expired) and ends when its signal
 * aborts.
 */
import { networkReason } from './network-reason.ts';
import { setTimeout as sleep } from 'node:timers/promises';
import { request, type Dispatcher } from 'undici';
import type { ApplyResult, Image, ImageKind, WatchEvent } from '../images/index.ts';
import { PLURAL, type ApiErrorBody, type ImageClientApi, type WatchClientOptions } from './client-types.ts';

export interface ImageClientOptions {
  /** Base URL of the API, e.g. `http://127.0.0.1:8080`. */
  server: string;
  /** Bearer token (API_TOKEN, or API_READ_TOKEN for reading). */
  token?: string | undefined;
  /** undici dispatcher (connection pool, TLS options); default undici's global one. */
  dispatcher?: Dispatcher;
  /** Time allowed for a response (headers, and between body bytes). Default 30 s. */
  timeoutMs?: number;
  /** A watch that receives nothing (not even a heartbeat) this long reconnects. Default 45 s (3 heartbeats). */
  watchIdleTimeoutMs?: number;
  /** How long a watch keeps trying to reconnect after losing its connection. Default 60 s. */
  watchReconnectWindowMs?: number;
}

export type ApiIssue = { path: string; message: string };

/** HTTP status of each error code (for ERROR events of a watch, which arrive inside a 200 stream). */
export const STATUS_OF_CODE: Readonly<Record<string, number>> = {
  BadRequest: 400,
  Unauthorized: 401,
  Forbidden: 403,
  NotFound: 404,
  NoRoute: 404,
  SpecFrozen: 409,
  Conflict: 409,
  Expired: 410,
  PayloadTooLarge: 413,
  UnsupportedMediaType: 415,
  Invalid: 422,
  Internal: 500,
  Unavailable: 503,
};

/** A failed API call. `status` 0: the server was not reached (code `Unreachable`) or answered nonsense. */
export class ApiError extends Error {
  override readonly name = 'ApiError';
  constructor(
    message: string,
    readonly status: number,
    readonly code: string,
    readonly issues: readonly ApiIssue[] = [],
  ) {
    super(message);
  }
}

export function isApiError(e: unknown): e is ApiError {
  return e instanceof ApiError;
}


interface SseMessage {
  event: string;
  data: string;
  id: string | undefined;
}

/**
 * Server-sent events from a byte stream (the WHATWG rules: `\n`, `\r\n` or `\r` line ends, `:` comments,
 * multi-line data joined with `\n`, an event dispatched on a blank line when it has data).
 */
export async function* parseSse(body: AsyncIterable<Uint8Array | string>): AsyncGenerator<SseMessage, void, undefined> {
  const decoder = new TextDecoder('utf-8');
  let buf = '';
  let event = '';
  let data: string[] = [];
  let id: string | undefined;
  let first = true;

  /** Complete lines of `buf`; at the end of the stream a trailing '\r' ends its line too. */
  function* lines(final: boolean): Generator<string> {
    for (;;) {
      const nl = buf.search(/[\r\n]/);
      if (nl < 0) return;
      // A '\r' at the very end may be the first half of '\r\n': wait for the next chunk.
      if (buf[nl] === '\r' && nl === buf.length - 1 && !final) return;
      const line = buf.slice(0, nl);
      buf = buf.slice(buf[nl] === '\r' && buf[nl + 1] === '\n' ? nl + 2 : nl + 1);
      yield line;
    }
  }

  function* feed(final: boolean): Generator<SseMessage> {
    if (first && buf.length > 0) {
      if (buf.charCodeAt(0) === 0xfeff) buf = buf.slice(1);
      first = false;
    }
    for (const line of lines(final)) {
      if (line === '') {
        if (data.length > 0) yield { event: event || 'message', data: data.join('\n'), id };
        event = '';
        data = [];
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') event = value;
      else if (field === 'data') data.push(value);
      else if (field === 'id' && !value.includes('\0')) id = value;
    }
  }

  for await (const chunk of body) {
    buf += typeof chunk === 'string' ? chunk : decoder.decode(chunk, { stream: true });
    yield* feed(false);
  }
  buf += decoder.decode();
  yield* feed(true);
}

export class ImageClient implements ImageClientApi {
  readonly server: string;
  private readonly token: string | undefined;
  private readonly dispatcher: Dispatcher | undefined;
  private readonly timeoutMs: number;
  private readonly watchIdleTimeoutMs: number;
  private readonly watchReconnectWindowMs: number;

  constructor(opts: ImageClientOptions) {
    let url: URL;
    try {
      url = new URL(opts.server);
    } catch {
      throw new ApiError(`"${opts.server}" is not a server URL like http://127.0.0.1:8080 (set --server or DVCR_IMPORTER_SERVER)`, 0, 'BadServer');
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new ApiError(`"${opts.server}" is not an http:// or https:// URL (set --server or DVCR_IMPORTER_SERVER)`, 0, 'BadServer');
    }
    this.server = url.href.replace(/\/+$/, '');
    this.token = opts.token || undefined;
    this.dispatcher = opts.dispatcher;
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    this.watchIdleTimeoutMs = opts.watchIdleTimeoutMs ?? 45_000;
    this.watchReconnectWindowMs = opts.watchReconnectWindowMs ?? 60_000;
  }

  // -- the contract

  async apply(manifest: unknown, opts: { namespace?: string } = {}): Promise<ApplyResult> {
    const res = await this.call('POST', '/apis/v1/images', {
      query: opts.namespace ? { namespace: opts.namespace } : {},
      body: JSON.stringify(manifest),
    });
    return this.json<ApplyResult>(res, [200, 201]);
  }

  async get(kind: ImageKind, name: string, namespace?: string): Promise<Image | null> {
    const res = await this.call('GET', itemPath(kind, name, namespace));
    return this.json<Image>(res, [200], { nullOn404: true });
  }

  async list(kind: ImageKind, namespace?: string): Promise<Image[]> {
    const res = await this.call('GET', collectionPath(kind, namespace));
    const body = await this.json<{ items?: Image[] }>(res, [200]);
    return Array.isArray(body?.items) ? body.items : [];
  }

  async delete(kind: ImageKind, name: string, namespace?: string): Promise<Image | null> {
    const res = await this.call('DELETE', itemPath(kind, name, namespace));
    return this.json<Image>(res, [200, 202], { nullOn404: true });
  }

  async *watch(kind: ImageKind, opts: WatchClientOptions = {}): AsyncGenerator<WatchEvent, void, undefined> {
    const { signal } = opts;
    const path = collectionPath(kind, opts.namespace);
    const query: Record<string, string> = { watch: 'true', ...(opts.name ? { name: opts.name } : {}) };
    let lastId = opts.sinceId;
    /** lastId came from this watch (so an expired position means: list again), not from the caller. */
    let ownPosition = false;
    let droppedAt: number | undefined;
    let failures = 0;

    for (;;) {
      if (signal?.aborted) return;
      let res: Dispatcher.ResponseData;
      try {
        res = await this.call('GET', path, {
          query,
          headers: { accept: 'text/event-stream', ...(lastId ? { 'last-event-id': lastId } : {}) },
          signal,
          bodyTimeoutMs: this.watchIdleTimeoutMs,
        });
        if (res.statusCode !== 200) {
          await this.json(res, [200]); // throws the server's error
        }
      } catch (e) {
        if (signal?.aborted) return;
        const retryable = e instanceof ApiError && (e.status === 0 || e.status === 503);
        if (retryable && droppedAt !== undefined && Date.now() - droppedAt < this.watchReconnectWindowMs) {
          await pause(backoff(failures++), signal);
          continue;
        }
        throw e;
      }

      droppedAt = undefined;
      failures = 0;
      let expired = false;
      try {
        for await (const msg of parseSse(res.body)) {
          if (msg.event === 'ERROR') {
            const err = errorFromBody(parseJson(msg.data, this.server), 0, this.server);
            if (err.code === 'Expired' && ownPosition) {
              expired = true;
              break;
            }
            throw err;
          }
          const ev = parseJson(msg.data, this.server) as WatchEvent;
          if (msg.id) {
            lastId = msg.id;
            ownPosition = true;
          }
          yield ev;
        }
      } catch (e) {
        if (signal?.aborted) return;
        if (e instanceof ApiError) throw e;
        // The connection dropped (reset, idle timeout): reconnect below.
      } finally {
        res.body.destroy();
      }
      if (signal?.aborted) return;
      if (expired) {
        // Events after our position were trimmed: start over with a fresh list (ADDED for every object).
        lastId = undefined;
        ownPosition = false;
      }
      droppedAt = Date.now();
      await pause(backoff(failures++), signal);
    }
  }

  // -- plumbing

  private async call(
    method: 'GET' | 'POST' | 'DELETE',
    path: string,
    opts: {
      query?: Record<string, string>;
      body?: string;
      headers?: Record<string, string>;
      signal?: AbortSignal | undefined;
      bodyTimeoutMs?: number;
    } = {},
  ): Promise<Dispatcher.ResponseData> {
    const url = new URL(this.server + path);
    for (const [k, v] of Object.entries(opts.query ?? {})) url.searchParams.set(k, v);
    const headers: Record<string, string> = { accept: 'application/json', ...opts.headers };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    if (opts.body !== undefined) headers['content-type'] = 'application/json';
    try {
      return await request(url, {
        method,
        headers,
        ...(opts.body !== undefined ? { body: opts.body } : {}),
        ...(opts.signal ? { signal: opts.signal } : {}),
        ...(this.dispatcher ? { dispatcher: this.dispatcher } : {}),
        headersTimeout: this.timeoutMs,
        bodyTimeout: opts.bodyTimeoutMs ?? this.timeoutMs,
      });
    } catch (e) {
      if (opts.signal?.aborted) throw e;
      throw new ApiError(
        `cannot reach the dvcr-importer API at ${this.server} (${networkReason(e)}): is "dvcr-importer up" or "serve" ` +
          'running? set --server or DVCR_IMPORTER_SERVER',
        0,
        'Unreachable',
      );
    }
  }

  /** The JSON body of an expected status; null on 404 NotFound when asked; else the server's error. */
  private async json<T>(res: Dispatcher.ResponseData, ok: number[], opts: { nullOn404?: boolean } = {}): Promise<T> {
    let text: string;
    try {
      text = await res.body.text();
    } catch (e) {
      throw new ApiError(`the dvcr-importer API at ${this.server} broke off its answer (${networkReason(e)})`, 0, 'Unreachable');
    }
    if (ok.includes(res.statusCode)) return parseJson(text, this.server) as T;
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      body = undefined;
    }
    const err = errorFromBody(body, res.statusCode, this.server, text);
    if (opts.nullOn404 && res.statusCode === 404 && err.code === 'NotFound') return null as T;
    throw err;
  }
}

function parseJson(text: string, server: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError(`the dvcr-importer API at ${server} answered something that is not JSON: ${text.slice(0, 120)}`, 0, 'BadResponse');
  }
}

function errorFromBody(body: unknown, status: number, server: string, raw = ''): ApiError {
  const e = (body as Partial<ApiErrorBody> | undefined)?.error;
  if (e && typeof e.code === 'string' && typeof e.message === 'string') {
    const issues = Array.isArray(e.issues) ? e.issues.filter((i) => typeof i?.message === 'string') : [];
    return new ApiError(e.message, status || STATUS_OF_CODE[e.code] || 500, e.code, issues);
  }
  const snippet = raw.trim().slice(0, 200);
  return new ApiError(
    `HTTP ${status} from ${server}${snippet ? `: ${snippet}` : ''} (is this a dvcr-importer API?)`,
    status,
    `HTTP${status}`,
  );
}

function collectionPath(kind: ImageKind, namespace?: string): string {
  if (kind === 'ClusterVirtualImage') {
    if (namespace) throw new ApiError('a ClusterVirtualImage is cluster-scoped: do not give a namespace', 0, 'BadRequest');
    return `/apis/v1/${PLURAL.ClusterVirtualImage}`;
  }
  return namespace
    ? `/apis/v1/namespaces/${encodeURIComponent(namespace)}/${PLURAL.VirtualImage}`
    : `/apis/v1/${PLURAL.VirtualImage}`;
}

function itemPath(kind: ImageKind, name: string, namespace?: string): string {
  if (kind === 'VirtualImage' && !namespace) {
    throw new ApiError(`VirtualImage "${name}": a namespace is required`, 0, 'BadRequest');
  }
  return `${collectionPath(kind, namespace)}/${encodeURIComponent(name)}`;
}

function backoff(failures: number): number {
  const ceiling = Math.min(5000, 250 * 2 ** failures);
  return Math.round(ceiling * (0.5 + Math.random() / 2));
}

async function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  try {
    await sleep(ms, undefined, signal ? { signal } : {});
  } catch {
    /* aborted: the caller checks the signal */
  }
}
