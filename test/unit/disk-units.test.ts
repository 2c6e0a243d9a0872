import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { formatBytes, formatPercent, formatProgress, formatSpeed, parsePercent } from '../../src/disk/units.ts';

const Ki = 1024;
const Mi = Ki * Ki;
const Gi = Mi * Ki;

describe('formatBytes (the platform humanize rule)', () => {
  it.each([
    [0, '0B'],
    [1, '1B'],
    [9, '9B'],
    [512, '512B'],
    [1023, '1023B'],
    [Ki, '1Ki'],
    [2 * Ki - 1, '2Ki'],
    [2 * Ki, '2Ki'],
    [2 * Ki + 1, '2Ki'],
    [1536, '1.5Ki'],
    [2 * Mi - 1, '2Mi'],
    [2 * Mi + 1, '2Mi'],
    [Math.round(285.9 * Mi), '285.9Mi'],
    [299_800_000, '285.9Mi'],
    [2.5 * Gi, '2.5Gi'],
    [10 * Gi, '10Gi'],
    [Mi - 1, '1024Ki'], // rounds up within the unit, as upstream does
    [3 * 1024 * Gi, '3Ti'],
  ])('%d -> %s', (n, s) => {
    expect(formatBytes(n)).toBe(s);
  });

  it('gives 0B for negative or non-finite values and floors fractions', () => {
    expect(formatBytes(-5)).toBe('0B');
    expect(formatBytes(Number.NaN)).toBe('0B');
    expect(formatBytes(Number.POSITIVE_INFINITY)).toBe('0B');
    expect(formatBytes(7.9)).toBe('7B');
  });

  it('always matches <number><unit> with at most one decimal', () => {
    fc.assert(
      fc.property(fc.double({ min: -1e3, max: 2 ** 62, noNaN: true }), (n) => {
        expect(formatBytes(n)).toMatch(/^\d+(\.\d)?(B|Ki|Mi|Gi|Ti|Pi|Ei)$/);
      }),
    );
  });
});

describe('formatSpeed', () => {
  it('appends /s', () => {
    expect(formatSpeed(2.1 * Mi)).toBe('2.1Mi/s');
    expect(formatSpeed(0)).toBe('0B/s');
  });
});

describe('formatPercent and formatProgress', () => {
  it('prints 0% and 100% without decimals, everything else with one', () => {
    expect(formatPercent(0)).toBe('0%');
    expect(formatPercent(100)).toBe('100%');
    expect(formatPercent(50)).toBe('50.0%');
    expect(formatPercent(28.2)).toBe('28.2%');
  });

  it('is the share of bytes read, truncated to one decimal', () => {
    expect(formatProgress(282, 1000)).toBe('28.2%');
    expect(formatProgress(2829, 10000)).toBe('28.2%');
    expect(formatProgress(1, 3)).toBe('33.3%');
    expect(formatProgress(2, 3)).toBe('66.6%');
    expect(formatProgress(500, 1000)).toBe('50.0%');
  });

  it('is 0% before the total is known, and 0.0% once bytes are counted (as upstream shows)', () => {
    expect(formatProgress(123, undefined)).toBe('0%');
    expect(formatProgress(123, 0)).toBe('0%');
    expect(formatProgress(0, 1000)).toBe('0.0%');
    expect(formatProgress(1, 10_000)).toBe('0.0%');
  });

  it('shows 100% only once Ready; all bytes read is 100.0% until then', () => {
    expect(formatProgress(1000, 1000)).toBe('100.0%');
    expect(formatProgress(9999, 10000)).toBe('99.9%');
    expect(formatProgress(2000, 1000)).toBe('100.0%');
    expect(formatProgress(1000, 1000, { ready: true })).toBe('100%');
    expect(formatProgress(0, undefined, { ready: true })).toBe('100%');
  });

  it('never decreases as bytes arrive', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 2 ** 40 }), fc.array(fc.nat(), { maxLength: 20 }), (total, steps) => {
        let done = 0;
        let last = -1;
        for (const s of steps) {
          done += s;
          const p = parsePercent(formatProgress(done, total));
          expect(p).toBeDefined();
          expect(p!).toBeGreaterThanOrEqual(last);
          last = p!;
        }
      }),
    );
  });

  it('parsePercent reads status strings back', () => {
    expect(parsePercent('28.2%')).toBe(28.2);
    expect(parsePercent('0%')).toBe(0);
    expect(parsePercent('100%')).toBe(100);
    expect(parsePercent('N/A')).toBeUndefined();
    expect(parsePercent('101%')).toBeUndefined();
  });

  it('parsePercent reads back every progress string formatProgress prints (property)', () => {
    fc.assert(
      fc.property(fc.nat({ max: 2 ** 40 }), fc.integer({ min: 1, max: 2 ** 40 }), fc.boolean(), (done, total, ready) => {
        const text = formatProgress(done, total, { ready });
        const p = parsePercent(text);
        expect(p).toBeDefined();
        expect(`${p}`).toBe(text.replace(/%$/, '').replace(/\.0$/, ''));
        if (!ready) expect(p!).toBeCloseTo(Math.min(100, Math.floor((done * 1000) / total) / 10), 5);
      }),
      { numRuns: 500 },
    );
  });

  it('parsePercent never throws and gives only a number in [0, 100] or undefined (property)', () => {
    const percentish = fc
      .tuple(fc.constantFrom('', ' ', '-', '+', '.'), fc.oneof(fc.nat().map(String), fc.double().map(String), fc.constant('9'.repeat(400))), fc.constantFrom('%', ' %', '', '%%', '% '))
      .map(([a, b, c]) => `${a}${b}${c}`);
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 20 }), percentish), (s) => {
        const p = parsePercent(s);
        if (p === undefined) return;
        expect(Number.isFinite(p)).toBe(true);
        expect(p).toBeGreaterThanOrEqual(0);
        expect(p).toBeLessThanOrEqual(100);
        expect(s).toMatch(/%\s*$/);
      }),
      { numRuns: 500 },
    );
  });
});
