/**
 * A watch as server-sent events (works with `curl -N`):
 *
 * ```
 * retry: 2000
 *
 * event: ADDED                       initial objects, without id
 * data: {"type":"ADDED","object":{...}}
 *
 * id: 1718000000000-0                the position the initial objects describe
 * event: BOOKMARK
 * data: {"type":"BOOKMARK","id":"1718000000000-0"}
 *
 * id: 1718000000123-0                live changes, each with its stream id
 * event: MODIFIED
 * data: {"type":"MODIFIED","object":{...},"id":"1718000000123-0"}
 *
 * : heartbeat                        a comment every 15 s, so proxies and clients see a live connection
 *
 * event: ERROR                       the watch cannot go on (e.g. code Expired: watch again without an id)
 * data: {"error":{"code":"Expired","message":"..."}}
 * ```
 *
 * Resume with the `Last-Event-ID` header (what EventSource sends on reconnect) or `?sinceId=`. The store's
 * blocking reader (one Redis connection per watch) is closed as soon as the client goes away, and every open
 * watch is ended when the server closes.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { ServerResponse } from 'node:http';
import type { ImageKind, WatchEvent, WatchOptions } from '../images/index.ts';
import { errorReply } from './routes-errors.ts';

export interface WatchSource {
  watch(kind: ImageKind, opts: WatchOptions): AsyncIterable<WatchEvent>;
}

export interface WatchStreamOptions {
  source: WatchSource;
  kind: ImageKind;
  namespace?: string | undefined;
  name?: string | undefined;
  sinceId?: string | undefined;
  heartbeatMs: number;
  /** Open watches of the server: each is aborted when the server closes. */
  open: Set<AbortController>;
}

/** One SSE frame. Data is JSON on one line (JSON.stringify never emits raw line breaks). */
export function sseFrame(event: string, data: unknown, id?: string): string {
  return `${id !== undefined ? `id: ${id}\n` : ''}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

function waitDrain(res: ServerResponse, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      res.off('drain', done);
      signal.removeEventListener('abort', done);
      resolve();
    };
    res.on('drain', done);
    signal.addEventListener('abort', done, { once: true });
  });
}

export async function streamWatch(request: FastifyRequest, reply: FastifyReply, opts: WatchStreamOptions): Promise<void> {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    // A stream is never followed by another response on its connection: close it with the stream, so a server
    // shutting down is not held by a connection that has just become idle.
    connection: 'close',
    'x-accel-buffering': 'no',
  });
  res.write('retry: 2000\n\n');

  const ac = new AbortController();
  opts.open.add(ac);
  const onClose = (): void => ac.abort();
  res.on('close', onClose);
  const heartbeat = setInterval(() => {
    if (!res.writableNeedDrain && !res.writableEnded) res.write(': heartbeat\n\n');
  }, opts.heartbeatMs);

  const started = Date.now();
  let sent = 0;
  const watchOpts: WatchOptions = { signal: ac.signal };
  if (opts.namespace !== undefined) watchOpts.namespace = opts.namespace;
  if (opts.name !== undefined) watchOpts.name = opts.name;
  if (opts.sinceId !== undefined) watchOpts.sinceId = opts.sinceId;

  try {
    for await (const ev of opts.source.watch(opts.kind, watchOpts)) {
      if (ac.signal.aborted) break;
      const frame = ev.type === 'BOOKMARK' ? sseFrame('BOOKMARK', ev, ev.id) : sseFrame(ev.type, ev, ev.id);
      sent++;
      if (!res.write(frame)) await waitDrain(res, ac.signal);
    }
  } catch (e) {
    if (!ac.signal.aborted) {
      const r = errorReply(e, String(request.id));
      if (r.internal) request.log.error({ err: e }, 'watch failed');
      else request.log.info({ code: r.body.error.code }, 'watch ended: %s', r.body.error.message);
      if (!res.writableEnded) res.write(sseFrame('ERROR', r.body));
    }
  } finally {
    clearInterval(heartbeat);
    opts.open.delete(ac);
    res.off('close', onClose);
    ac.abort();
    if (!res.writableEnded) res.end();
    request.log.info({ events: sent, durationMs: Date.now() - started }, 'watch closed');
  }
}
