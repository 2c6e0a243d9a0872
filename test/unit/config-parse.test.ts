/**
 * Size and duration settings (MAX_VIRTUAL_SIZE, PROBE_SAMPLE_SIZE, IDLE_TIMEOUT, ...) as loadConfig reads them
 * from the environment or the config file: examples, then properties with a bounded number of runs.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { ConfigError, loadConfig, MAX_DURATION_MS, type Config } from '../../src/config.ts';
import { formatBytes } from '../../src/disk/units.ts';

const RUNS = { numRuns: 300 };

const SIZE_VARS = [
  ['MAX_VIRTUAL_SIZE', 'maxVirtualSize'],
  ['PROBE_SAMPLE_SIZE', 'probeSampleSize'],
] as const satisfies ReadonlyArray<readonly [string, keyof Config]>;

const DURATION_VARS = [
  ['UPLOAD_TIMEOUT', 'uploadTimeout'],
  ['JOB_LOCK_DURATION', 'jobLockDuration'],
  ['IDLE_TIMEOUT', 'idleTimeout'],
  ['RATE_LIMIT_WAIT', 'rateLimitWait'],
  ['SHUTDOWN_DEADLINE', 'shutdownDeadline'],
  ['CONVERT_TIMEOUT', 'convertTimeout'],
  ['SOURCE_WAIT_INTERVAL', 'sourceWaitInterval'],
] as const satisfies ReadonlyArray<readonly [string, keyof Config]>;

const SIZE_UNITS = { '': 1, k: 1e3, Ki: 1024, M: 1e6, Mi: 1024 ** 2, G: 1e9, Gi: 1024 ** 3, T: 1e12, Ti: 1024 ** 4, P: 1e15, Pi: 1024 ** 5 } as const;
const DURATION_UNITS = { '': 1, ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const;

/** What loadConfig did with one variable: the parsed value, or the ConfigError (anything else fails the test). */
function load(env: Record<string, string>, field: keyof Config): { value: unknown } | { error: ConfigError } {
  try {
    return { value: loadConfig(env)[field] };
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return { error: e as ConfigError };
  }
}

/** Same, through the config file's values (YAML numbers arrive as numbers). */
function loadOverride(field: keyof Config, v: unknown): { value: unknown } | { error: ConfigError } {
  try {
    return { value: loadConfig({}, { [field]: v })[field] };
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return { error: e as ConfigError };
  }
}

const isSafeSize = (v: unknown): boolean => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isSafeDuration = (v: unknown): boolean => typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= MAX_DURATION_MS;

/** Text that looks like a number with a unit more often than plain fc.string() does. */
const numberish = fc.oneof(
  fc.string({ maxLength: 30 }),
  fc
    .tuple(
      fc.constantFrom('', '-', '+', ' ', '0x', '.'),
      fc.oneof(fc.nat().map(String), fc.double().map(String), fc.constantFrom('1e999', 'Infinity', 'NaN', '9'.repeat(400), '1.', '.5')),
      fc.constantFrom('', ' ', 'B', 'k', 'K', 'Ki', 'KiB', 'Mi', 'G', 'Gi', 'T', 'Ti', 'Pi', 'E', 'ms', 's', 'm', 'h', 'd', 'µs', ' Gi '),
    )
    .map(([a, b, c]) => `${a}${b}${c}`),
);

describe('sizes (MAX_VIRTUAL_SIZE, PROBE_SAMPLE_SIZE)', () => {
  it.each([
    ['512Mi', 512 * 1024 ** 2],
    ['20Gi', 20 * 1024 ** 3],
    ['20GiB', 20 * 1024 ** 3],
    ['1T', 1e12],
    ['1.5Ki', 1536],
    ['64 Mi', 64 * 1024 ** 2],
    ['  7  ', 7],
    ['100B', 100],
    ['9007199254740991', Number.MAX_SAFE_INTEGER],
    ['1.5Pi', 1.5 * 1024 ** 5],
  ])('%j -> %d', (text, bytes) => {
    expect(loadConfig({ MAX_VIRTUAL_SIZE: text }).maxVirtualSize).toBe(bytes);
  });

  it.each([
    ['-1', /is not a size/],
    ['1e999', /is not a size/],
    ['Infinity', /is not a size/],
    ['NaN', /is not a size/],
    ['12Ei', /is not a size/],
    ['1 0Gi', /is not a size/],
    ['   ', /is not a size/],
    ['9007199254740992', /out of range/],
    ['8Pi', /out of range/],
    ['8192Ti', /out of range/],
    ['99999999999999999999999999Gi', /out of range/],
  ])('refuses %j naming the variable', (text, why) => {
    expect(() => loadConfig({ MAX_VIRTUAL_SIZE: text })).toThrow(ConfigError);
    expect(() => loadConfig({ MAX_VIRTUAL_SIZE: text })).toThrow(/MAX_VIRTUAL_SIZE: /);
    expect(() => loadConfig({ MAX_VIRTUAL_SIZE: text })).toThrow(why);
  });

  it('refuses negative, fractional-negative and non-finite numbers from the config file', () => {
    for (const v of [-1, -0.4, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 2 ** 60]) {
      expect(() => loadConfig({}, { maxVirtualSize: v }), String(v)).toThrow(/MAX_VIRTUAL_SIZE: /);
    }
    expect(loadConfig({}, { maxVirtualSize: 1.6 }).maxVirtualSize).toBe(2);
    // 400 digits: Number() makes Infinity of them.
    expect(() => loadConfig({ MAX_VIRTUAL_SIZE: '9'.repeat(400) })).toThrow(/MAX_VIRTUAL_SIZE: .*out of range/);
    expect(() => loadConfig({ IDLE_TIMEOUT: `${'9'.repeat(400)}ms` })).toThrow(/IDLE_TIMEOUT: .*out of range/);
  });

  it('any formatted valid size round-trips to its byte count (property)', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...SIZE_VARS),
        fc.nat({ max: 1e13 }),
        fc.constantFrom(0, 0.5, 0.25),
        fc.constantFrom(...(Object.keys(SIZE_UNITS) as Array<keyof typeof SIZE_UNITS>)),
        fc.constantFrom('', ' '),
        fc.constantFrom('', 'B'),
        ([name, field], n, frac, unit, space, b) => {
          const text = `${n + frac}${space}${unit}${b}`;
          const want = Math.round((n + frac) * SIZE_UNITS[unit]);
          const r = load({ [name]: text }, field);
          if (Number.isSafeInteger(want)) expect(r).toEqual({ value: want });
          else {
            expect('error' in r && r.error.message).toMatch(new RegExp(`${name}: .*out of range`));
          }
        },
      ),
      RUNS,
    );
  });

  it('reads back what formatBytes prints, to within its rounding (property)', () => {
    fc.assert(
      fc.property(fc.oneof(fc.integer({ min: 0, max: 2 ** 20 }), fc.integer({ min: 0, max: 2 ** 52 })), (n) => {
        const v = loadConfig({ PROBE_SAMPLE_SIZE: formatBytes(n) }).probeSampleSize;
        expect(Math.abs(v - n)).toBeLessThanOrEqual(Math.max(1, n * 0.05));
      }),
      RUNS,
    );
  });

  it('arbitrary text is a safe byte count or a ConfigError naming the variable, never NaN/negative/Infinity (property)', () => {
    fc.assert(
      fc.property(fc.constantFrom(...SIZE_VARS), numberish, ([name, field], text) => {
        const r = load({ [name]: text }, field);
        if ('value' in r) expect(isSafeSize(r.value), `${JSON.stringify(text)} -> ${String(r.value)}`).toBe(true);
        else expect(r.error.message).toContain(`${name}: `);
      }),
      { numRuns: 500 },
    );
  });

  it('arbitrary config-file values are a safe byte count or a ConfigError naming the variable (property)', () => {
    fc.assert(
      fc.property(fc.constantFrom(...SIZE_VARS), fc.oneof(fc.double(), fc.integer(), fc.anything({ maxDepth: 2 })), ([name, field], v) => {
        const r = loadOverride(field, v);
        if ('value' in r) expect(isSafeSize(r.value), `${String(v)} -> ${String(r.value)}`).toBe(true);
        else expect(r.error.message).toContain(`${name}: `);
      }),
      RUNS,
    );
  });
});

describe('durations (IDLE_TIMEOUT, JOB_LOCK_DURATION, ...)', () => {
  it.each([
    ['500ms', 500],
    ['30s', 30_000],
    ['10m', 600_000],
    ['1h', 3_600_000],
    ['1.5s', 1500],
    ['250', 250],
    [' 2m ', 120_000],
    ['0', 0],
    ['596h', 596 * 3_600_000],
  ])('%j -> %d', (text, ms) => {
    expect(loadConfig({ IDLE_TIMEOUT: text }).idleTimeout).toBe(ms);
  });

  it.each([
    ['-1s', /is not a duration/],
    ['1e3', /is not a duration/],
    ['10 m', /is not a duration/],
    ['1d', /is not a duration/],
    ['1h30m', /is not a duration/],
    ['597h', /out of range/],
    ['1000h', /out of range/],
    ['99999999999999999999999999s', /out of range/],
  ])('refuses %j naming the variable', (text, why) => {
    expect(() => loadConfig({ IDLE_TIMEOUT: text })).toThrow(/IDLE_TIMEOUT: /);
    expect(() => loadConfig({ IDLE_TIMEOUT: text })).toThrow(why);
  });

  it('refuses negative and non-finite numbers from the config file', () => {
    for (const v of [-1, Number.NaN, Number.POSITIVE_INFINITY, MAX_DURATION_MS + 1]) {
      expect(() => loadConfig({}, { jobLockDuration: v }), String(v)).toThrow(/JOB_LOCK_DURATION: /);
    }
  });

  it('any formatted valid duration round-trips to its milliseconds (property)', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...DURATION_VARS),
        fc.nat({ max: 1e7 }),
        fc.constantFrom(0, 0.5),
        fc.constantFrom(...(Object.keys(DURATION_UNITS) as Array<keyof typeof DURATION_UNITS>)),
        ([name, field], n, frac, unit) => {
          const want = Math.round((n + frac) * DURATION_UNITS[unit]);
          const r = load({ [name]: `${n + frac}${unit}` }, field);
          if (want <= MAX_DURATION_MS) expect(r).toEqual({ value: want });
          else expect('error' in r && r.error.message).toMatch(new RegExp(`${name}: .*out of range`));
        },
      ),
      RUNS,
    );
  });

  it('arbitrary text is a timer-safe millisecond count or a ConfigError naming the variable (property)', () => {
    fc.assert(
      fc.property(fc.constantFrom(...DURATION_VARS), numberish, ([name, field], text) => {
        const r = load({ [name]: text }, field);
        if ('value' in r) expect(isSafeDuration(r.value), `${JSON.stringify(text)} -> ${String(r.value)}`).toBe(true);
        else expect(r.error.message).toContain(`${name}: `);
      }),
      { numRuns: 500 },
    );
  });

  it('arbitrary config-file values are a timer-safe millisecond count or a ConfigError naming the variable (property)', () => {
    fc.assert(
      fc.property(fc.constantFrom(...DURATION_VARS), fc.oneof(fc.double(), fc.integer(), fc.anything({ maxDepth: 2 })), ([name, field], v) => {
        const r = loadOverride(field, v);
        if ('value' in r) expect(isSafeDuration(r.value), `${String(v)} -> ${String(r.value)}`).toBe(true);
        else expect(r.error.message).toContain(`${name}: `);
      }),
      RUNS,
    );
  });
});
