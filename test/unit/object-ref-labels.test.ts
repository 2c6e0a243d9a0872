/**
 * Labels of a source image's config as an ObjectRef import reads them (labelsOf, carriedLabels), and the DVCR
 * config labels a commit writes (buildConfig) read back. The config is outside input: another writer's, or
 * anything the registry hands back. Properties with a bounded number of runs.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { buildConfig, Labels } from '../../src/dvcr/image.ts';
import { carriedLabels, labelsOf } from '../../src/pipeline/object-ref.ts';

const RUNS = { numRuns: 300 };
const STANDARD = [Labels.size, Labels.virtualSize, Labels.format, Labels.erofs] as string[];
const LAYER = { digest: `sha256:${'b'.repeat(64)}`, size: 1024 };

const json = (v: unknown): Buffer => Buffer.from(JSON.stringify(v));

/** Label keys: arbitrary, the standard ones, ours, and names that are special to JavaScript objects. */
const labelKey = fc.oneof(
  fc.string({ maxLength: 12 }),
  fc.constantFrom(...STANDARD, Labels.originalFormat, '__proto__', 'constructor', 'toString', 'hasOwnProperty', ''),
);
/** Label values: mostly strings, often not. */
const labelValue = fc.oneof(fc.string({ maxLength: 12 }), fc.jsonValue({ maxDepth: 2 }));
/** A Labels object parsed from JSON text, so `__proto__` is an own key as it is in a real config. */
const labelsObject = fc.dictionary(labelKey, labelValue, { maxKeys: 8 }).map((d) => JSON.parse(JSON.stringify(d)) as Record<string, unknown>);

function stringEntries(labels: Record<string, unknown>): Record<string, string> {
  return Object.fromEntries(Object.entries(labels).filter((e): e is [string, string] => typeof e[1] === 'string'));
}

describe('labelsOf', () => {
  it('reads string labels and ignores the rest', () => {
    expect(labelsOf(json({ config: { Labels: { a: 'b', n: 1, o: {}, nil: null, t: true } } }))).toEqual({ a: 'b' });
    expect(labelsOf(json({ config: { Labels: null } }))).toEqual({});
    expect(labelsOf(json({ config: {} }))).toEqual({});
    expect(labelsOf(json(null))).toEqual({});
    expect(labelsOf(Buffer.from('{"config":'))).toEqual({});
  });

  it('takes nothing from a Labels list (its indexes are not label names)', () => {
    expect(labelsOf(json({ config: { Labels: ['x', 'y'] } }))).toEqual({});
  });

  it('keeps a "__proto__" label as a plain own entry, without touching any prototype', () => {
    const l = labelsOf(Buffer.from('{"config":{"Labels":{"__proto__":"x","a":"b"}}}'));
    expect(Object.getPrototypeOf(l)).toBe(Object.prototype);
    expect(Object.entries(l)).toEqual([
      ['__proto__', 'x'],
      ['a', 'b'],
    ]);
  });

  it('never throws on arbitrary bytes, and gives only string -> string labels (property)', () => {
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)), fc.string({ maxLength: 64 }).map((s) => Buffer.from(s))), (buf) => {
        const l = labelsOf(buf);
        expect(Object.getPrototypeOf(l)).toBe(Object.prototype);
        for (const [k, v] of Object.entries(l)) {
          expect(typeof k).toBe('string');
          expect(typeof v).toBe('string');
        }
      }),
      { numRuns: 500 },
    );
  });

  it('never throws on arbitrary JSON; a Labels mapping gives exactly its string-valued entries (property)', () => {
    const config = fc.oneof(
      fc.jsonValue({ maxDepth: 4 }),
      fc.record({ config: fc.record({ Labels: fc.oneof(labelsObject, fc.jsonValue({ maxDepth: 2 })) }) }),
    );
    fc.assert(
      fc.property(config, (cfg) => {
        const l = labelsOf(json(cfg));
        const raw = (cfg as { config?: { Labels?: unknown } } | null)?.config?.Labels;
        if (typeof raw === 'object' && raw !== null && !Array.isArray(raw)) {
          expect(l).toEqual(stringEntries(raw as Record<string, unknown>));
        } else {
          expect(l).toEqual({});
        }
      }),
      { numRuns: 500 },
    );
  });
});

describe('carriedLabels and the labels a commit writes', () => {
  it('carries over every string label but the standard ones (property)', () => {
    fc.assert(
      fc.property(labelsObject, (labels) => {
        const carried = carriedLabels(json({ config: { Labels: labels } }));
        for (const k of STANDARD) expect(Object.hasOwn(carried, k), k).toBe(false);
        const want = Object.fromEntries(Object.entries(stringEntries(labels)).filter(([k]) => !STANDARD.includes(k)));
        expect(carried).toEqual(want);
      }),
      RUNS,
    );
  });

  it('a copy states its own facts whatever the source labels said, and a copy of a copy carries the same labels (property)', () => {
    const facts = fc.record({
      storedBytes: fc.nat({ max: Number.MAX_SAFE_INTEGER }),
      virtualSize: fc.nat({ max: Number.MAX_SAFE_INTEGER }),
      format: fc.constantFrom('qcow2', 'raw', 'vmdk', 'vdi', 'vhd', 'vhdx', 'iso'),
    });
    fc.assert(
      fc.property(labelsObject, facts, (source, f) => {
        const extraLabels = carriedLabels(json({ config: { Labels: source } }));
        const written = buildConfig(LAYER, { ...f, extraLabels });
        const back = labelsOf(written);
        // The standard labels are the copy's facts, read back as the numbers they were.
        expect(back[Labels.format]).toBe(f.format);
        expect(back[Labels.erofs]).toBe('true');
        expect(Number(back[Labels.size])).toBe(f.storedBytes);
        expect(Number(back[Labels.virtualSize])).toBe(f.virtualSize);
        expect(back[Labels.size]).toMatch(/^\d+$/);
        // Everything else is what was carried, and copying again carries the same.
        expect(carriedLabels(written)).toEqual(extraLabels);
      }),
      RUNS,
    );
  });
});
