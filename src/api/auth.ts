/**
 * Bearer-token auth for the HTTP API, two roles:
 * - operator (`API_TOKEN`): every route;
 * - reader (`API_READ_TOKEN`, optional): GET and HEAD only (list, get, watch, metrics, readiness, OpenAPI).
 *
 * No token configured: no auth (meant for loopback use). Routes marked `config: { public: true }` (`/healthz`, `/readyz`)
 * are always open. Missing or unknown token: 401 with `WWW-Authenticate: Bearer`; a valid read-only token on a
 * write: 403.
 *
 * Tokens are compared in constant time: both sides are hashed (SHA-256) to equal-length digests and compared
 * with `crypto.timingSafeEqual`, against every configured token (no early exit). The Authorization header is
 * never logged or echoed: fastify's request serializer logs method, URL and addresses only, and no message
 * here quotes the header.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';

export type ApiRole = 'operator' | 'reader';

export interface AuthOptions {
  /** Operator token (API_TOKEN). Unset or empty: auth is off. */
  token?: string | undefined;
  /** Read-only token (API_READ_TOKEN); needs `token`. */
  readToken?: string | undefined;
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Open without a token (health checks). */
    public?: boolean;
  }
}

const READ_METHODS = new Set(['GET', 'HEAD']);
const REALM = 'dvcr-importer';

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

export class TokenVerifier {
  private readonly operator: Buffer;
  private readonly reader: Buffer | undefined;

  constructor(token: string, readToken?: string) {
    this.operator = digest(token);
    this.reader = readToken ? digest(readToken) : undefined;
  }

  /** The role a presented token grants, or undefined. Constant time in the token's content. */
  roleOf(presented: string): ApiRole | undefined {
    const d = digest(presented);
    const isOperator = timingSafeEqual(d, this.operator);
    // Always compare against the read token too (against the operator digest when there is none).
    const isReader = timingSafeEqual(d, this.reader ?? this.operator) && this.reader !== undefined;
    if (isOperator) return 'operator';
    if (isReader) return 'reader';
    return undefined;
  }
}

/** Checks the options: a read token without an operator token, or the same for both, is a mistake. */
export function tokenVerifier(opts: AuthOptions): TokenVerifier | undefined {
  if (!opts.token) {
    if (opts.readToken) {
      throw new TypeError('API_READ_TOKEN is set but API_TOKEN is not: set API_TOKEN as well (without it the API has no auth)');
    }
    return undefined;
  }
  if (opts.readToken && opts.readToken === opts.token) {
    throw new TypeError('API_READ_TOKEN must differ from API_TOKEN');
  }
  return new TokenVerifier(opts.token, opts.readToken || undefined);
}

/** The token of an `Authorization: Bearer <token>` header, or undefined when absent or another scheme. */
export function bearerToken(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const m = /^Bearer[ \t]+([^\s]+)[ \t]*$/i.exec(header);
  return m?.[1];
}

export type AuthDecision =
  | { ok: true; role: ApiRole | undefined }
  | { ok: false; status: 401 | 403; code: 'Unauthorized' | 'Forbidden'; message: string; challenge?: string };

/** The decision for one request (pure; the hook below applies it). */
export function authorize(
  verifier: TokenVerifier | undefined,
  req: { method: string; path: string; authorization: string | undefined; public: boolean },
): AuthDecision {
  if (!verifier || req.public) return { ok: true, role: verifier ? undefined : 'operator' };
  const token = bearerToken(req.authorization);
  if (token === undefined) {
    return {
      ok: false,
      status: 401,
      code: 'Unauthorized',
      message: req.authorization
        ? 'the Authorization header is not a bearer token: send "Authorization: Bearer <token>"'
        : 'this API needs a token: send "Authorization: Bearer <token>" (the server\'s API_TOKEN, or API_READ_TOKEN for reading)',
      challenge: `Bearer realm="${REALM}"`,
    };
  }
  const role = verifier.roleOf(token);
  if (role === undefined) {
    return {
      ok: false,
      status: 401,
      code: 'Unauthorized',
      message: 'the bearer token is not valid for this server',
      challenge: `Bearer realm="${REALM}", error="invalid_token"`,
    };
  }
  if (role === 'reader' && !READ_METHODS.has(req.method)) {
    return {
      ok: false,
      status: 403,
      code: 'Forbidden',
      message: `the read-only token (API_READ_TOKEN) cannot ${req.method} ${req.path}: use the operator token (API_TOKEN)`,
    };
  }
  return { ok: true, role };
}

/** A fastify `onRequest` hook enforcing {@link authorize}. */
export function authHook(verifier: TokenVerifier | undefined) {
  return async function checkAuth(request: FastifyRequest, reply: FastifyReply): Promise<void> {
    if (!verifier) return;
    const decision = authorize(verifier, {
      method: request.method,
      path: request.url.split('?')[0] ?? request.url,
      authorization: request.headers.authorization,
      public: request.routeOptions.config?.public === true,
    });
    if (decision.ok) return;
    if (decision.challenge) void reply.header('www-authenticate', decision.challenge);
    await reply.code(decision.status).send({ error: { code: decision.code, message: decision.message } });
  };
}
