/**
 * Errors to HTTP answers: `{error: {code, message, issues?}}` with a status. Errors of the images module carry a
 * stable `code` (see images/errors.ts); fastify's own errors (body too large, bad JSON, parameter validation)
 * get a message a person can act on; anything else is a 500 whose message says only where to look (no secret,
 * no stack: the details go to the server log under the request id).
 */
import { NotFoundError } from './service.ts';
import type { ApiErrorBody } from './client-types.ts';
import {
  SpecFrozenError,
  StaleWriteError,
  StoreConflictError,
  ValidationError,
  WatchExpiredError,
} from '../images/index.ts';

export interface ErrorReply {
  status: number;
  body: ApiErrorBody;
  /** Whether the server should log the error with its stack (5xx). */
  internal: boolean;
}

interface FastifyLikeError {
  code?: unknown;
  statusCode?: unknown;
  validation?: Array<{ instancePath?: string; message?: string; keyword?: string; params?: Record<string, unknown> }>;
  validationContext?: string;
  message?: unknown;
}

function reply(status: number, code: string, message: string, issues?: ApiErrorBody['error']['issues']): ErrorReply {
  return { status, body: { error: { code, message, ...(issues ? { issues } : {}) } }, internal: status >= 500 };
}

/** Redis unreachable (ioredis' fail-fast producer errors and socket errors). */
function isRedisUnavailable(e: unknown): boolean {
  if (!(e instanceof Error)) return false;
  if (e.name === 'MaxRetriesPerRequestError') return true;
  const code = (e as { code?: unknown }).code;
  if (code === 'ECONNREFUSED' || code === 'ETIMEDOUT' || code === 'ECONNRESET') return true;
  return /Stream isn't writeable|Connection is closed|enableOfflineQueue/.test(e.message);
}

function validationIssues(err: FastifyLikeError): Array<{ path: string; message: string }> {
  const where = err.validationContext ?? 'request';
  return (err.validation ?? []).map((v) => {
    const field = (v.instancePath ?? '').replace(/^\//, '').replace(/\//g, '.');
    const path = field ? `${where}.${field}` : where;
    let what = v.message ?? 'is invalid';
    if (v.keyword === 'pattern' || v.keyword === 'maxLength' || v.keyword === 'minLength') {
      what =
        field === 'namespace'
          ? 'is not a valid namespace: lowercase letters, digits and "-", at most 63 characters'
          : field === 'sinceId'
            ? 'is not an event id (<milliseconds>-<sequence>)'
            : 'is not a valid name: lowercase letters, digits, "-" and ".", at most 253 characters';
    }
    return { path, message: `${path}: ${what}` };
  });
}

export function errorReply(e: unknown, requestId: string, opts: { bodyLimit?: number } = {}): ErrorReply {
  if (e instanceof ValidationError) {
    return reply(422, 'Invalid', e.message, e.issues.map((i) => ({ path: i.path, message: i.message })));
  }
  if (e instanceof SpecFrozenError) return reply(409, 'SpecFrozen', e.message);
  if (e instanceof StaleWriteError || e instanceof StoreConflictError) return reply(409, 'Conflict', e.message);
  if (e instanceof WatchExpiredError) return reply(410, 'Expired', e.message);
  if (e instanceof NotFoundError) return reply(404, 'NotFound', e.message);

  const f = (e ?? {}) as FastifyLikeError;
  if (Array.isArray(f.validation)) {
    const issues = validationIssues(f);
    return reply(400, 'BadRequest', issues.map((i) => i.message).join('; ') || 'the request is invalid', issues);
  }
  switch (f.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return reply(
        413,
        'PayloadTooLarge',
        `the request body is larger than the ${formatLimit(opts.bodyLimit ?? 1024 * 1024)} this server accepts: send one manifest ` +
          '(a few KiB), not a disk image (disks go to the upload URL)',
      );
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return reply(415, 'UnsupportedMediaType', 'send the manifest as JSON with "content-type: application/json" (convert YAML on the client)');
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return reply(400, 'BadRequest', 'the request body is empty: send one manifest as a JSON object');
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return reply(400, 'BadRequest', 'the request body is not valid JSON: send one manifest as a JSON object');
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return reply(400, 'BadRequest', 'the request body does not match its Content-Length');
  }
  if (typeof f.statusCode === 'number' && f.statusCode >= 400 && f.statusCode < 500 && typeof f.code === 'string' && f.code.startsWith('FST_')) {
    return reply(f.statusCode, 'BadRequest', typeof f.message === 'string' ? f.message : 'bad request');
  }
  if (isRedisUnavailable(e)) {
    return reply(503, 'Unavailable', 'the image store (Redis) cannot be reached right now; try again shortly');
  }
  return reply(500, 'Internal', `internal error (request ${requestId}); the server log has the details`);
}

function formatLimit(bytes: number): string {
  if (bytes % (1024 * 1024) === 0) return `${bytes / (1024 * 1024)} MiB`;
  if (bytes % 1024 === 0) return `${bytes / 1024} KiB`;
  return `${bytes} bytes`;
}
