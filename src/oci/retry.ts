/** Retries with capped exponential backoff and full jitter; rate limits wait without spending an attempt. */
import { setTimeout as sleep } from 'node:timers/promises';
import { OciError, errorFromNetwork } from './errors.ts';

export interface RetryPolicy {
  /** Attempts in all, including the first. Default 5. */
  attempts: number;
  /** First backoff, ms. Default 200. */
  baseDelayMs: number;
  /** Longest backoff, ms. Default 10 000. */
  maxDelayMs: number;
  /** Total time we may spend waiting on rate limits (429) before giving up, ms. Default 300 000. */
  maxRateLimitWaitMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = {
  attempts: 5,
  baseDelayMs: 200,
  maxDelayMs: 10_000,
  maxRateLimitWaitMs: 300_000,
};

/** Full jitter: a random delay in [0, min(cap, base * 2^n)]. */
export function backoffDelay(attempt: number, policy: Pick<RetryPolicy, 'baseDelayMs' | 'maxDelayMs'>, random = Math.random): number {
  const ceiling = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** attempt);
  return Math.round(ceiling * (0.5 + random() / 2));
}

export interface RetryHooks {
  signal?: AbortSignal;
  /** Called before each wait, for logs and progress. */
  onRetry?: (e: OciError, delayMs: number, attempt: number) => void;
}

/**
 * Runs `op` until it succeeds, a permanent error occurs, attempts run out, or the signal aborts.
 * `what` names the operation for network errors.
 */
export async function withRetry<T>(
  what: string,
  op: (attempt: number) => Promise<T>,
  policy: RetryPolicy = DEFAULT_RETRY,
  hooks: RetryHooks = {},
): Promise<T> {
  let attempt = 0;
  let rateLimitWaited = 0;
  let limited = 0;
  for (;;) {
    hooks.signal?.throwIfAborted();
    try {
      return await op(attempt);
    } catch (raw) {
      if (hooks.signal?.aborted) throw hooks.signal.reason ?? raw;
      const e = raw instanceof OciError ? raw : errorFromNetwork(what, raw);
      if (e.errorClass === 'permanent') throw e;
      let delay: number;
      if (e.errorClass === 'rate-limited') {
        // As told, but never less than a growing backoff: a server answering 429 with `Retry-After: 0` again and
        // again is not hammered (the total wait stays bounded by maxRateLimitWaitMs either way).
        delay = Math.max(e.retryAfterMs ?? 0, backoffDelay(limited++, policy));
        if (rateLimitWaited + delay > policy.maxRateLimitWaitMs) throw e;
        rateLimitWaited += delay;
      } else {
        attempt++;
        if (attempt >= policy.attempts) throw e;
        delay = Math.max(backoffDelay(attempt - 1, policy), e.retryAfterMs ?? 0);
      }
      hooks.onRetry?.(e, delay, attempt);
      await sleep(delay, undefined, hooks.signal ? { signal: hooks.signal } : undefined);
    }
  }
}
