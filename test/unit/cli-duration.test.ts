/**
 * `wait --timeout` durations (parseDuration): Go-style `1h30m`, `1.5m`, `500ms`, `0`. Properties with a bounded
 * number of runs; the examples are in cli-commands.test.ts.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { CliError, parseDuration } from '../../src/cli/commands/context.ts';

const MAX_TIMER_MS = 2 ** 31 - 1;
const UNITS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const;
type Unit = keyof typeof UNITS;

/** parseDuration's answer, or its CliError (anything else thrown fails the test). */
function parse(text: string): number | CliError {
  try {
    return parseDuration(text);
  } catch (e) {
    expect(e).toBeInstanceOf(CliError);
    return e as CliError;
  }
}

describe('parseDuration', () => {
  it('refuses what a timer cannot wait for, instead of ending the wait at once', () => {
    expect(parseDuration('596h')).toBe(596 * 3_600_000);
    expect(() => parseDuration('597h')).toThrow(/too long/);
    expect(() => parseDuration('1000h')).toThrow(/too long/);
    expect(() => parseDuration(`${'9'.repeat(400)}s`)).toThrow(/too long/);
    expect(() => parseDuration('-5s')).toThrow(/invalid duration/);
    expect(parseDuration(' 0 ')).toBe(0);
  });

  it('a sequence of number+unit parts is their sum in milliseconds (property)', () => {
    const part = fc.tuple(fc.nat({ max: 100_000 }), fc.constantFrom(0, 0.5, 0.25), fc.constantFrom(...(Object.keys(UNITS) as Unit[])));
    fc.assert(
      fc.property(fc.array(part, { minLength: 1, maxLength: 4 }), fc.constantFrom('', ' '), (parts, pad) => {
        const text = pad + parts.map(([n, f, u]) => `${n + f}${u}`).join('') + pad;
        const want = Math.round(parts.reduce((sum, [n, f, u]) => sum + (n + f) * UNITS[u], 0));
        const got = parse(text);
        if (want <= MAX_TIMER_MS) expect(got).toBe(want);
        else expect(got instanceof CliError && got.message).toMatch(/too long/);
      }),
      { numRuns: 500 },
    );
  });

  it('never throws anything but a CliError; a result is a whole number of ms a timer can wait (property)', () => {
    const durationish = fc
      .array(fc.oneof(fc.constantFrom('ms', 's', 'm', 'h', 'd', 'us', '.', '-', '+', ' ', 'e'), fc.nat().map(String), fc.double().map(String)), { maxLength: 6 })
      .map((p) => p.join(''));
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 30 }), durationish), (text) => {
        const got = parse(text);
        if (got instanceof CliError) {
          expect(got.message).toMatch(/duration/);
          return;
        }
        expect(Number.isInteger(got)).toBe(true);
        expect(got).toBeGreaterThanOrEqual(0);
        expect(got).toBeLessThanOrEqual(MAX_TIMER_MS);
      }),
      { numRuns: 1000 },
    );
  });
});
