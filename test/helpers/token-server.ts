/**
 * A Bearer token server on loopback for the registry's `token` auth mode (distribution 2.8), the way Docker
 * Hub, Harbor or GitLab run one: the registry answers 401 with
 * `WWW-Authenticate: Bearer realm=<url>/token,service=..,scope=..`, the client asks
 * `GET /token?service=..&scope=..` (with Basic credentials, or anonymously) and gets a JWT signed by a key
 * whose certificate is the registry's `rootcertbundle`.
 *
 * What distribution 2.8.2 checks in the JWT (each point tried against the 2.8.2 binary):
 * header `alg` RS256 or ES256 and a key named by `x5c` (a chain ending at a certificate in the bundle; a
 * self-signed leaf that is itself in the bundle will do) or `kid` (libtrust key id of a bundle key); no key
 * header at all is `invalid_token`. Claims: `iss` must equal the configured issuer and `aud` the service, as
 * a string (an array is `invalid_token` in 2.8); `exp` and `nbf` get 60 s of leeway; `sub`, `iat`, `jti`
 * and `typ` are not required. `access[]` must cover every requested action, else 401 `insufficient_scope`;
 * `GET /v2/` accepts any valid token, even one with no access.
 */
import { execFile } from 'node:child_process';
import { createHash, createPrivateKey, randomUUID, sign, X509Certificate, type KeyObject } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startRegistry, type RegistryServer } from '../../src/stack/index.ts';
import { closeServer, listenOnLoopback } from './loopback.ts';

const run = promisify(execFile);

/** One requested access, parsed from `type[(class)]:name:action,action`. */
export interface TokenScope {
  type: string;
  name: string;
  actions: string[];
}

/** Decides which of `scope.actions` a caller gets; `user` is undefined for an anonymous request. */
export type AccessPolicy = (user: string | undefined, scope: TokenScope) => string[];

export interface TokenServerOptions {
  /** user => password accepted with Basic auth. A wrong password or unknown user gets 401. */
  users?: Record<string, string>;
  /** Access policy; default: authenticated users get every requested action, anonymous callers `pull`
   * (only if `anonymousPull` is true). */
  allow?: AccessPolicy;
  /** With the default policy: may anonymous callers pull? Default true. */
  anonymousPull?: boolean;
  /** `service` value (the JWT audience). Default `dvcr-test-registry`. */
  service?: string;
  /** `iss` claim. Default `dvcr-test-token-server`. */
  issuer?: string;
  /** Token lifetime in seconds. Default 300. */
  expiresIn?: number;
  /** Leave `expires_in` out of the reply (clients must then assume 60 s). Default false. */
  omitExpiresIn?: boolean;
  /** Signing algorithm. Default RS256. */
  algorithm?: 'RS256' | 'ES256';
  /** How the JWT header names the key: `x5c` (certificate chain) or `kid` (libtrust key id). Default x5c. */
  keyHeader?: 'x5c' | 'kid';
  /** Folder for the key and certificate; default a temp folder removed by `stop()`. */
  dir?: string;
}

/** One request the token server saw. */
export interface TokenRequest {
  method: string;
  path: string;
  service: string | undefined;
  /** Each `scope` query value, split on spaces. */
  scopes: string[];
  /** Whether an `Authorization: Basic` header was presented. */
  basicAuth: boolean;
  /** The Basic user name, if any (also when the password was wrong). */
  user: string | undefined;
  /** Status the server answered. */
  status: number;
  /** The access granted in the token (empty on failure). */
  granted: TokenScope[];
}

export interface TokenServer {
  /** `http://127.0.0.1:PORT/token`, the registry's `realm`. */
  readonly realm: string;
  readonly service: string;
  readonly issuer: string;
  /** Path of the PEM certificate to give the registry as `rootcertbundle`. */
  readonly rootCertBundle: string;
  /** `http://127.0.0.1:PORT`. */
  readonly url: string;
  /** Every request, oldest first; tests may clear it with `requests.length = 0`. */
  readonly requests: TokenRequest[];
  /** Signs a token for the given access directly (no HTTP), e.g. to build an expired or foreign token. */
  issue(user: string | undefined, access: TokenScope[], lifetimeSeconds?: number): string;
  stop(): Promise<void>;
}

/** Parses `repository:name:pull,push` (also `repository(plugin):name:pull` and names holding ':'). */
export function parseScope(text: string): TokenScope | undefined {
  const first = text.indexOf(':');
  const last = text.lastIndexOf(':');
  if (first <= 0 || last === first) return undefined;
  const type = text.slice(0, first).replace(/\(.*\)$/, '');
  const name = text.slice(first + 1, last);
  const actions = text
    .slice(last + 1)
    .split(',')
    .filter((a) => a !== '');
  if (name === '') return undefined;
  return { type, name, actions };
}

function base64url(data: Buffer | string): string {
  return Buffer.from(data).toString('base64url');
}

/**
 * libtrust key id: SHA-256 of the DER (PKIX) public key, first 240 bits, base32 (RFC 4648), in 12 groups of
 * four characters joined by ':'. This is what distribution matches a `kid` header against.
 */
export function libtrustKeyId(publicKeyDer: Buffer): string {
  const digest = createHash('sha256').update(publicKeyDer).digest().subarray(0, 30);
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0;
  let value = 0;
  let out = '';
  for (const byte of digest) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  return out.match(/.{4}/g)!.join(':');
}

interface SigningKey {
  key: KeyObject;
  certPath: string;
  certDer: Buffer;
  kid: string;
}

/** A fresh key and a self-signed certificate for it, made with the openssl CLI (Node has no X.509 builder). */
async function makeSigningKey(dir: string, algorithm: 'RS256' | 'ES256'): Promise<SigningKey> {
  const keyPath = join(dir, 'token-signing.key');
  const certPath = join(dir, 'token-signing.crt');
  const keyArgs =
    algorithm === 'RS256' ? ['-newkey', 'rsa:2048'] : ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1'];
  try {
    await run('openssl', [
      'req', '-x509', ...keyArgs, '-nodes', '-sha256', '-days', '2',
      '-subj', '/CN=dvcr-test-token-issuer', '-keyout', keyPath, '-out', certPath,
    ]);
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: string };
    if (err.code === 'ENOENT') throw new Error('token server: the openssl command is missing (apt-get install openssl)');
    throw new Error(`token server: openssl could not make a certificate: ${err.stderr ?? err.message}`);
  }
  const key = createPrivateKey(readFileSync(keyPath));
  const cert = new X509Certificate(readFileSync(certPath));
  const spki = cert.publicKey.export({ type: 'spki', format: 'der' });
  return { key, certPath, certDer: cert.raw, kid: libtrustKeyId(spki) };
}

function basicCredentials(req: IncomingMessage): { user: string; password: string } | undefined {
  const header = req.headers.authorization;
  const match = header?.match(/^Basic\s+(\S+)\s*$/i);
  if (!match?.[1]) return undefined;
  const decoded = Buffer.from(match[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return { user: decoded, password: '' };
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

/** Starts a token server on a free loopback port. */
export async function startTokenServer(opts: TokenServerOptions = {}): Promise<TokenServer> {
  const service = opts.service ?? 'dvcr-test-registry';
  const issuer = opts.issuer ?? 'dvcr-test-token-server';
  const algorithm = opts.algorithm ?? 'RS256';
  const keyHeader = opts.keyHeader ?? 'x5c';
  const lifetime = opts.expiresIn ?? 300;
  const users = opts.users ?? {};
  const anonymousPull = opts.anonymousPull ?? true;
  const allow: AccessPolicy =
    opts.allow ??
    ((user, scope) => (user !== undefined ? scope.actions : anonymousPull ? scope.actions.filter((a) => a === 'pull') : []));

  const ownDir = opts.dir === undefined;
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'dvcr-token-server-'));
  mkdirSync(dir, { recursive: true });
  let signingKey: SigningKey;
  try {
    signingKey = await makeSigningKey(dir, algorithm);
  } catch (e) {
    if (ownDir) rmSync(dir, { recursive: true, force: true });
    throw e;
  }

  const issue = (user: string | undefined, access: TokenScope[], lifetimeSeconds = lifetime): string => {
    const now = Math.floor(Date.now() / 1000);
    const header: Record<string, unknown> = { typ: 'JWT', alg: algorithm };
    if (keyHeader === 'x5c') header.x5c = [signingKey.certDer.toString('base64')];
    else header.kid = signingKey.kid;
    const claims = {
      iss: issuer,
      sub: user ?? '',
      aud: service,
      exp: now + lifetimeSeconds,
      nbf: now - 1,
      iat: now,
      jti: randomUUID(),
      access,
    };
    const signingInput = `${base64url(JSON.stringify(header))}.${base64url(JSON.stringify(claims))}`;
    const signature =
      algorithm === 'RS256'
        ? sign('sha256', Buffer.from(signingInput), signingKey.key)
        : // JWS wants r||s, not DER.
          sign('sha256', Buffer.from(signingInput), { key: signingKey.key, dsaEncoding: 'ieee-p1363' });
    return `${signingInput}.${base64url(signature)}`;
  };

  const requests: TokenRequest[] = [];
  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const url = new URL(req.url ?? '/', 'http://token.invalid');
    const creds = basicCredentials(req);
    const scopes = url.searchParams.getAll('scope').flatMap((s) => s.split(' ').filter((x) => x !== ''));
    const record: TokenRequest = {
      method: req.method ?? '',
      path: url.pathname,
      service: url.searchParams.get('service') ?? undefined,
      scopes,
      basicAuth: creds !== undefined,
      user: creds?.user,
      status: 0,
      granted: [],
    };
    requests.push(record);
    const answer = (status: number, body: unknown, headers?: Record<string, string>): void => {
      record.status = status;
      sendJson(res, status, body, headers);
    };
    if (url.pathname !== '/token') return answer(404, { errors: [{ code: 'NOT_FOUND', message: 'no such path' }] });
    if (req.method !== 'GET') return answer(405, { errors: [{ code: 'UNSUPPORTED', message: 'use GET' }] });
    if (record.service !== undefined && record.service !== service) {
      return answer(400, { errors: [{ code: 'INVALID_SERVICE', message: `unknown service ${record.service}` }] });
    }
    if (creds && users[creds.user] !== creds.password) {
      return answer(
        401,
        { errors: [{ code: 'UNAUTHORIZED', message: 'invalid username or password' }] },
        { 'www-authenticate': `Basic realm="${service}"` },
      );
    }
    const granted: TokenScope[] = [];
    for (const text of scopes) {
      const scope = parseScope(text);
      if (!scope) return answer(400, { errors: [{ code: 'INVALID_SCOPE', message: `bad scope ${text}` }] });
      const actions = allow(creds?.user, scope).filter((a) => scope.actions.includes(a));
      // A token server grants what it can; the registry decides whether that suffices.
      if (actions.length > 0) granted.push({ type: scope.type, name: scope.name, actions });
    }
    record.granted = granted;
    const token = issue(creds?.user, granted);
    const reply: Record<string, unknown> = { token, access_token: token, issued_at: new Date().toISOString() };
    if (!opts.omitExpiresIn) reply.expires_in = lifetime;
    answer(200, reply);
  };

  const server = createServer((req, res) => {
    req.resume();
    try {
      handle(req, res);
    } catch (e) {
      if (!res.headersSent) sendJson(res, 500, { errors: [{ code: 'UNKNOWN', message: String(e) }] });
      else res.destroy();
    }
  });
  let port: number;
  try {
    port = await listenOnLoopback(server);
  } catch (e) {
    if (ownDir) rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  const url = `http://127.0.0.1:${port}`;
  let stopping: Promise<void> | undefined;
  return {
    realm: `${url}/token`,
    service,
    issuer,
    rootCertBundle: signingKey.certPath,
    url,
    requests,
    issue,
    stop() {
      stopping ??= closeServer(server).finally(() => {
        if (ownDir) rmSync(dir, { recursive: true, force: true });
      });
      return stopping;
    },
  };
}

/** A registry in `token` mode together with its token server. */
export interface TokenRegistry {
  readonly registry: RegistryServer;
  readonly tokenServer: TokenServer;
  /** Stops both (the registry first). */
  stop(): Promise<void>;
}

/**
 * Starts a token server (key and certificate in `dataDir/token`) and a registry (`dataDir/registry`) that
 * trusts it. `dataDir` is the caller's to remove.
 */
export async function startTokenRegistry(dataDir: string, opts: TokenServerOptions = {}): Promise<TokenRegistry> {
  const tokenServer = await startTokenServer({ ...opts, dir: opts.dir ?? join(dataDir, 'token') });
  let registry: RegistryServer;
  try {
    registry = await startRegistry({
      dataDir: join(dataDir, 'registry'),
      auth: {
        kind: 'token',
        realm: tokenServer.realm,
        service: tokenServer.service,
        issuer: tokenServer.issuer,
        rootCertBundle: tokenServer.rootCertBundle,
      },
    });
  } catch (e) {
    await tokenServer.stop();
    throw e;
  }
  return {
    registry,
    tokenServer,
    async stop() {
      await registry.stop();
      await tokenServer.stop();
    },
  };
}
