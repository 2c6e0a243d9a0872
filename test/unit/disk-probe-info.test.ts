/**
 * Reading `qemu-img info --output=json` (readQemuImgInfo): qemu-img describes a file anyone may have crafted, so
 * its answer is outside input. Properties with a bounded number of runs; no qemu-img is run here.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { DiskError } from '../../src/disk/errors.ts';
import { qemuFormatName, type DiskFormat } from '../../src/disk/format.ts';
import { readQemuImgInfo } from '../../src/disk/probe.ts';

const RUNS = { numRuns: 300 };
const PATH = '/work/probe/disk.img';
const NAME = 'disk.img';
const FORMATS: DiskFormat[] = ['qcow2', 'raw', 'vmdk', 'vdi', 'vhd', 'vhdx', 'iso'];

/** Runs readQemuImgInfo; anything thrown but a DiskError fails the test. */
function read(stdout: string, format: DiskFormat, max?: number): ReturnType<typeof readQemuImgInfo> | DiskError {
  try {
    return readQemuImgInfo(stdout, PATH, NAME, format, max);
  } catch (e) {
    expect(e).toBeInstanceOf(DiskError);
    return e as DiskError;
  }
}

const size = fc.oneof(fc.nat({ max: 1 << 30 }), fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }));

/** A clean answer for `format`: what qemu-img prints for a self-contained, readable image. */
const cleanInfo = fc.record({
  format: fc.constantFrom(...FORMATS),
  virtualSize: size,
  actualSize: fc.option(size, { nil: undefined }),
  dirty: fc.option(fc.boolean(), { nil: undefined }),
  clusterSize: fc.option(fc.constantFrom(512, 65536, 2 ** 21), { nil: undefined }),
});
function cleanJson(c: { format: DiskFormat; virtualSize: number; actualSize?: number; dirty?: boolean; clusterSize?: number }): Record<string, unknown> {
  return {
    'virtual-size': c.virtualSize,
    filename: PATH,
    format: qemuFormatName(c.format),
    ...(c.actualSize === undefined ? {} : { 'actual-size': c.actualSize }),
    ...(c.dirty === undefined ? {} : { 'dirty-flag': c.dirty }),
    ...(c.clusterSize === undefined ? {} : { 'cluster-size': c.clusterSize }),
  };
}

describe('readQemuImgInfo', () => {
  it('never throws anything but DiskError on arbitrary text or JSON (property)', () => {
    const anyJson = fc.oneof(
      fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
      fc.string({ maxLength: 60 }),
      // Near misses: a clean answer with one field replaced by anything.
      fc
        .tuple(cleanInfo, fc.constantFrom('virtual-size', 'filename', 'format', 'format-specific', 'encrypted', 'backing-filename'), fc.jsonValue({ maxDepth: 3 }))
        .map(([c, k, v]) => JSON.stringify({ ...cleanJson(c), [k]: v })),
    );
    fc.assert(
      fc.property(anyJson, fc.constantFrom(...FORMATS), fc.option(size, { nil: undefined }), (text, format, max) => {
        const r = read(text, format, max);
        if (!(r instanceof DiskError)) {
          expect(Number.isSafeInteger(r.virtualSize) && r.virtualSize >= 0).toBe(true);
          if (max !== undefined) expect(r.virtualSize).toBeLessThanOrEqual(max);
          expect(r.format).toBe(format);
        }
      }),
      { numRuns: 1000 },
    );
  });

  it('reads a clean answer: its virtual size, actual size and dirty flag (property)', () => {
    fc.assert(
      fc.property(cleanInfo, (c) => {
        const r = read(JSON.stringify(cleanJson(c)), c.format);
        expect(r).not.toBeInstanceOf(DiskError);
        expect(r).toMatchObject({ format: c.format, virtualSize: c.virtualSize, actualSize: c.actualSize, dirty: c.dirty ?? false });
      }),
      RUNS,
    );
  });

  it('refuses any backing file, external data file, encryption or corruption, permanently (property)', () => {
    const hazard = fc.oneof(
      fc.string({ maxLength: 20 }).map((f) => ({ extra: { 'backing-filename': f }, reason: 'BackingFile' })),
      fc.string({ maxLength: 20 }).map((f) => ({ extra: { 'full-backing-filename': f }, reason: 'BackingFile' })),
      fc.string({ maxLength: 20 }).map((f) => ({ extra: { 'format-specific': { type: 'qcow2', data: { 'data-file': f } } }, reason: 'ExternalDataFile' })),
      fc.constant({ extra: { encrypted: true }, reason: 'Encrypted' }),
      fc.constant({ extra: { 'format-specific': { type: 'qcow2', data: { corrupt: true } } }, reason: 'CorruptImage' }),
    );
    fc.assert(
      fc.property(cleanInfo, hazard, (c, h) => {
        const r = read(JSON.stringify({ ...cleanJson(c), ...h.extra }), c.format);
        expect(r).toBeInstanceOf(DiskError);
        expect((r as DiskError).reason).toBe(h.reason);
        expect((r as DiskError).permanent).toBe(true);
      }),
      RUNS,
    );
  });

  it('refuses a VMDK extent anywhere but the probed file itself (property)', () => {
    // Paths built from these parts never name /work/probe/disk.img.
    const part = fc.constantFrom('..', '.', 'probe', 'other.vmdk', 'disk-flat.vmdk', 'disk.img.d', 'etc', 'passwd', '');
    const elsewhere = fc.tuple(fc.boolean(), fc.array(part, { minLength: 1, maxLength: 5 })).map(([abs, p]) => `${abs ? '/' : ''}${p.join('/')}`);
    const self = fc.constantFrom('disk.img', './disk.img', PATH, '../probe/disk.img', '/work/./probe/disk.img');
    fc.assert(
      fc.property(fc.array(fc.oneof(elsewhere, self), { minLength: 1, maxLength: 4 }), size, (names, vs) => {
        const info = {
          ...cleanJson({ format: 'vmdk', virtualSize: vs }),
          'format-specific': { type: 'vmdk', data: { 'create-type': 'monolithicSparse', extents: names.map((filename) => ({ filename })) } },
        };
        const r = read(JSON.stringify(info), 'vmdk');
        const outside = names.some((n) => !['disk.img', './disk.img', PATH, '../probe/disk.img', '/work/./probe/disk.img'].includes(n));
        if (outside) {
          expect(r).toBeInstanceOf(DiskError);
          expect((r as DiskError).reason).toBe('ExternalExtent');
        } else {
          expect(r).not.toBeInstanceOf(DiskError);
        }
      }),
      RUNS,
    );
  });

  it('refuses a format other than the one asked for (property)', () => {
    fc.assert(
      fc.property(cleanInfo, fc.constantFrom(...FORMATS), (c, asked) => {
        const r = read(JSON.stringify(cleanJson(c)), asked);
        if (qemuFormatName(asked) === qemuFormatName(c.format)) expect(r).not.toBeInstanceOf(DiskError);
        else expect(r instanceof DiskError && r.reason).toBe('ProbeFailed');
      }),
      RUNS,
    );
  });

  it('a virtual size over the maximum, or past 2^53 with no maximum, is refused for good', () => {
    const over = read(JSON.stringify(cleanJson({ format: 'qcow2', virtualSize: 1025 })), 'qcow2', 1024);
    expect(over instanceof DiskError && [over.reason, over.permanent]).toEqual(['VirtualSizeTooLarge', true]);
    for (const text of ['{"virtual-size": 4611686018427387904', '{"virtual-size": 9007199254740993']) {
      const r = read(`${text}, "filename": "${PATH}", "format": "qcow2"}`, 'qcow2');
      expect(r instanceof DiskError && [r.reason, r.permanent], text).toEqual(['VirtualSizeTooLarge', true]);
    }
  });

  it('an answer that is not JSON, or a virtual size that is negative, fractional or 1e999, is a ProbeFailed', () => {
    for (const vs of ['-1', '1.5', '1e999', '"10"', 'null']) {
      const r = read(`{"virtual-size": ${vs}, "filename": "${PATH}", "format": "raw"}`, 'raw');
      expect(r instanceof DiskError && r.reason, vs).toBe('ProbeFailed');
    }
    expect((read('qemu-img: Could not open', 'raw') as DiskError).reason).toBe('ProbeFailed');
  });
});
