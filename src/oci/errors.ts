/**
 * Registry errors as typed values. Every error is classified once, where it is understood:
 * - `transient`: retry with capped exponential backoff (network errors, 408, 5xx, UNAVAILABLE, ...);
 * - `rate-limited`: wait `retryAfterMs` without spending an attempt (429, TOOMANYREQUESTS);
 * - `permanent`: fail now; the message says what to fix.
 */

export type ErrorClass = 'transient' | 'rate-limited' | 'permanent';

/** One entry of a distribution error body `{"errors":[{code,message,detail}]}`. */
export interface RegistryErrorDetail {
  code: string;
  message?: string;
  detail?: unknown;
}

export interface OciErrorInit {
  errorClass: ErrorClass;
  /** Stable machine-readable reason, e.g. `MANIFEST_UNKNOWN`, `DIGEST_MISMATCH`, `ECONNRESET`. */
  reason: string;
  status?: number;
  retryAfterMs?: number;
  registryErrors?: RegistryErrorDetail[];
  cause?: unknown;
}

export class OciError extends Error {
  override readonly name = 'OciError';
  readonly errorClass: ErrorClass;
  readonly reason: string;
  readonly status: number | undefined;
  readonly retryAfterMs: number | undefined;
  readonly registryErrors: RegistryErrorDetail[];

  constructor(message: string, init: OciErrorInit) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.errorClass = init.errorClass;
    this.reason = init.reason;
    this.status = init.status;
    this.retryAfterMs = init.retryAfterMs;
    this.registryErrors = init.registryErrors ?? [];
  }

  get retryable(): boolean {
    return this.errorClass !== 'permanent';
  }

  /** A plain object that survives structured clone (worker threads) and JSON. */
  toJSON(): SerializedOciError {
    return {
      name: 'OciError',
      message: this.message,
      errorClass: this.errorClass,
      reason: this.reason,
      status: this.status,
      retryAfterMs: this.retryAfterMs,
    };
  }

  static fromJSON(s: SerializedOciError): OciError {
    return new OciError(s.message, {
      errorClass: s.errorClass,
      reason: s.reason,
      status: s.status,
      retryAfterMs: s.retryAfterMs,
    });
  }
}

export interface SerializedOciError {
  name: 'OciError';
  message: string;
  errorClass: ErrorClass;
  reason: string;
  status: number | undefined;
  retryAfterMs: number | undefined;
}

export function isOciError(e: unknown): e is OciError {
  return e instanceof OciError;
}

const TRANSIENT_CODES = new Set(['UNAVAILABLE', 'UNKNOWN', 'TOOMANYREQUESTS']);
const TRANSIENT_STATUS = new Set([408, 429, 500, 502, 503, 504]);

/**
 * An HTTP-date (RFC 9110: IMF-fixdate, RFC 850 or asctime) starts with a day name. Checked before Date.parse,
 * which takes almost anything with a digit in it ("-1", "1.5", "a 1" are dates in 2001 to V8).
 */
const HTTP_DATE_START = /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*,? /i;

/**
 * Parses `Retry-After` (delta seconds or an HTTP date) into milliseconds in [0, capMs]; undefined when absent
 * or malformed.
 */
export function parseRetryAfter(value: string | null | undefined, now = Date.now(), capMs = 300_000): number | undefined {
  if (value === null || value === undefined) return undefined;
  const v = value.trim();
  if (v === '') return undefined;
  let ms: number;
  if (/^\d+$/.test(v)) {
    ms = Number(v) * 1000;
  } else {
    if (!HTTP_DATE_START.test(v)) return undefined;
    const t = Date.parse(v);
    if (Number.isNaN(t)) return undefined;
    ms = t - now;
  }
  return Math.max(0, Math.min(ms, capMs));
}

/** Reads a distribution error body (JSON or plain text) into details, never throwing. */
export function parseErrorBody(body: string): RegistryErrorDetail[] {
  const text = body.trim();
  if (text === '') return [];
  try {
    const parsed: unknown = JSON.parse(text);
    if (parsed && typeof parsed === 'object' && Array.isArray((parsed as { errors?: unknown }).errors)) {
      const out: RegistryErrorDetail[] = [];
      for (const e of (parsed as { errors: unknown[] }).errors) {
        if (e && typeof e === 'object' && typeof (e as { code?: unknown }).code === 'string') {
          const { code, message, detail } = e as { code: string; message?: unknown; detail?: unknown };
          out.push({ code, message: typeof message === 'string' ? message : undefined, detail });
        }
      }
      return out;
    }
  } catch {
    /* plain text */
  }
  return [{ code: 'UNKNOWN', message: text.slice(0, 200) }];
}

/** What a person should be told about an HTTP status, beyond the registry's own words. */
function hint(status: number, firstCode: string | undefined): string {
  if (status === 401) return 'authentication failed: check the credentials for this registry';
  if (status === 403) return 'access denied: the credentials lack permission for this repository';
  if (status === 404) {
    if (firstCode === 'MANIFEST_UNKNOWN') return 'the image tag or digest does not exist';
    if (firstCode === 'NAME_UNKNOWN') return 'the repository does not exist';
    if (firstCode === 'BLOB_UNKNOWN') return 'a blob of the image is missing from the registry';
    if (firstCode === 'BLOB_UPLOAD_UNKNOWN') return 'the upload session is gone';
    return 'not found';
  }
  if (status === 429) return 'rate-limited by the registry';
  if (status >= 500) return 'the registry failed; will retry';
  return '';
}

/**
 * Turns a failed HTTP answer into an OciError. `what` names the operation for the message,
 * e.g. `GET manifest registry.example/ns/img:tag`.
 */
export function errorFromResponse(
  what: string,
  status: number,
  body: string,
  headers: { get(name: string): string | null | undefined },
): OciError {
  const registryErrors = parseErrorBody(body);
  const first = registryErrors[0];
  const code = first?.code;
  const retryAfterMs = parseRetryAfter(headers.get('retry-after') ?? undefined);
  let errorClass: ErrorClass = 'permanent';
  if (status === 429 || code === 'TOOMANYREQUESTS') errorClass = 'rate-limited';
  else if (TRANSIENT_STATUS.has(status) || (status >= 500 && code !== undefined && TRANSIENT_CODES.has(code))) {
    errorClass = 'transient';
  }
  const parts = [`${what}: HTTP ${status}`];
  const h = hint(status, code);
  if (h) parts.push(h);
  if (first?.message) parts.push(`registry says ${code}: ${first.message}`);
  return new OciError(parts.join(': '), {
    errorClass,
    reason: code && code !== 'UNKNOWN' ? code : `HTTP_${status}`,
    status,
    retryAfterMs: errorClass === 'rate-limited' ? (retryAfterMs ?? 1000) : retryAfterMs,
    registryErrors,
  });
}

const NETWORK_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'EPIPE',
  'ETIMEDOUT',
  'EAI_AGAIN',
  'ENOTFOUND',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'ERR_STREAM_PREMATURE_CLOSE',
]);

/** Classifies an error thrown by the HTTP stack (not an HTTP status) as transient or permanent. */
export function errorFromNetwork(what: string, e: unknown): OciError {
  if (e instanceof OciError) return e;
  const err = e as { code?: string; message?: string; cause?: { code?: string; message?: string } };
  const code = err?.code ?? err?.cause?.code ?? 'NETWORK';
  const msg = err?.cause?.message ?? err?.message ?? String(e);
  // TLS failures are configuration problems, not blips.
  const tls = /CERT|SSL|TLS|self.signed/i.test(`${code} ${msg}`);
  const errorClass: ErrorClass = tls ? 'permanent' : NETWORK_CODES.has(code) || code === 'NETWORK' ? 'transient' : 'transient';
  const advice = tls
    ? ': TLS verification failed: pass the registry CA (caBundle) or list the host in INSECURE_REGISTRIES'
    : code === 'ENOTFOUND'
      ? ': host not found'
      : code === 'ECONNREFUSED'
        ? ': connection refused'
        : '';
  return new OciError(`${what}: ${msg}${advice}`, { errorClass, reason: code, cause: e });
}
