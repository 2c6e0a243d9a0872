/**
 * Errors of the HTTP source, classified once, here, as `OciError` values (transient / rate-limited /
 * permanent, a stable `reason`, `retryAfterMs`): the same typed error the registry client throws, which the
 * pipeline already turns into an import failure and which survives the thread boundary (`toJSON`).
 *
 * URLs in messages are redacted to origin and path: query strings (pre-signed tokens) and credentials are never
 * echoed.
 */
import { STATUS_CODES } from 'node:http';
import { OciError, parseRetryAfter } from '../oci/errors.ts';
import { headerValue, type HeaderRecord } from './http-headers.ts';

/** `https://host[:port]/path` of a URL, without credentials, query or fragment. */
export function redactUrl(url: URL): string {
  return `${url.protocol}//${url.host}${url.pathname}`;
}

/** Wait before retrying a 429 that carries no Retry-After. */
export const DEFAULT_RATE_LIMIT_DELAY_MS = 5_000;

function permanent(message: string, reason: string, status?: number): OciError {
  return new OciError(message, { errorClass: 'permanent', reason, status });
}

/**
 * Parses the source URL (or a redirect's target): only http and https, and never credentials in it. The
 * messages name no part of a URL that carries credentials beyond its origin and path.
 */
export function parseSourceUrl(raw: string, base?: URL, what = 'the source URL'): URL {
  let url: URL;
  try {
    url = base === undefined ? new URL(raw) : new URL(raw, base);
  } catch {
    throw permanent(`${what} is not a valid absolute http(s) URL`, 'INVALID_URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw permanent(`${what} must use http or https, not ${url.protocol.replace(/:$/, '')}`, 'UNSUPPORTED_SCHEME');
  }
  if (url.username !== '' || url.password !== '') {
    throw permanent(
      `${what} ${redactUrl(url)} carries credentials (user:password@): HTTP sources refuse credentials in URLs and ` +
        'never send them; use a link that needs none (for example a pre-signed URL)',
      'CREDENTIALS_IN_URL',
    );
  }
  return url;
}

/** An HTTP answer that is not the file: permanent for 4xx (404, 410, 401, 403, ...), transient for 5xx. */
export function statusError(url: URL, status: number, headers: HeaderRecord): OciError {
  const phrase = STATUS_CODES[status];
  const base = `HTTP ${status}${phrase ? ` ${phrase}` : ''} for ${redactUrl(url)}`;
  const retryAfterMs = parseRetryAfter(headerValue(headers, 'retry-after'));
  const reason = `HTTP_${status}`;
  switch (status) {
    case 401:
      return permanent(
        `${base}: the server asks for credentials, which HTTP sources never send; use a link that needs none`,
        reason,
        status,
      );
    case 403:
      return permanent(`${base}: access denied (an expired pre-signed link?)`, reason, status);
    case 404:
      return permanent(`${base}: check the URL`, reason, status);
    case 410:
      return permanent(`${base}: the file was removed from the server`, reason, status);
    case 429: {
      const wait = retryAfterMs ?? DEFAULT_RATE_LIMIT_DELAY_MS;
      return new OciError(`${base}: rate-limited by the server; retrying in ${Math.ceil(wait / 1000)} s`, {
        errorClass: 'rate-limited',
        reason,
        status,
        retryAfterMs: wait,
      });
    }
  }
  if (status === 408 || status >= 500) {
    const when = retryAfterMs !== undefined ? ` in ${Math.ceil(retryAfterMs / 1000)} s` : '';
    const what = status === 503 ? 'the server is unavailable' : status === 408 ? 'the server timed out' : 'the server failed';
    return new OciError(`${base}: ${what}; will retry${when}`, { errorClass: 'transient', reason, status, retryAfterMs });
  }
  return permanent(status >= 400 ? base : `unexpected ${base}`, reason, status);
}

const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT']);

function errorCode(e: unknown): { code: string; message: string } {
  const err = e as { code?: unknown; message?: unknown; cause?: { code?: unknown; message?: unknown } } | undefined;
  const code = typeof err?.code === 'string' ? err.code : typeof err?.cause?.code === 'string' ? err.cause.code : 'NETWORK';
  const message =
    typeof err?.cause?.message === 'string' ? err.cause.message : typeof err?.message === 'string' ? err.message : String(e);
  return { code, message };
}

function isTlsFailure(code: string, message: string): boolean {
  return /CERT|SSL|TLS|self.signed/i.test(`${code} ${message}`);
}

/** Whether an error thrown by the HTTP stack is the idle timeout (no byte for `idleTimeoutMs`). */
export function isIdleTimeout(e: unknown): boolean {
  return TIMEOUT_CODES.has(errorCode(e).code);
}

/**
 * Whether an error of a response body is a cut connection that a resume may cure: anything from the network
 * except the idle timeout and TLS failures. Our own classified errors are not.
 */
export function isDrop(e: unknown): boolean {
  if (e instanceof OciError) return false;
  if ((e as { name?: unknown })?.name === 'DiskError') return false;
  const { code, message } = errorCode(e);
  return !TIMEOUT_CODES.has(code) && !isTlsFailure(code, message);
}

/**
 * An error of the HTTP stack (no HTTP status): the idle timeout and network failures are transient, TLS
 * failures permanent (a configuration problem: the CA bundle or the insecure-host list).
 */
export function networkError(url: URL, e: unknown, idleTimeoutMs: number): OciError {
  if (e instanceof OciError) return e;
  const { code, message } = errorCode(e);
  const where = redactUrl(url);
  if (TIMEOUT_CODES.has(code)) {
    return new OciError(`GET ${where}: no data for ${idleTimeoutMs} ms (idle timeout): the download stalled`, {
      errorClass: 'transient',
      reason: 'IDLE_TIMEOUT',
      cause: e,
    });
  }
  if (isTlsFailure(code, message)) {
    return new OciError(
      `GET ${where}: TLS failed (${code}: ${message}): pass the server's CA certificate as caBundle, or list ` +
        `${url.host} as an insecure host`,
      { errorClass: 'permanent', reason: 'TLS_ERROR', cause: e },
    );
  }
  const advice = code === 'ENOTFOUND' ? ': host not found' : code === 'ECONNREFUSED' ? ': connection refused' : '';
  return new OciError(`GET ${where}: ${message}${advice}`, { errorClass: 'transient', reason: code, cause: e });
}
