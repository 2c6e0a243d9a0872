/**
 * A reverse proxy on loopback in front of a registry, with programmable faults, and a blob mirror that plays
 * the part of S3 presigned URLs. Both are real HTTP servers on free loopback ports.
 *
 * The proxy forwards every request as it came (method, target, all end-to-end headers including Host,
 * Authorization and Range; bodies streamed both ways with backpressure) and answers with the upstream's
 * status, headers and body unchanged. Because Host is kept, the registry builds its `Location` URLs with the
 * proxy's address, so upload sessions keep going through the proxy.
 */
import { Agent, createServer, request as httpRequest, type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { closeServer, listenOnLoopback } from './loopback.ts';

/** Answer with this status (and Retry-After / body) instead of forwarding. */
export interface StatusFault {
  status: number;
  retryAfter?: string;
  body?: string;
  headers?: Record<string, string>;
}
/** Forward the upstream response head and the first `resetAfterBytes` body bytes, then destroy the socket. */
export interface ResetFault {
  resetAfterBytes: number;
}
/** Answer 307 with `Location: redirectTo + <original path and query>`. */
export interface RedirectFault {
  redirectTo: string;
}
/**
 * Wait `stallMs`, then carry on forwarding: before contacting the upstream, or, with `afterBytes`, after
 * forwarding the response head and that many body bytes (a stalled download).
 */
export interface StallFault {
  stallMs: number;
  afterBytes?: number;
}
export type FaultAction = StatusFault | ResetFault | RedirectFault | StallFault;

/** Which requests a fault applies to, and how many of them. */
export interface FaultMatch {
  /** HTTP method; default any. */
  method?: string;
  /** Tested against the request target (path and query), e.g. `/\/blobs\/sha256:/`. */
  path: RegExp;
  /** The fault applies to the next `times` matching requests. Default 1. */
  times?: number;
}
export type FaultSpec = FaultMatch & FaultAction;

/** A fault that was added; `remaining` counts down as matching requests arrive. */
export interface FaultHandle {
  readonly spec: FaultSpec;
  readonly remaining: number;
  /** How many requests this fault has been applied to. */
  readonly hits: number;
}

export type FaultKind = 'status' | 'reset' | 'redirect' | 'stall';

/** One request the proxy (or the mirror) saw. */
export interface RecordedRequest {
  method: string;
  /** The request target, path and query as sent. */
  url: string;
  /** The path without the query. */
  path: string;
  headers: IncomingHttpHeaders;
  /** Whether an Authorization header was sent. */
  authorization: boolean;
  /** The Range header, if any. */
  range: string | undefined;
  /** The fault applied to this request, if any. */
  fault: FaultKind | undefined;
  /** Status answered to the client (0 until the head was sent). */
  readonly status: number;
}

export interface FaultProxy {
  /** `http://127.0.0.1:PORT`; use in place of the upstream URL. */
  readonly url: string;
  /** `127.0.0.1:PORT`, as used in image references. */
  readonly hostPort: string;
  readonly upstream: string;
  /** Every request, oldest first; tests may clear it with `requests.length = 0`. */
  readonly requests: RecordedRequest[];
  /** Adds a fault; the earliest added fault with requests remaining wins. */
  addFault(spec: FaultSpec): FaultHandle;
  /** Removes all faults. */
  clearFaults(): void;
  stop(): Promise<void>;
}

/** Connection-level headers that a proxy must not forward (RFC 9110 7.6.1). */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'upgrade',
]);

function endToEnd(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined && !HOP_BY_HOP.has(name)) out[name] = value;
  }
  return out;
}

function faultKind(spec: FaultAction): FaultKind {
  if ('status' in spec) return 'status';
  if ('resetAfterBytes' in spec) return 'reset';
  if ('redirectTo' in spec) return 'redirect';
  return 'stall';
}

/** A record of `req`; its `status` reads the answer's status once the head has been sent. */
function record(req: IncomingMessage, res: ServerResponse): RecordedRequest {
  const url = req.url ?? '/';
  const q = url.indexOf('?');
  const range = req.headers.range;
  return {
    method: req.method ?? '',
    url,
    path: q < 0 ? url : url.slice(0, q),
    headers: { ...req.headers },
    authorization: req.headers.authorization !== undefined,
    range: typeof range === 'string' ? range : undefined,
    fault: undefined,
    get status() {
      return res.headersSent ? res.statusCode : 0;
    },
  };
}

function plain(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body), ...headers });
  res.end(body);
}

/** What to do once `afterBytes` body bytes have been forwarded: destroy the client socket, or pause. */
type BodyLimit = { afterBytes: number; then: 'reset' } | { afterBytes: number; then: 'stall'; stallMs: number };

/** Writes `chunk` and waits until it was handed to the socket, or the response closed. */
function writeFlushed(res: ServerResponse, chunk: Buffer): Promise<void> {
  return new Promise((resolve) => {
    res.once('close', resolve);
    res.write(chunk, () => {
      res.off('close', resolve);
      resolve();
    });
  });
}

/** Writes `chunk`, waiting for `drain` (or close) when the client is slower than the upstream. */
function writeWithBackpressure(res: ServerResponse, chunk: Buffer): Promise<void> | undefined {
  if (res.write(chunk)) return undefined;
  return new Promise((resolve) => {
    const done = (): void => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.once('drain', done);
    res.once('close', done);
  });
}

/**
 * Streams the upstream answer to the client unchanged. With a limit, counts body bytes and at the limit
 * destroys the client connection (`reset`) or pauses for `stallMs` (`stall`) before going on.
 */
async function relayResponse(
  upstreamRes: IncomingMessage,
  res: ServerResponse,
  limit: BodyLimit | undefined,
  stopped: AbortSignal,
): Promise<void> {
  res.writeHead(upstreamRes.statusCode ?? 502, upstreamRes.statusMessage, endToEnd(upstreamRes.headers));
  if (!limit) {
    upstreamRes.pipe(res);
    return;
  }
  const cut = (): void => {
    upstreamRes.destroy();
    res.destroy();
  };
  let sent = 0;
  let reached = false;
  const atLimit = async (): Promise<boolean> => {
    reached = true;
    if (limit.then === 'reset') {
      if (sent === 0) res.flushHeaders();
      await writeFlushed(res, Buffer.alloc(0));
      cut();
      return true;
    }
    await sleep(limit.stallMs, undefined, { signal: stopped });
    return false;
  };
  try {
    if (limit.afterBytes === 0 && (await atLimit())) return;
    for await (const data of upstreamRes) {
      let chunk = data as Buffer;
      if (!reached && sent + chunk.length >= limit.afterBytes) {
        const head = chunk.subarray(0, limit.afterBytes - sent);
        await writeFlushed(res, head);
        sent += head.length;
        chunk = chunk.subarray(head.length);
        if (await atLimit()) return;
      }
      if (chunk.length === 0) continue;
      sent += chunk.length;
      await writeWithBackpressure(res, chunk);
    }
    // A body shorter than the limit: a reset still resets (the client must not see a clean end).
    if (!reached && limit.then === 'reset') return void cut();
    res.end();
  } catch {
    cut();
  }
}

/** Starts a fault-injecting reverse proxy for `upstream` (e.g. a registry's `http://127.0.0.1:PORT`). */
export async function startFaultProxy(upstream: string): Promise<FaultProxy> {
  const target = new URL(upstream);
  if (target.protocol !== 'http:') throw new Error(`fault proxy: only http upstreams are supported, got ${upstream}`);
  const agent = new Agent({ keepAlive: true });
  const faults: Array<{ spec: FaultSpec; remaining: number; hits: number }> = [];
  const requests: RecordedRequest[] = [];
  const stopper = new AbortController();

  const takeFault = (req: IncomingMessage): FaultSpec | undefined => {
    const fault = faults.find((f) => {
      f.spec.path.lastIndex = 0; // a /g or /y regex must not carry state between requests
      return (
        f.remaining > 0 &&
        (f.spec.method === undefined || f.spec.method.toUpperCase() === req.method) &&
        f.spec.path.test(req.url ?? '/')
      );
    });
    if (!fault) return undefined;
    fault.remaining--;
    fault.hits++;
    return fault.spec;
  };

  const forward = (req: IncomingMessage, res: ServerResponse, limit: BodyLimit | undefined): void => {
    const upstreamReq = httpRequest({
      agent,
      host: target.hostname,
      port: target.port,
      method: req.method,
      path: req.url,
      headers: endToEnd(req.headers),
    });
    upstreamReq.on('response', (upstreamRes) => void relayResponse(upstreamRes, res, limit, stopper.signal));
    upstreamReq.on('error', (e) => {
      if (!res.headersSent) plain(res, 502, `fault proxy: upstream error: ${e.message}\n`);
      else res.destroy();
    });
    // Client went away: drop the upstream exchange too.
    res.on('close', () => {
      if (!res.writableFinished) upstreamReq.destroy();
    });
    req.pipe(upstreamReq);
  };

  const server = createServer((req, res) => {
    const rec = record(req, res);
    requests.push(rec);

    const fault = takeFault(req);
    if (!fault) return forward(req, res, undefined);
    rec.fault = faultKind(fault);
    if ('status' in fault) {
      req.resume();
      const headers: Record<string, string> = { ...fault.headers };
      if (fault.retryAfter !== undefined) headers['retry-after'] = fault.retryAfter;
      const body =
        fault.body ?? JSON.stringify({ errors: [{ code: fault.status === 429 ? 'TOOMANYREQUESTS' : 'UNAVAILABLE', message: 'injected fault' }] });
      return plain(res, fault.status, body, { 'content-type': 'application/json', ...headers });
    }
    if ('redirectTo' in fault) {
      req.resume();
      return plain(res, 307, '', { location: fault.redirectTo.replace(/\/$/, '') + (req.url ?? '/') });
    }
    if ('resetAfterBytes' in fault) {
      return forward(req, res, { afterBytes: fault.resetAfterBytes, then: 'reset' });
    }
    if (fault.afterBytes !== undefined) {
      return forward(req, res, { afterBytes: fault.afterBytes, then: 'stall', stallMs: fault.stallMs });
    }
    sleep(fault.stallMs, undefined, { signal: stopper.signal }).then(
      () => {
        if (!res.destroyed) forward(req, res, undefined);
      },
      () => res.destroy(),
    );
  });
  const port = await listenOnLoopback(server);
  let stopping: Promise<void> | undefined;
  return {
    url: `http://127.0.0.1:${port}`,
    hostPort: `127.0.0.1:${port}`,
    upstream,
    requests,
    addFault(spec) {
      const entry = { spec, remaining: spec.times ?? 1, hits: 0 };
      faults.push(entry);
      return {
        spec,
        get remaining() {
          return entry.remaining;
        },
        get hits() {
          return entry.hits;
        },
      };
    },
    clearFaults() {
      faults.length = 0;
    },
    stop() {
      stopping ??= (async () => {
        stopper.abort();
        await closeServer(server);
        agent.destroy();
      })();
      return stopping;
    },
  };
}

export interface BlobMirror {
  /** `http://127.0.0.1:PORT`; give it to a proxy fault as `redirectTo`. */
  readonly url: string;
  readonly upstream: string;
  /** Every request, oldest first (the `fault` field is unused). */
  readonly requests: RecordedRequest[];
  stop(): Promise<void>;
}

export interface BlobMirrorOptions {
  /** Authorization the mirror itself sends upstream (like S3 holding its own access), e.g. `Basic ...`. */
  upstreamAuthorization?: string;
}

/**
 * A second server that serves `GET`/`HEAD` of any path by fetching the same path from `upstream` (a registry
 * without auth, or with `upstreamAuthorization`), forwarding Range. Like an S3 presigned URL, it answers 400
 * to any request that carries an Authorization header, so a client that leaks registry credentials to a
 * redirect target fails visibly.
 */
export async function startBlobMirror(upstream: string, opts: BlobMirrorOptions = {}): Promise<BlobMirror> {
  const target = new URL(upstream);
  if (target.protocol !== 'http:') throw new Error(`blob mirror: only http upstreams are supported, got ${upstream}`);
  const agent = new Agent({ keepAlive: true });
  const requests: RecordedRequest[] = [];
  const server = createServer((req, res) => {
    const rec = record(req, res);
    requests.push(rec);
    req.resume();
    if (rec.authorization) {
      return plain(
        res,
        400,
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InvalidArgument</Code>' +
          '<Message>Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query ' +
          'string parameter or the Authorization header should be specified</Message></Error>\n',
        { 'content-type': 'application/xml' },
      );
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      return plain(res, 405, 'blob mirror: only GET and HEAD\n');
    }
    const headers: OutgoingHttpHeaders = {};
    if (rec.range) headers.range = rec.range;
    if (opts.upstreamAuthorization) headers.authorization = opts.upstreamAuthorization;
    const upstreamReq = httpRequest({ agent, host: target.hostname, port: target.port, method: req.method, path: req.url, headers });
    upstreamReq.on('response', (upstreamRes) => {
      const out: OutgoingHttpHeaders = {};
      for (const name of ['content-type', 'content-length', 'content-range', 'accept-ranges', 'etag', 'docker-content-digest']) {
        const v = upstreamRes.headers[name];
        if (v !== undefined) out[name] = v;
      }
      res.writeHead(upstreamRes.statusCode ?? 502, out);
      upstreamRes.pipe(res);
    });
    upstreamReq.on('error', (e) => {
      if (!res.headersSent) plain(res, 502, `blob mirror: upstream error: ${e.message}\n`);
      else res.destroy();
    });
    res.on('close', () => {
      if (!res.writableFinished) upstreamReq.destroy();
    });
    upstreamReq.end();
  });
  const port = await listenOnLoopback(server);
  let stopping: Promise<void> | undefined;
  return {
    url: `http://127.0.0.1:${port}`,
    upstream,
    requests,
    stop() {
      stopping ??= closeServer(server).then(() => agent.destroy());
      return stopping;
    },
  };
}
