/**
 * A small file server on a free loopback port (http, or https with a given key and certificate) for tests of the
 * HTTP source. Each path serves a file with switches (with or without Content-Length, Range support, ETag and
 * Last-Modified, slow bodies, stalls, dropped connections, a file that changes between requests), a redirect,
 * or a fixed status answer; every request is logged.
 *
 *   const srv = await startHttpServer();
 *   srv.file('/disk.img', { body, drop: { afterBytes: 1 << 20, times: 2 } });
 *   srv.redirect('/go', `${other.url}/disk.img`);
 *   srv.status('/busy', 503, { headers: { 'retry-after': '2' }, times: 1 });   // then falls through
 *   await srv.close();
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createServer as createHttpServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

export interface FileOptions {
  /** The file. An array is a file that changes: request k (0-based) gets `body[min(k, length - 1)]`. */
  body: Buffer | Buffer[];
  /** Send Content-Length (default true); without it the body is chunked. */
  contentLength?: boolean;
  /**
   * Announce this Content-Length on 200 answers instead of the real one; must be larger (a short body: the
   * connection is closed after the real bytes).
   */
  declaredLength?: number;
  /**
   * `true` (default): `Accept-Ranges: bytes`, Range and If-Range honoured (206 / 416). `false`: no Accept-Ranges,
   * Range ignored. `'ignore'`: Accept-Ranges advertised but every answer is a full 200.
   */
  ranges?: boolean | 'ignore';
  /** `true` (default): a strong ETag from the content's hash; a string: that ETag; `false`: none. */
  etag?: boolean | string;
  /** `true` (default): a fixed date per version; a string: that value; `false`: none. */
  lastModified?: boolean | string;
  /** Default `application/octet-stream`. */
  contentType?: string;
  contentDisposition?: string;
  /** Throttle the body to about this many bytes per second. */
  bytesPerSecond?: number;
  /** Wait this long before sending the answer's head (a server that accepts but does not answer). */
  headDelayMs?: number;
  /** Send `afterBytes` bytes of each answer's body, then nothing for `ms` (then the rest). */
  stall?: { afterBytes: number; ms: number };
  /** Destroy the connection after `afterBytes` bytes of the body, for `times` answers (default 1; Infinity: all). */
  drop?: { afterBytes: number; times?: number };
  /** 206 answers carry this many bytes more than their Content-Range says (sent chunked). */
  overrun?: number;
}

export interface StatusOptions {
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** Answer this way for the next `times` requests (default: always); afterwards the path's other route serves. */
  times?: number;
}

/** One request the server saw. */
export interface LoggedRequest {
  method: string;
  /** Path and query as sent. */
  url: string;
  /** Path without the query. */
  path: string;
  headers: IncomingHttpHeaders;
  range: string | undefined;
  ifRange: string | undefined;
  /** Status answered (0 until the head is sent). */
  status: number;
  /** Body bytes written. */
  bytesSent: number;
  /** The connection closed before the whole answer was sent (by the client, or a drop). */
  closedEarly: boolean;
  /** Resolves when the answer is finished or its connection closed. */
  done: Promise<void>;
}

export interface TestHttpServer {
  /** `http://127.0.0.1:PORT` (or https). */
  readonly url: string;
  readonly port: number;
  readonly requests: LoggedRequest[];
  requestsFor(path: string): LoggedRequest[];
  /** Serve a file at `path` (replaces what the path served; resets its request count). */
  file(path: string, opts: FileOptions): void;
  /** Answer `status` (default 302) with `Location: location`. */
  redirect(path: string, location: string, status?: number): void;
  /** Answer a fixed status, e.g. 404, 503 with Retry-After, or a 200 HTML page. */
  status(path: string, status: number, opts?: StatusOptions): void;
  /** Connections currently open. */
  openConnections(): number;
  /** Connections accepted since the start (a client refused before connecting adds none). */
  connectionsAccepted(): number;
  close(): Promise<void>;
}

type Route =
  | { kind: 'file'; opts: FileOptions; served: number; dropped: number }
  | { kind: 'redirect'; location: string; status: number }
  | { kind: 'status'; status: number; opts: StatusOptions };

interface Fault {
  status: number;
  opts: StatusOptions;
  remaining: number;
}

const CHUNK = 64 * 1024;

function versionOf(opts: FileOptions, k: number): { data: Buffer; index: number } {
  const versions = Array.isArray(opts.body) ? opts.body : [opts.body];
  const index = Math.min(k, versions.length - 1);
  return { data: versions[index]!, index };
}

function etagOf(opts: FileOptions, data: Buffer): string | undefined {
  if (opts.etag === false) return undefined;
  if (typeof opts.etag === 'string') return opts.etag;
  return `"${createHash('sha256').update(data).digest('hex').slice(0, 20)}"`;
}

function lastModifiedOf(opts: FileOptions, index: number): string | undefined {
  if (opts.lastModified === false) return undefined;
  if (typeof opts.lastModified === 'string') return opts.lastModified;
  return new Date(Date.UTC(2024, 0, 1 + index, 12)).toUTCString();
}

/** Resolves when `res` can take more, or when its connection is gone. */
function drained(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

/** Writes `data` with throttling, a stall, or a drop; ends the answer unless dropped. */
async function sendBody(
  res: ServerResponse,
  data: Buffer,
  log: LoggedRequest,
  o: { bytesPerSecond?: number; stall?: { afterBytes: number; ms: number }; dropAfter?: number; closeAtEnd?: boolean },
): Promise<void> {
  const size = o.bytesPerSecond ? Math.max(1, Math.floor(o.bytesPerSecond / 20)) : CHUNK;
  let sent = 0;
  let stalled = false;
  let lastFlushed: Promise<void> = Promise.resolve();
  res.flushHeaders();
  for (;;) {
    if (res.destroyed) return;
    if (o.stall && !stalled && sent >= o.stall.afterBytes) {
      stalled = true;
      await sleep(o.stall.ms);
      if (res.destroyed) return;
    }
    if (o.dropAfter !== undefined && sent >= o.dropAfter) {
      await lastFlushed;
      if (sent === 0) await sleep(20); // let the head reach the client first
      res.socket?.destroy();
      return;
    }
    if (sent >= data.length) break;
    let n = Math.min(size, data.length - sent);
    if (o.dropAfter !== undefined) n = Math.min(n, o.dropAfter - sent);
    if (o.stall && !stalled) n = Math.min(n, o.stall.afterBytes - sent);
    const chunk = data.subarray(sent, sent + n);
    sent += n;
    lastFlushed = new Promise<void>((resolve) => res.write(chunk, () => resolve()));
    log.bytesSent = sent;
    if (res.writableNeedDrain) await drained(res);
    if (o.bytesPerSecond) await sleep(Math.ceil((1000 * n) / o.bytesPerSecond));
  }
  if (o.closeAtEnd) {
    // A short body: the head promised more; close once the real bytes are out.
    await lastFlushed;
    res.socket?.destroy();
    return;
  }
  res.end();
}

function headerString(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v.join(', ') : v;
}

function parseRange(value: string | undefined): { start: number; end: number | undefined } | undefined {
  const m = value === undefined ? null : /^bytes=(\d+)-(\d*)$/.exec(value.trim());
  if (!m) return undefined;
  return { start: Number(m[1]), end: m[2] === '' ? undefined : Number(m[2]) };
}

async function serveFile(route: Extract<Route, { kind: 'file' }>, req: IncomingMessage, res: ServerResponse, log: LoggedRequest): Promise<void> {
  const o = route.opts;
  const { data, index } = versionOf(o, route.served++);
  const etag = etagOf(o, data);
  const lastModified = lastModifiedOf(o, index);
  const ranges = o.ranges ?? true;
  const headers: Record<string, string> = { 'content-type': o.contentType ?? 'application/octet-stream' };
  if (etag) headers.etag = etag;
  if (lastModified) headers['last-modified'] = lastModified;
  if (ranges !== false) headers['accept-ranges'] = 'bytes';
  if (o.contentDisposition) headers['content-disposition'] = o.contentDisposition;

  let status = 200;
  let body = data;
  let declared: number | undefined = o.contentLength === false ? undefined : (o.declaredLength ?? data.length);
  let closeAtEnd = o.declaredLength !== undefined && o.contentLength !== false && o.declaredLength > data.length;
  const range = ranges === true ? parseRange(req.headers.range) : undefined;
  const ifRange = headerString(req.headers['if-range']);
  const rangeValid = ifRange === undefined || ifRange === etag || (etag === undefined && ifRange === lastModified);
  if (range && rangeValid) {
    if (range.start >= data.length) {
      res.writeHead(416, { ...headers, 'content-range': `bytes */${data.length}` });
      log.status = 416;
      res.end();
      return;
    }
    const end = Math.min(range.end ?? data.length - 1, data.length - 1);
    status = 206;
    headers['content-range'] = `bytes ${range.start}-${end}/${data.length}`;
    body = data.subarray(range.start, end + 1);
    declared = o.contentLength === false || o.overrun ? undefined : body.length;
    closeAtEnd = false;
    if (o.overrun) body = Buffer.concat([body, Buffer.alloc(o.overrun, 0x55)]);
  }
  if (declared !== undefined) headers['content-length'] = String(declared);
  if (o.headDelayMs) {
    await sleep(o.headDelayMs);
    if (res.destroyed) return;
  }
  res.writeHead(status, headers);
  log.status = status;
  if (req.method === 'HEAD') {
    res.end();
    return;
  }
  const times = o.drop?.times ?? 1;
  const dropAfter = o.drop && route.dropped < times ? o.drop.afterBytes : undefined;
  if (dropAfter !== undefined) route.dropped++;
  await sendBody(res, body, log, { bytesPerSecond: o.bytesPerSecond, stall: o.stall, dropAfter, closeAtEnd });
}

export async function startHttpServer(opts: { tls?: { key: string; cert: string }; /** Default 127.0.0.1. */ host?: string } = {}): Promise<TestHttpServer> {
  const routes = new Map<string, Route>();
  const faults = new Map<string, Fault>();
  const requests: LoggedRequest[] = [];
  const sockets = new Set<Socket>();
  let accepted = 0;

  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const url = req.url ?? '/';
    const path = url.split('?')[0] ?? '/';
    let finish!: () => void;
    const log: LoggedRequest = {
      method: req.method ?? 'GET',
      url,
      path,
      headers: req.headers,
      range: req.headers.range,
      ifRange: headerString(req.headers['if-range']),
      status: 0,
      bytesSent: 0,
      closedEarly: false,
      done: new Promise<void>((resolve) => (finish = resolve)),
    };
    requests.push(log);
    res.on('close', () => {
      if (!res.writableFinished) log.closedEarly = true;
      finish();
    });
    const fault = faults.get(path);
    if (fault && fault.remaining > 0) {
      fault.remaining--;
      answerStatus(res, log, fault.status, fault.opts);
      return;
    }
    const route = routes.get(path);
    if (!route) {
      answerStatus(res, log, 404, { body: 'not found\n' });
      return;
    }
    if (route.kind === 'redirect') {
      res.writeHead(route.status, { location: route.location, 'content-length': '0' });
      log.status = route.status;
      res.end();
      return;
    }
    if (route.kind === 'status') {
      answerStatus(res, log, route.status, route.opts);
      return;
    }
    serveFile(route, req, res, log).catch(() => res.destroy());
  };

  const server: Server = opts.tls
    ? (createHttpsServer({ key: opts.tls.key, cert: opts.tls.cert }, handler) as unknown as Server)
    : createHttpServer(handler);
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    accepted++;
    s.on('close', () => sockets.delete(s));
  });
  // TLS handshakes that fail (a client refusing our certificate) must not crash the test process.
  server.on('tlsClientError', () => undefined);
  const host = opts.host ?? '127.0.0.1';
  server.listen(0, host);
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  const url = `${opts.tls ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${port}`;

  return {
    url,
    port,
    requests,
    requestsFor: (path) => requests.filter((r) => r.path === path),
    file(path, o) {
      routes.set(path, { kind: 'file', opts: o, served: 0, dropped: 0 });
    },
    redirect(path, location, status = 302) {
      routes.set(path, { kind: 'redirect', location, status });
    },
    status(path, status, o = {}) {
      if (o.times !== undefined) faults.set(path, { status, opts: o, remaining: o.times });
      else routes.set(path, { kind: 'status', status, opts: o });
    },
    openConnections: () => sockets.size,
    connectionsAccepted: () => accepted,
    async close() {
      for (const s of sockets) s.destroy();
      server.close();
      await once(server, 'close');
    },
  };
}

function answerStatus(res: ServerResponse, log: LoggedRequest, status: number, o: StatusOptions): void {
  const body = o.body === undefined ? Buffer.alloc(0) : Buffer.from(o.body);
  res.writeHead(status, { 'content-type': 'text/plain', ...o.headers, 'content-length': String(body.length) });
  log.status = status;
  res.end(body);
}
