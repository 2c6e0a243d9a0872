/**
 * Format detection on real images made by qemu-img and xorriso, plus properties on arbitrary bytes.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeLuksQcow2 } from '../helpers/fixtures.ts';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  assertSafeDisk,
  detectFormat,
  detectVhdFooter,
  FORMAT_HEAD_BYTES,
  qemuFormatName,
  type DiskInfo,
} from '../../src/disk/format.ts';
import { DiskError } from '../../src/disk/errors.ts';

const MiB = 1024 * 1024;
let dir: string;

function qemuImg(...args: string[]): void {
  execFileSync('qemu-img', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

function readRange(file: string, at: number, n: number): Buffer {
  const fd = openSync(join(dir, file), 'r');
  try {
    const buf = Buffer.alloc(n);
    const got = readSync(fd, buf, 0, n, at);
    return buf.subarray(0, got);
  } finally {
    closeSync(fd);
  }
}

function head(file: string, n = FORMAT_HEAD_BYTES): Buffer {
  return readRange(file, 0, n);
}

function tail(file: string, n = 512): Buffer {
  const size = statSync(join(dir, file)).size;
  return readRange(file, Math.max(0, size - n), n);
}

function detect(file: string): DiskInfo {
  return detectFormat(head(file), { tail: tail(file) });
}

function rejection(info: DiskInfo, max?: number): DiskError {
  try {
    assertSafeDisk(info, { maxVirtualSize: max });
  } catch (e) {
    expect(e).toBeInstanceOf(DiskError);
    return e as DiskError;
  }
  throw new Error('expected assertSafeDisk to throw');
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'disk-format-'));
  // 4 MiB of non-zero data at the start so converted images hold real clusters.
  const raw = Buffer.alloc(4 * MiB);
  for (let i = 0; i < raw.length; i += 4096) raw.writeUInt32LE(i, i);
  raw[510] = 0x55;
  raw[511] = 0xaa; // an MBR boot signature, like a real raw disk
  writeFileSync(join(dir, 'disk.raw'), raw);
  qemuImg('create', '-q', '-f', 'qcow2', 'v3.qcow2', '64M');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', 'v2.qcow2', '128M');
  qemuImg('create', '-q', '-f', 'qcow2', '-b', 'v3.qcow2', '-F', 'qcow2', 'overlay.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'data_file=data.raw', 'datafile.qcow2', '64M');
  makeLuksQcow2(join(dir, 'luks.qcow2'));
  qemuImg('convert', '-q', '-f', 'raw', '-O', 'qcow2', 'disk.raw', 'converted.qcow2');
  qemuImg('create', '-q', '-f', 'vmdk', 'sparse.vmdk', '64M');
  qemuImg('convert', '-q', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=streamOptimized', 'disk.raw', 'stream.vmdk');
  qemuImg('create', '-q', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', 'flat.vmdk', '64M');
  qemuImg('create', '-q', '-f', 'vmdk', '-o', 'subformat=twoGbMaxExtentSparse', 'split.vmdk', '64M');
  qemuImg('create', '-q', '-f', 'vmdk', '-b', 'sparse.vmdk', '-F', 'vmdk', 'child.vmdk');
  qemuImg('create', '-q', '-f', 'vdi', 'disk.vdi', '96M');
  qemuImg('create', '-q', '-f', 'vdi', '-o', 'static=on', 'static.vdi', '8M');
  qemuImg('create', '-q', '-f', 'vpc', 'dynamic.vhd', '64M');
  qemuImg('create', '-q', '-f', 'vpc', '-o', 'subformat=fixed', 'fixed.vhd', '16M');
  qemuImg('create', '-q', '-f', 'vhdx', 'disk.vhdx', '64M');
  mkdirSync(join(dir, 'iso'));
  writeFileSync(join(dir, 'iso', 'hello.txt'), 'hello\n');
  execFileSync('xorriso', ['-as', 'mkisofs', '-quiet', '-V', 'TEST', '-o', join(dir, 'disk.iso'), join(dir, 'iso')], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('detectFormat on real images', () => {
  it('qcow2 v3: version 3, virtual size, no hazards', () => {
    const info = detect('v3.qcow2');
    expect(info).toMatchObject({ format: 'qcow2', version: 3, virtualSize: 64 * MiB, hazards: [] });
    expect(() => assertSafeDisk(info)).not.toThrow();
  });

  it('qcow2 v2 (compat=0.10)', () => {
    expect(detect('v2.qcow2')).toMatchObject({ format: 'qcow2', version: 2, virtualSize: 128 * MiB, hazards: [] });
  });

  it('qcow2 converted from raw keeps the raw size as virtual size', () => {
    expect(detect('converted.qcow2')).toMatchObject({ format: 'qcow2', virtualSize: 4 * MiB, hazards: [] });
  });

  it('qcow2 with a backing file: hazard with its name, rejected as BackingFile', () => {
    const info = detect('overlay.qcow2');
    expect(info.hazards).toEqual([{ kind: 'backing-file', name: 'v3.qcow2' }]);
    const e = rejection(info);
    expect(e.reason).toBe('BackingFile');
    expect(e.permanent).toBe(true);
    expect(e.message).toContain('"v3.qcow2"');
    expect(e.message).toContain('qemu-img convert');
  });

  it('qcow2 with an external data file (incompatible feature bit 2): rejected as ExternalDataFile', () => {
    const info = detect('datafile.qcow2');
    expect(info.hazards).toEqual([{ kind: 'external-data-file', name: 'data.raw' }]);
    expect(rejection(info).reason).toBe('ExternalDataFile');
  });

  it('qcow2 with LUKS encryption: rejected as Encrypted', () => {
    const info = detect('luks.qcow2');
    expect(info.hazards).toEqual([{ kind: 'encrypted' }]);
    expect(rejection(info).reason).toBe('Encrypted');
  });

  it('raw: no virtual size from the header (the byte length is the size)', () => {
    expect(detect('disk.raw')).toEqual({ format: 'raw', virtualSize: undefined, hazards: [] });
  });

  it('vmdk monolithicSparse: KDMV capacity', () => {
    expect(detect('sparse.vmdk')).toMatchObject({
      format: 'vmdk',
      subformat: 'monolithicSparse',
      virtualSize: 64 * MiB,
      hazards: [],
    });
  });

  it('vmdk streamOptimized: compressed grains recognised', () => {
    const info = detect('stream.vmdk');
    expect(info).toMatchObject({ format: 'vmdk', subformat: 'streamOptimized', virtualSize: 4 * MiB, hazards: [] });
    // qemu-img writes the grain directory at the start; VMware's tools put it in a footer (see the probe tests).
    expect(info.footerAtEnd).toBeUndefined();
  });

  it('vmdk with a parent (parentFileNameHint in the embedded descriptor): BackingFile', () => {
    const info = detect('child.vmdk');
    expect(info.hazards).toEqual([{ kind: 'backing-file', name: 'sparse.vmdk' }]);
    expect(rejection(info).reason).toBe('BackingFile');
  });

  it('vmdk descriptor-only files (flat and split) are detected and rejected as ExternalExtent', () => {
    for (const [file, extent, createType] of [
      ['flat.vmdk', 'flat-flat.vmdk', 'monolithicFlat'],
      ['split.vmdk', 'split-s001.vmdk', 'twoGbMaxExtentSparse'],
    ] as const) {
      const info = detect(file);
      expect(info).toMatchObject({ format: 'vmdk', subformat: createType, hazards: [{ kind: 'external-extent', name: extent }] });
      const e = rejection(info);
      expect(e.reason).toBe('ExternalExtent');
      expect(e.message).toContain(extent);
    }
  });

  it('a descriptor with a BOM and CRLF line ends is still a descriptor', () => {
    const text = head('flat.vmdk').toString('latin1').replace(/\n/g, '\r\n');
    const info = detectFormat(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(text, 'latin1')]));
    expect(info.format).toBe('vmdk');
    expect(info.hazards[0]?.kind).toBe('external-extent');
  });

  it('vdi: signature at 64, size at 368 (dynamic and static)', () => {
    expect(detect('disk.vdi')).toMatchObject({ format: 'vdi', virtualSize: 96 * MiB, subformat: 'dynamic', hazards: [] });
    expect(detect('static.vdi')).toMatchObject({ format: 'vdi', virtualSize: 8 * MiB, subformat: 'fixed', hazards: [] });
  });

  it('vhd dynamic: conectix at 0, current size from the footer copy', () => {
    const info = detect('dynamic.vhd');
    const qemuSize = JSON.parse(
      execFileSync('qemu-img', ['info', '--output=json', '-f', 'vpc', join(dir, 'dynamic.vhd')], { encoding: 'utf8' }),
    )['virtual-size'];
    expect(info).toMatchObject({ format: 'vhd', subformat: 'dynamic', virtualSize: qemuSize, hazards: [] });
    expect(info.footerAtEnd).toBeUndefined();
    expect(qemuFormatName(info.format)).toBe('vpc');
  });

  it('vhd fixed: raw from the head alone, vhd once the tail is given', () => {
    expect(detectFormat(head('fixed.vhd')).format).toBe('raw');
    const info = detect('fixed.vhd');
    expect(info).toMatchObject({ format: 'vhd', subformat: 'fixed', footerAtEnd: true, hazards: [] });
    // qemu rounds 16M up to whole CHS geometry; the footer's current size is what qemu reports.
    expect(info.virtualSize).toBe(statSync(join(dir, 'fixed.vhd')).size - 512);
    expect(detectVhdFooter(tail('fixed.vhd'))).toEqual({ virtualSize: info.virtualSize, diskType: 'fixed' });
    expect(detectVhdFooter(tail('fixed.vhd', 4096))).toEqual({ virtualSize: info.virtualSize, diskType: 'fixed' });
    expect(detectVhdFooter(tail('disk.raw'))).toBeNull();
    expect(detectVhdFooter(tail('fixed.vhd').subarray(1))).toBeNull();
  });

  it('vhdx: signature only (the size lives in the metadata region; the probe reports it)', () => {
    expect(detect('disk.vhdx')).toEqual({ format: 'vhdx', virtualSize: undefined, hazards: [] });
  });

  it('iso9660: CD001 at 32769', () => {
    const info = detect('disk.iso');
    expect(info).toEqual({ format: 'iso', virtualSize: undefined, hazards: [] });
    expect(qemuFormatName(info.format)).toBe('raw');
    // The volume descriptor is beyond 32 KiB: a shorter head cannot tell.
    expect(detectFormat(head('disk.iso', 32 * 1024)).format).toBe('raw');
  });

  it('FORMAT_HEAD_BYTES is enough for every fixture', () => {
    expect(FORMAT_HEAD_BYTES).toBe(64 * 1024);
    for (const f of ['v3.qcow2', 'overlay.qcow2', 'datafile.qcow2', 'sparse.vmdk', 'child.vmdk', 'disk.iso']) {
      expect(detectFormat(head(f, FORMAT_HEAD_BYTES))).toEqual(detectFormat(head(f, 4 * MiB)));
    }
  });
});

describe('assertSafeDisk', () => {
  it('rejects a virtual size above the maximum before anything expensive', () => {
    const info = detect('v2.qcow2');
    expect(() => assertSafeDisk(info, { maxVirtualSize: 128 * MiB })).not.toThrow();
    const e = rejection(info, 128 * MiB - 1);
    expect(e.reason).toBe('VirtualSizeTooLarge');
    expect(e.message).toContain(`${128 * MiB}`);
  });

  it('rejects an HTML error page delivered as the image (NotADiskImage)', () => {
    for (const page of [
      '<!DOCTYPE html><html><body>Sign in</body></html>',
      '\n  <html>\n<head><title>404</title></head>',
      '\ufeff<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code></Error>',
    ]) {
      const info = detectFormat(Buffer.from(page, 'utf8'));
      expect(info).toEqual({ format: 'raw', virtualSize: undefined, hazards: [{ kind: 'markup' }] });
      expect(rejection(info).reason).toBe('NotADiskImage');
    }
  });

  it('qcow v1 (old qcow) is reported as an unsupported version', () => {
    const h = Buffer.from(head('v3.qcow2'));
    h.writeUInt32BE(1, 4);
    const info = detectFormat(h);
    expect(info.hazards).toEqual([{ kind: 'unsupported-version', version: 1 }]);
    const e = rejection(info);
    expect(e.reason).toBe('UnsupportedFormat');
    expect(e.message).toContain('-f qcow');
  });

  it('a differencing VHD (disk type 4) has a backing-file hazard', () => {
    const h = Buffer.from(head('dynamic.vhd'));
    h.writeUInt32BE(4, 60);
    expect(detectFormat(h)).toMatchObject({ format: 'vhd', subformat: 'differencing', hazards: [{ kind: 'backing-file' }] });
  });
});

describe('detectFormat never throws', () => {
  const magics: Array<[offset: number, bytes: number[]]> = [
    [0, [0x51, 0x46, 0x49, 0xfb]],
    [0, [0x4b, 0x44, 0x4d, 0x56]],
    [0, [0x43, 0x4f, 0x57, 0x44]],
    [0, [...Buffer.from('vhdxfile')]],
    [0, [...Buffer.from('conectix')]],
    [64, [0x7f, 0x10, 0xda, 0xbe]],
    [0, [...Buffer.from('# Disk DescriptorFile\n')]],
    [0, [...Buffer.from('<!DOCTYPE html>')]],
    [32769, [...Buffer.from('CD001')]],
  ];

  it('on arbitrary bytes, with and without a tail', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2048 }), fc.option(fc.uint8Array({ maxLength: 1024 })), (bytes, t) => {
        const info = detectFormat(bytes, t === null ? {} : { tail: t });
        expect(Array.isArray(info.hazards)).toBe(true);
        detectVhdFooter(bytes);
      }),
      { numRuns: 2000 },
    );
  });

  it('on every known magic followed by arbitrary header bytes of any length', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...magics),
        fc.uint8Array({ minLength: 0, maxLength: 1200 }),
        fc.integer({ min: 0, max: 40000 }),
        ([offset, magic], noise, cut) => {
          const buf = Buffer.alloc(Math.max(offset + magic.length + noise.length, 600));
          Buffer.from(noise).copy(buf, 0);
          Buffer.from(magic).copy(buf, offset);
          Buffer.from(noise).copy(buf, offset + magic.length);
          const h = buf.subarray(0, Math.min(buf.length, cut));
          const info = detectFormat(h, { tail: h });
          expect(typeof info.format).toBe('string');
          if (info.virtualSize !== undefined) expect(info.virtualSize).toBeGreaterThanOrEqual(0);
          try {
            assertSafeDisk(info, { maxVirtualSize: 1 });
          } catch (e) {
            expect(e).toBeInstanceOf(DiskError);
          }
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('on real headers with random bytes flipped', () => {
    const heads = ['v3.qcow2', 'overlay.qcow2', 'datafile.qcow2', 'sparse.vmdk', 'child.vmdk', 'disk.vdi', 'dynamic.vhd'].map(
      (f) => head(f, 4096),
    );
    fc.assert(
      fc.property(
        fc.constantFrom(...heads),
        fc.array(fc.tuple(fc.nat(4095), fc.integer({ min: 0, max: 255 })), { maxLength: 64 }),
        (h, flips) => {
          const b = Buffer.from(h);
          for (const [at, v] of flips) b[at] = v;
          detectFormat(b);
        },
      ),
      { numRuns: 2000 },
    );
  });
});
