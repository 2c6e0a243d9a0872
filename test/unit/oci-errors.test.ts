import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { backoffDelay, errorFromNetwork, errorFromResponse, OciError, parseRetryAfter, withRetry } from '../../src/oci/index.ts';

const headers = (h: Record<string, string> = {}) => ({ get: (n: string) => h[n.toLowerCase()] });

describe('error classes', () => {
  it.each([
    [429, '', 'rate-limited'],
    [503, '', 'transient'],
    [500, '{"errors":[{"code":"UNKNOWN","message":"boom"}]}', 'transient'],
    [502, '', 'transient'],
    [408, '', 'transient'],
    [400, '{"errors":[{"code":"DIGEST_INVALID","message":"provided digest did not match uploaded content"}]}', 'permanent'],
    [401, '{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}', 'permanent'],
    [403, '{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}', 'permanent'],
    [404, '{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}', 'permanent'],
    [405, '{"errors":[{"code":"UNSUPPORTED","message":"The operation is unsupported."}]}', 'permanent'],
  ] as const)('HTTP %d is %s', (status, body, cls) => {
    const e = errorFromResponse('GET x', status, body, headers());
    expect(e.errorClass).toBe(cls);
  });

  it('names the operation, the status, the meaning and the registry words', () => {
    const e = errorFromResponse('GET manifest r/a:b', 404, '{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}', headers());
    expect(e.message).toBe('GET manifest r/a:b: HTTP 404: the image tag or digest does not exist: registry says MANIFEST_UNKNOWN: manifest unknown');
    expect(e.reason).toBe('MANIFEST_UNKNOWN');
  });

  it('takes Retry-After (seconds or date) for rate limits, with a default and a cap', () => {
    expect(errorFromResponse('x', 429, '', headers({ 'retry-after': '7' })).retryAfterMs).toBe(7000);
    expect(errorFromResponse('x', 429, '', headers()).retryAfterMs).toBe(1000);
    expect(parseRetryAfter(new Date(10_000 + 5000).toUTCString(), 10_000)).toBeLessThanOrEqual(5000);
    expect(parseRetryAfter('999999')).toBe(300_000);
    expect(parseRetryAfter('soon')).toBeUndefined();
  });

  it('reads IMF-fixdate and RFC 850 dates and refuses number-like text that is not delta-seconds', () => {
    const now = Date.parse('Sun, 06 Nov 1994 08:49:00 GMT');
    expect(parseRetryAfter('Sun, 06 Nov 1994 08:49:37 GMT', now)).toBe(37_000);
    expect(parseRetryAfter('Sunday, 06-Nov-94 08:49:37 GMT', now)).toBe(37_000);
    expect(parseRetryAfter('Sun, 06 Nov 1994 08:48:00 GMT', now)).toBe(0);
    // V8's Date.parse reads these as dates in 2001 (so "retry now"); they are malformed.
    for (const v of ['-1', '1.5', '+5', 'a 1', '1e3', 'x 2']) expect(parseRetryAfter(v, now), v).toBeUndefined();
  });

  it('delta-seconds give that many milliseconds, capped (property)', () => {
    fc.assert(
      fc.property(fc.oneof(fc.nat({ max: 1000 }), fc.nat()), fc.integer({ min: 1, max: 600_000 }), fc.constantFrom('', ' ', '\t'), (n, cap, pad) => {
        expect(parseRetryAfter(`${pad}${n}${pad}`, 0, cap)).toBe(Math.min(n * 1000, cap));
      }),
      { numRuns: 300 },
    );
  });

  it('an HTTP date gives the time until it, between 0 and the cap (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 4e9 }), fc.integer({ min: -1e6, max: 1e6 }), (nowSec, deltaSec) => {
        const now = nowSec * 1000;
        const date = new Date(now + deltaSec * 1000).toUTCString();
        expect(parseRetryAfter(date, now)).toBe(Math.max(0, Math.min(deltaSec * 1000, 300_000)));
      }),
      { numRuns: 300 },
    );
  });

  it('never throws; anything else is undefined or a whole number of milliseconds in [0, cap] (property)', () => {
    const numberish = fc
      .tuple(fc.constantFrom('', '-', '+', '.', ' ', 'x'), fc.oneof(fc.nat().map(String), fc.double().map(String)), fc.constantFrom('', 's', '.0', ' GMT'))
      .map(([a, b, c]) => `${a}${b}${c}`);
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 40 }), numberish), fc.integer({ min: 0, max: 4e12 }), (v, now) => {
        const ms = parseRetryAfter(v, now);
        if (ms !== undefined) {
          expect(Number.isInteger(ms)).toBe(true);
          expect(ms).toBeGreaterThanOrEqual(0);
          expect(ms).toBeLessThanOrEqual(300_000);
        }
        // Only delta-seconds or a date (which starts with a day name) count.
        if (!/^\s*\d+\s*$/.test(v) && !/^\s*[A-Za-z]{3}/.test(v)) expect(ms, JSON.stringify(v)).toBeUndefined();
      }),
      { numRuns: 1000 },
    );
  });

  it('classifies network errors; TLS failures are permanent with advice', () => {
    expect(errorFromNetwork('GET x', Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' })).errorClass).toBe('transient');
    const tls = errorFromNetwork('GET x', Object.assign(new Error('self-signed certificate'), { code: 'DEPTH_ZERO_SELF_SIGNED_CERT' }));
    expect(tls.errorClass).toBe('permanent');
    expect(tls.message).toMatch(/INSECURE_REGISTRIES/);
  });

  it('survives a trip through JSON (worker threads)', () => {
    const e = errorFromResponse('x', 429, '', headers({ 'retry-after': '3' }));
    const back = OciError.fromJSON(JSON.parse(JSON.stringify(e)));
    expect(back).toMatchObject({ errorClass: 'rate-limited', retryAfterMs: 3000, reason: 'HTTP_429', message: e.message });
  });
});

describe('withRetry', () => {
  const fast = { attempts: 4, baseDelayMs: 1, maxDelayMs: 5, maxRateLimitWaitMs: 50 };

  it('retries transient errors up to the attempt limit', async () => {
    let calls = 0;
    const err = await withRetry('op', async () => {
      calls++;
      throw new OciError('blip', { errorClass: 'transient', reason: 'X' });
    }, fast).catch((e: unknown) => e);
    expect(calls).toBe(4);
    expect((err as OciError).message).toBe('blip');
  });

  it('does not retry permanent errors', async () => {
    let calls = 0;
    await expect(
      withRetry('op', async () => {
        calls++;
        throw new OciError('no', { errorClass: 'permanent', reason: 'X' });
      }, fast),
    ).rejects.toThrow('no');
    expect(calls).toBe(1);
  });

  it('rate limits wait without spending attempts, within a budget', async () => {
    let calls = 0;
    const v = await withRetry('op', async () => {
      calls++;
      if (calls <= 6) throw new OciError('slow down', { errorClass: 'rate-limited', reason: 'X', retryAfterMs: 2 });
      return 'ok';
    }, fast);
    expect(v).toBe('ok');
    expect(calls).toBe(7); // 6 rate limits > 4 attempts, none spent
    await expect(
      withRetry('op', async () => {
        throw new OciError('slow down', { errorClass: 'rate-limited', reason: 'X', retryAfterMs: 30 });
      }, fast),
    ).rejects.toThrow('slow down');
  });

  it('Retry-After: 0 again and again still backs off, and the rate-limit budget ends it', async () => {
    const policy = { attempts: 4, baseDelayMs: 20, maxDelayMs: 80, maxRateLimitWaitMs: 400 };
    let calls = 0;
    const started = Date.now();
    await expect(
      withRetry('op', async () => {
        calls++;
        throw new OciError('slow down', { errorClass: 'rate-limited', reason: 'X', retryAfterMs: 0 });
      }, policy),
    ).rejects.toThrow('slow down');
    // Waits of at least 10, 20, 40, then 40-80 ms each until 400 ms are spent: a handful of calls, not thousands.
    expect(calls).toBeGreaterThan(3);
    expect(calls).toBeLessThan(16);
    expect(Date.now() - started).toBeGreaterThanOrEqual(200);
  });

  it('stops when aborted', async () => {
    const ac = new AbortController();
    const p = withRetry('op', async () => {
      ac.abort(new Error('cancelled'));
      throw new OciError('blip', { errorClass: 'transient', reason: 'X' });
    }, { ...fast, baseDelayMs: 1000, maxDelayMs: 1000 }, { signal: ac.signal });
    await expect(p).rejects.toThrow('cancelled');
  });

  it('backoff is capped, exponential and jittered', () => {
    const p = { baseDelayMs: 100, maxDelayMs: 1000 };
    expect(backoffDelay(0, p, () => 1)).toBe(100);
    expect(backoffDelay(3, p, () => 1)).toBe(800);
    expect(backoffDelay(10, p, () => 1)).toBe(1000);
    expect(backoffDelay(10, p, () => 0)).toBe(500);
  });
});
