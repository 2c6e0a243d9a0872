/**
 * The HTTP layer of the OCI client: scheme choice (https; http only for hosts configured insecure), per-host
 * TLS (custom CA, or no verification for insecure hosts), authentication (Basic / Bearer with scopes, one
 * refresh on 401), redirects followed by hand (credentials never leave their host), and a per-host limit on
 * requests in flight (a slot is held until the response body is consumed).
 *
 * One `send` is one attempt; retries belong to the operations above it, which know whether a body can be
 * sent again.
 */
import type { Readable } from 'node:stream';
import { Agent, request, type Dispatcher } from 'undici';
import {
  anonymous,
  basicHeader,
  hostAuthFromChallenges,
  mergeScopes,
  parseTokenReply,
  TokenCache,
  type CredentialProvider,
  type HostAuth,
} from './auth.ts';
import { guardedConnector, type AddressPolicy } from './address-policy.ts';
import { parseChallenges } from './challenge.ts';
import { OciError, errorFromNetwork, errorFromResponse } from './errors.ts';
import { HostLimiter } from './limiter.ts';
import { apiHost } from './reference.ts';

export interface HostOptions {
  /** Allow plain http and skip TLS verification for this host. */
  insecure?: boolean;
  /** PEM CA bundle to trust for this host (in addition to the system's). */
  ca?: string;
}

export interface TransportOptions {
  /** Credentials by registry host, looked up per request (never stored in jobs). */
  credentials?: CredentialProvider;
  /** `host[:port]` entries that may be reached over http or without TLS verification. */
  insecureRegistries?: string[];
  /** Per-host options (CA bundles). Keys are `host[:port]` as in references. */
  hosts?: Record<string, HostOptions>;
  /** Requests in flight per host. Default 6. */
  maxConcurrentPerHost?: number;
  userAgent?: string;
  /** Time to receive response headers. Default 60 s. */
  headersTimeoutMs?: number;
  /** Longest pause between body bytes. Default 5 min. */
  bodyTimeoutMs?: number;
  /**
   * Which addresses may be connected to (SSRF guard for source registries; not for DVCR): checked after DNS
   * resolution for every host reached (the registry, its token realm, redirect targets). A refused address is
   * a permanent `SOURCE_ADDRESS_REFUSED` error before any connection. Default: no check.
   */
  addressPolicy?: AddressPolicy;
}

export type Body = string | Uint8Array | Readable | AsyncIterable<Uint8Array>;

export interface SendOptions {
  /** Registry host as in references (`docker.io` is mapped to its API host). */
  registry: string;
  method: 'GET' | 'HEAD' | 'PUT' | 'POST' | 'PATCH' | 'DELETE';
  /** A path (`/v2/...`) on the registry, or an absolute URL on it (e.g. an upload Location). */
  path: string;
  headers?: Record<string, string>;
  body?: Body;
  /** Token scopes this request needs, e.g. `repository:ns/img:pull`. */
  scopes: string[];
  /** Follow 3xx by hand (blob GETs). Credentials are dropped when the origin changes. */
  followRedirects?: boolean;
  signal?: AbortSignal;
  /** Names the operation in errors. */
  what: string;
}

export interface Response {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Readable;
  /** Final URL after redirects. */
  url: URL;
  header(name: string): string | undefined;
}

const DEFAULT_UA = 'dvcr-importer/0.1';

function headerValue(h: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const v = h[name.toLowerCase()];
  return Array.isArray(v) ? v.join(', ') : v;
}

function isReplayable(body: Body | undefined): boolean {
  return body === undefined || typeof body === 'string' || body instanceof Uint8Array;
}

export class Transport {
  private readonly credentials: CredentialProvider;
  private readonly insecure: Set<string>;
  private readonly hostOptions: Record<string, HostOptions>;
  private readonly limiter: HostLimiter;
  private readonly tokens = new TokenCache();
  private readonly hostAuth = new Map<string, HostAuth>();
  private readonly bases = new Map<string, Promise<URL>>();
  private readonly agents = new Map<string, Dispatcher>();
  private readonly userAgent: string;
  private readonly headersTimeout: number;
  private readonly bodyTimeout: number;
  private readonly addressPolicy: AddressPolicy | undefined;

  constructor(opts: TransportOptions = {}) {
    this.credentials = opts.credentials ?? anonymous;
    this.insecure = new Set((opts.insecureRegistries ?? []).map((h) => h.trim().toLowerCase()).filter(Boolean));
    this.hostOptions = opts.hosts ?? {};
    this.limiter = new HostLimiter(opts.maxConcurrentPerHost ?? 6);
    this.userAgent = opts.userAgent ?? DEFAULT_UA;
    this.headersTimeout = opts.headersTimeoutMs ?? 60_000;
    this.bodyTimeout = opts.bodyTimeoutMs ?? 300_000;
    this.addressPolicy = opts.addressPolicy;
  }

  isInsecure(registry: string): boolean {
    const h = registry.toLowerCase();
    return this.insecure.has(h) || this.hostOptions[h]?.insecure === true;
  }

  /** The undici dispatcher for a host: keep-alive pool with that host's TLS settings. */
  private agentFor(host: string): Dispatcher {
    let a = this.agents.get(host);
    if (!a) {
      const ca = this.hostOptions[host]?.ca;
      const insecure = this.isInsecure(host);
      const tls = { rejectUnauthorized: !insecure, ...(ca ? { ca } : {}) };
      a = new Agent({
        connect: this.addressPolicy ? guardedConnector(this.addressPolicy, tls) : tls,
        headersTimeout: this.headersTimeout,
        bodyTimeout: this.bodyTimeout,
        keepAliveTimeout: 30_000,
      });
      this.agents.set(host, a);
    }
    return a;
  }

  /**
   * The base URL of a registry's API (`https://host/`), found once per host: https first; for insecure hosts,
   * http when https does not answer. Also learns the host's auth challenge from `GET /v2/`.
   */
  base(registry: string, signal?: AbortSignal): Promise<URL> {
    const host = apiHost(registry.toLowerCase());
    let p = this.bases.get(host);
    if (!p) {
      p = this.discover(registry, host, signal);
      this.bases.set(host, p);
      p.catch(() => this.bases.delete(host));
    }
    return p;
  }

  private async discover(registry: string, host: string, signal?: AbortSignal): Promise<URL> {
    const schemes = this.isInsecure(registry) || this.isInsecure(host) ? ['https', 'http'] : ['https'];
    let lastError: unknown;
    for (const scheme of schemes) {
      const url = new URL(`${scheme}://${host}/v2/`);
      try {
        const res = await request(url, {
          method: 'GET',
          dispatcher: this.agentFor(registry.toLowerCase()),
          headers: { 'user-agent': this.userAgent },
          signal,
        });
        await res.body.dump();
        if (res.statusCode === 401) {
          const www = headerValue(res.headers, 'www-authenticate');
          this.hostAuth.set(host, hostAuthFromChallenges(parseChallenges(www ?? '')));
        } else if (res.statusCode < 300 || res.statusCode === 404) {
          // 404: some registries do not serve /v2/ at all; requests still work.
          this.hostAuth.set(host, { kind: 'none' });
        } else {
          throw errorFromResponse(`GET ${url.href}`, res.statusCode, '', { get: (n) => headerValue(res.headers, n) });
        }
        return new URL(`${scheme}://${host}/`);
      } catch (e) {
        lastError = e;
        if (signal?.aborted) throw e;
      }
    }
    throw errorFromNetwork(`connect to registry ${registry}`, lastError);
  }

  private async authorization(
    registry: string,
    host: string,
    scopes: string[],
    signal: AbortSignal | undefined,
    forceRefresh = false,
  ): Promise<string | undefined> {
    const auth = this.hostAuth.get(host) ?? { kind: 'none' };
    if (auth.kind === 'none') return undefined;
    const creds = await this.credentials(registry.toLowerCase());
    if (auth.kind === 'basic') return creds ? basicHeader(creds) : undefined;
    const key = TokenCache.key(host, auth.realm, auth.service, scopes);
    if (!forceRefresh) {
      const cached = this.tokens.get(key);
      if (cached) return `Bearer ${cached.value}`;
    } else {
      this.tokens.delete(key);
    }
    const realm = new URL(auth.realm);
    if (auth.service) realm.searchParams.set('service', auth.service);
    for (const s of scopes) realm.searchParams.append('scope', s);
    const headers: Record<string, string> = { 'user-agent': this.userAgent };
    if (creds) headers.authorization = basicHeader(creds);
    const what = `get a token from ${realm.origin}${realm.pathname} for ${registry}`;
    let res: Dispatcher.ResponseData;
    try {
      res = await request(realm, {
        method: 'GET',
        headers,
        dispatcher: this.agentFor(realm.host.toLowerCase()),
        signal,
      });
    } catch (e) {
      throw errorFromNetwork(what, e);
    }
    const text = await res.body.text();
    if (res.statusCode !== 200) {
      const err = errorFromResponse(what, res.statusCode, text, { get: (n) => headerValue(res.headers, n) });
      if (res.statusCode === 401 || res.statusCode === 403) {
        throw new OciError(
          `${what}: HTTP ${res.statusCode}: the token server refused ${creds ? `user "${creds.username}"` : 'anonymous access'}`,
          { errorClass: 'permanent', reason: 'UNAUTHORIZED', status: res.statusCode },
        );
      }
      throw err;
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new OciError(`${what}: the reply is not JSON`, { errorClass: 'permanent', reason: 'TOKEN_INVALID' });
    }
    const token = parseTokenReply(json);
    this.tokens.set(key, token);
    return `Bearer ${token.value}`;
  }

  /**
   * Sends one request. Non-2xx answers other than 3xx-with-redirect are returned as they are (the caller
   * decides); a 401 is retried once with fresh credentials when the body can be replayed, and a 401 after that
   * is thrown as a permanent error saying whose access fell short.
   */
  async send(opts: SendOptions): Promise<Response> {
    const base = await this.base(opts.registry, opts.signal);
    const host = base.host;
    const origin = base.origin;
    const sem = this.limiter.for(host);
    const release = await sem.acquire(opts.signal);
    let released = false;
    const releaseOnce = () => {
      if (!released) {
        released = true;
        release();
      }
    };
    try {
      let scopes = opts.scopes;
      let url = new URL(opts.path, base);
      let authz = await this.authorization(opts.registry, host, scopes, opts.signal);
      let refreshed = false;
      let redirects = 0;
      for (;;) {
        const sameOrigin = url.origin === origin;
        const headers: Record<string, string> = { 'user-agent': this.userAgent, ...opts.headers };
        if (authz && sameOrigin) headers.authorization = authz;
        let res: Dispatcher.ResponseData;
        try {
          res = await request(url, {
            method: opts.method,
            headers,
            body: opts.body as Dispatcher.DispatchOptions['body'],
            dispatcher: this.agentFor(sameOrigin ? opts.registry.toLowerCase() : url.host.toLowerCase()),
            signal: opts.signal,
          });
        } catch (e) {
          throw errorFromNetwork(opts.what, e);
        }
        const get = (n: string) => headerValue(res.headers, n);
        if (res.statusCode === 401 && sameOrigin && refreshed) {
          // Still refused with fresh credentials: say whose access fell short, not just "check the credentials".
          const text = await readText(res.body as unknown as Readable, 64 * 1024);
          throw await this.refused(opts, host, scopes, text, get);
        }
        if (res.statusCode === 401 && sameOrigin && !refreshed && isReplayable(opts.body)) {
          await res.body.dump();
          const challenges = parseChallenges(get('www-authenticate') ?? '');
          const learned = hostAuthFromChallenges(challenges);
          this.hostAuth.set(host, learned);
          const bearer = challenges.find((c) => c.scheme === 'bearer');
          if (bearer?.params.scope) scopes = mergeScopes(scopes, [bearer.params.scope]);
          authz = await this.authorization(opts.registry, host, scopes, opts.signal, true);
          refreshed = true;
          if (authz === undefined) {
            throw new OciError(`${opts.what}: HTTP 401: authentication required: no credentials for ${opts.registry}`, {
              errorClass: 'permanent',
              reason: 'UNAUTHORIZED',
              status: 401,
            });
          }
          continue;
        }
        if (
          opts.followRedirects &&
          [301, 302, 303, 307, 308].includes(res.statusCode) &&
          get('location') !== undefined
        ) {
          await res.body.dump();
          if (++redirects > 5) {
            throw new OciError(`${opts.what}: too many redirects`, { errorClass: 'permanent', reason: 'TOO_MANY_REDIRECTS' });
          }
          url = new URL(get('location')!, url);
          if (url.protocol !== 'https:' && url.protocol !== 'http:') {
            throw new OciError(`${opts.what}: redirect to unsupported URL scheme ${url.protocol}`, {
              errorClass: 'permanent',
              reason: 'BAD_REDIRECT',
            });
          }
          continue;
        }
        const body = res.body as unknown as Readable;
        body.once('end', releaseOnce);
        body.once('close', releaseOnce);
        body.once('error', releaseOnce);
        return {
          status: res.statusCode,
          headers: res.headers,
          body,
          url,
          header: get,
        };
      }
    } catch (e) {
      releaseOnce();
      throw e;
    }
  }

  /** The permanent error for a 401 that a fresh token or the configured credentials did not cure. */
  private async refused(
    opts: SendOptions,
    host: string,
    scopes: string[],
    text: string,
    get: (n: string) => string | undefined,
  ): Promise<OciError> {
    const base = errorFromResponse(opts.what, 401, text, { get });
    const creds = await this.credentials(opts.registry.toLowerCase());
    const who = creds ? `user "${creds.username}"` : 'anonymous access';
    const auth = this.hostAuth.get(host);
    let why: string;
    if (auth?.kind === 'bearer') {
      const error = parseChallenges(get('www-authenticate') ?? '').find((c) => c.scheme === 'bearer')?.params.error;
      why =
        error === undefined || error === 'insufficient_scope'
          ? `access denied: ${who} was not granted ${scopes.join(' ')}` +
            (creds ? '' : `; configure credentials for ${opts.registry}`)
          : `the registry rejected the token issued to ${who} by ${auth.realm} (${error})`;
    } else {
      why = creds
        ? `authentication failed for ${who}: check the credentials for ${opts.registry}`
        : `authentication required: no credentials for ${opts.registry}`;
    }
    const said = base.registryErrors[0]?.message ? `: registry says ${base.registryErrors[0].code}: ${base.registryErrors[0].message}` : '';
    return new OciError(`${opts.what}: HTTP 401: ${why}${said}`, {
      errorClass: 'permanent',
      reason: base.reason,
      status: 401,
      registryErrors: base.registryErrors,
    });
  }

  /** Sends and reads an error into an OciError if the status is not one of `ok`. Consumes nothing on success. */
  async expect(opts: SendOptions, ok: number[]): Promise<Response> {
    const res = await this.send(opts);
    if (ok.includes(res.status)) return res;
    const text = opts.method === 'HEAD' ? '' : await readText(res.body, 64 * 1024);
    res.body.destroy();
    throw errorFromResponse(opts.what, res.status, text, { get: (n) => res.header(n) });
  }

  async close(): Promise<void> {
    await Promise.all([...this.agents.values()].map((a) => a.close()));
    this.agents.clear();
  }
}

/** Reads at most `limit` bytes of a body as text (error bodies), discarding the rest. */
export async function readText(body: Readable, limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  try {
    for await (const c of body) {
      const b = c as Buffer;
      if (n < limit) chunks.push(b.subarray(0, limit - n));
      n += b.length;
    }
  } catch {
    /* a broken error body is still an error */
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** Reads a whole body up to `limit` bytes; over it, a permanent error naming `what`. */
export async function readLimited(body: Readable, limit: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of body) {
    const b = c as Buffer;
    n += b.length;
    if (n > limit) {
      body.destroy();
      throw new OciError(`${what}: larger than the ${limit}-byte limit`, { errorClass: 'permanent', reason: 'SIZE_LIMIT' });
    }
    chunks.push(b);
  }
  return Buffer.concat(chunks, n);
}
