/**
 * `convertImage`: real qemu-img conversions under limits, into one scratch folder that is gone after every
 * failure (timeout, output bound, abort, refusal) and after `remove()`.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  convertArgs,
  convertedName,
  convertImage,
  detectFileFormat,
  maxConvertedSize,
  type ConvertOptions,
} from '../../src/disk/convert.ts';
import { DiskError } from '../../src/disk/errors.ts';

const MiB = 1024 * 1024;
let dir: string;
let scratch: string;

const f = (name: string) => join(dir, name);

function qemuImg(...args: string[]): string {
  return execFileSync('qemu-img', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] }).toString('utf8');
}

function info(path: string): { format: string; 'virtual-size': number } {
  return JSON.parse(qemuImg('info', '--output=json', path)) as { format: string; 'virtual-size': number };
}

async function rejection(input: string, opts: ConvertOptions): Promise<DiskError> {
  try {
    const out = await convertImage(input, opts);
    await out.remove();
  } catch (e) {
    expect(e).toBeInstanceOf(DiskError);
    return e as DiskError;
  }
  throw new Error('expected the conversion to fail');
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'disk-convert-'));
  // A sparse raw disk: 64 MiB long, 2 MiB of data.
  const raw = Buffer.alloc(64 * MiB);
  randomBytes(MiB).copy(raw, 0);
  randomBytes(MiB).copy(raw, 40 * MiB);
  writeFileSync(f('sparse.raw'), raw);
  qemuImg('convert', '-q', '-f', 'raw', '-O', 'qcow2', 'sparse.raw', 'disk.qcow2');
  qemuImg('convert', '-q', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=streamOptimized', 'sparse.raw', 'stream.vmdk');
  qemuImg('convert', '-q', '-f', 'raw', '-O', 'vpc', '-o', 'subformat=fixed', 'sparse.raw', 'fixed.vhd');
  mkdirSync(f('iso'));
  writeFileSync(f('iso/hello.txt'), 'hello\n');
  execFileSync('xorriso', ['-as', 'mkisofs', '-quiet', '-o', f('disk.iso'), f('iso')], { stdio: ['ignore', 'ignore', 'pipe'] });
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

beforeEach(() => {
  scratch = mkdtempSync(join(dir, 'scratch-'));
});

describe('convertImage', () => {
  it('raw -> qcow2 shrinks a sparse raw disk; the content is identical; remove() empties the scratch folder', async () => {
    const out = await convertImage(f('sparse.raw'), { from: 'raw', to: 'qcow2', virtualSize: 64 * MiB, dir: scratch });
    try {
      expect(out.format).toBe('qcow2');
      expect(out.path.startsWith(scratch)).toBe(true);
      expect(out.size).toBe(statSync(out.path).size);
      expect(out.size).toBeLessThan(8 * MiB);
      expect(info(out.path)).toMatchObject({ format: 'qcow2', 'virtual-size': 64 * MiB });
      qemuImg('compare', '-q', '-f', 'raw', '-F', 'qcow2', f('sparse.raw'), out.path);
    } finally {
      await out.remove();
    }
    expect(readdirSync(scratch)).toEqual([]);
  });

  it('qcow2 -> raw and stream-optimised vmdk -> qcow2', async () => {
    const raw = await convertImage(f('disk.qcow2'), { from: 'qcow2', to: 'raw', virtualSize: 64 * MiB, dir: scratch });
    try {
      expect(raw.size).toBe(64 * MiB);
      qemuImg('compare', '-q', '-f', 'raw', '-F', 'raw', f('sparse.raw'), raw.path);
    } finally {
      await raw.remove();
    }
    const q = await convertImage(f('stream.vmdk'), { from: 'vmdk', to: 'qcow2', virtualSize: 64 * MiB, dir: scratch, limiter: 'ulimit' });
    try {
      expect(info(q.path)).toMatchObject({ format: 'qcow2', 'virtual-size': 64 * MiB });
      qemuImg('compare', '-q', '-f', 'raw', '-F', 'qcow2', f('sparse.raw'), q.path);
    } finally {
      await q.remove();
    }
    expect(readdirSync(scratch)).toEqual([]);
  });

  it('a wall timeout kills qemu-img: ConvertTimeout (transient), nothing left behind', async () => {
    const e = await rejection(f('sparse.raw'), {
      from: 'raw',
      to: 'qcow2',
      virtualSize: 64 * MiB,
      dir: scratch,
      limits: { timeoutMs: 1 },
    });
    expect(e).toMatchObject({ reason: 'ConvertTimeout', permanent: false });
    expect(e.message).toContain('did not finish within 1 ms');
    expect(readdirSync(scratch)).toEqual([]);
  });

  it.each(['prlimit', 'ulimit'] as const)(
    'the output is bounded by the virtual size (%s): an image larger than it said is refused',
    async (limiter) => {
      // Told 1 MiB: the bound is 33 MiB, and the 64 MiB raw output cannot be written.
      const e = await rejection(f('disk.qcow2'), { from: 'qcow2', to: 'raw', virtualSize: MiB, dir: scratch, limiter });
      expect(e).toMatchObject({ reason: 'ConvertLimit', permanent: true });
      expect(readdirSync(scratch)).toEqual([]);
    },
  );

  it('an abort kills qemu-img and rejects with the reason; nothing left behind', async () => {
    const ac = new AbortController();
    const reason = Object.assign(new Error('stop'), { name: 'AbortError' });
    const p = convertImage(f('sparse.raw'), { from: 'raw', to: 'qcow2', virtualSize: 64 * MiB, dir: scratch, signal: ac.signal });
    ac.abort(reason);
    await expect(p).rejects.toBe(reason);
    expect(readdirSync(scratch)).toEqual([]);
  });

  it('bytes qemu-img cannot read as the given format: ConvertFailed (permanent), nothing left behind', async () => {
    const e = await rejection(f('sparse.raw'), { from: 'qcow2', to: 'raw', virtualSize: 64 * MiB, dir: scratch });
    expect(e).toMatchObject({ reason: 'ConvertFailed', permanent: true });
    expect(e.message).toContain('sparse.raw');
    expect(readdirSync(scratch)).toEqual([]);
  });

  it('refuses an ISO (it stays an ISO) and a conversion to the same format, before making any folder', async () => {
    const iso = await rejection(f('disk.iso'), { from: 'iso', to: 'qcow2', virtualSize: MiB, dir: scratch });
    expect(iso).toMatchObject({ reason: 'UnsupportedFormat', permanent: true });
    expect(iso.message).toContain('ISO');
    const same = await rejection(f('disk.qcow2'), { from: 'qcow2', to: 'qcow2', virtualSize: MiB, dir: scratch });
    expect(same.reason).toBe('UnsupportedFormat');
    expect(readdirSync(scratch)).toEqual([]);
  });
});

describe('conversion helpers', () => {
  it('convertArgs: -f with qemu names, -O, -W -m 8', () => {
    expect(convertArgs('/in', '/out', 'vhd', 'qcow2')).toEqual(['convert', '-f', 'vpc', '-O', 'qcow2', '-W', '-m', '8', '/in', '/out']);
  });

  it('convertedName swaps a disk suffix or appends one', () => {
    expect(convertedName('disk.raw', 'qcow2')).toBe('disk.qcow2');
    expect(convertedName('ubuntu-22.04.img', 'qcow2')).toBe('ubuntu-22.04.qcow2');
    expect(convertedName('a.QCOW2', 'raw')).toBe('a.raw');
    expect(convertedName('disk', 'qcow2')).toBe('disk.qcow2');
    expect(convertedName('x.tar', 'raw')).toBe('x.tar.raw');
  });

  it('maxConvertedSize: raw is the virtual size plus slack, qcow2 adds its metadata', () => {
    const v = 10 * 1024 ** 3;
    expect(maxConvertedSize(v, 'raw')).toBe(v + 32 * MiB);
    expect(maxConvertedSize(v, 'qcow2')).toBeGreaterThan(v + v / 8192);
  });

  it('detectFileFormat sees a fixed VHD by its footer at the end of the file', async () => {
    expect(await detectFileFormat(f('fixed.vhd'))).toMatchObject({ format: 'vhd', subformat: 'fixed', footerAtEnd: true });
    expect((await detectFileFormat(f('sparse.raw'))).format).toBe('raw');
    expect((await detectFileFormat(f('disk.iso'))).format).toBe('iso');
  });
});
