/** Every error of an import becomes one `ImportFailure`, classified where it is understood. */
import { isOciError } from '../oci/index.ts';
import { DiskError } from '../disk/errors.ts';
import type { ImportFailure } from './types.ts';

function isAbort(e: unknown): boolean {
  const err = e as { name?: string; code?: string };
  return err?.name === 'AbortError' || err?.code === 'ABORT_ERR';
}

/** Disk-full in DVCR is a known permanent failure upstream: retrying only fills the disk again. */
function isNoSpace(message: string): boolean {
  return /no space left on device|ENOSPC/i.test(message);
}

export function toFailure(e: unknown): ImportFailure {
  if (isAbort(e)) return { errorClass: 'cancelled', reason: 'Cancelled', message: 'the import was cancelled' };
  if (isOciError(e)) {
    if (isNoSpace(e.message)) return { errorClass: 'permanent', reason: 'NoSpaceLeft', message: e.message };
    return {
      errorClass: e.errorClass,
      reason: e.reason,
      message: e.message,
      ...(e.retryAfterMs !== undefined ? { retryAfterMs: e.retryAfterMs } : {}),
    };
  }
  if (e instanceof DiskError) {
    return { errorClass: e.permanent ? 'permanent' : 'transient', reason: e.reason, message: e.message };
  }
  const err = e as { name?: string; reason?: unknown; permanent?: unknown; message?: unknown };
  if (err && typeof err.reason === 'string' && typeof err.permanent === 'boolean' && typeof err.message === 'string') {
    return { errorClass: err.permanent ? 'permanent' : 'transient', reason: err.reason, message: err.message };
  }
  const message = e instanceof Error ? e.message : String(e);
  if (isNoSpace(message)) return { errorClass: 'permanent', reason: 'NoSpaceLeft', message };
  return { errorClass: 'transient', reason: 'InternalError', message };
}

/** An Error carrying a failure, for code that throws. */
export class ImportError extends Error {
  override readonly name = 'ImportError';
  constructor(readonly failure: ImportFailure) {
    super(failure.message);
  }
}
