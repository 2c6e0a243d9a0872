/**
 * qemu-img probing under limits, and probe samples, on real images made by qemu-img and xorriso.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  createReadStream,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeLuksQcow2 } from '../helpers/fixtures.ts';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DiskError } from '../../src/disk/errors.ts';
import { FORMAT_HEAD_BYTES, type DiskFormat } from '../../src/disk/format.ts';
import { hasPrlimit, probeImage, type ProbeOptions } from '../../src/disk/probe.ts';
import { ProbeSample, VMDK_TAIL_BYTES } from '../../src/disk/sample.ts';

const MiB = 1024 * 1024;
let dir: string;

const f = (name: string): string => join(dir, name);

function qemuImg(...args: string[]): void {
  execFileSync('qemu-img', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

async function rejection(file: string, opts: ProbeOptions): Promise<DiskError> {
  try {
    await probeImage(file, opts);
  } catch (e) {
    expect(e).toBeInstanceOf(DiskError);
    return e as DiskError;
  }
  throw new Error(`expected probing ${file} to fail`);
}

/** Live qemu-img processes started by this process. */
function qemuChildren(): number[] {
  const out: number[] = [];
  for (const task of readdirSync(`/proc/${process.pid}/task`)) {
    for (const p of readFileSync(`/proc/${process.pid}/task/${task}/children`, 'utf8').split(/\s+/).filter(Boolean)) {
      try {
        if (readFileSync(`/proc/${p}/comm`, 'utf8').trim() === 'qemu-img') out.push(Number(p));
      } catch {
        /* gone */
      }
    }
  }
  return out;
}

/** A readable that delivers `b` in chunks of varying size. */
function chunked(b: Buffer, seed = 1): Readable {
  let at = 0;
  let size = seed;
  return new Readable({
    read() {
      if (at >= b.length) {
        this.push(null);
        return;
      }
      this.push(b.subarray(at, at + size));
      at += size;
      size = ((size * 31 + 7) % (300 * 1024)) + 1;
    },
  });
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'disk-probe-'));
  // Random data in the first half, so compressed formats are not tiny.
  const raw = Buffer.alloc(4 * MiB);
  randomBytes(2 * MiB).copy(raw);
  for (let i = 2 * MiB; i < raw.length; i += 512) raw.writeUInt32LE(i + 1, i);
  writeFileSync(f('disk.raw'), raw);
  qemuImg('create', '-q', '-f', 'qcow2', 'v3.qcow2', '64M');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', 'v2.qcow2', '32M');
  qemuImg('convert', '-q', '-f', 'raw', '-O', 'qcow2', 'disk.raw', 'converted.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-b', 'v3.qcow2', '-F', 'qcow2', 'overlay.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'data_file=data.raw', 'datafile.qcow2', '64M');
  makeLuksQcow2(join(dir, 'luks.qcow2'));
  qemuImg('create', '-q', '-f', 'vmdk', 'sparse.vmdk', '64M');
  qemuImg('convert', '-q', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=streamOptimized', 'disk.raw', 'stream.vmdk');
  qemuImg('create', '-q', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', 'flat.vmdk', '64M');
  qemuImg('create', '-q', '-f', 'vmdk', '-o', 'subformat=twoGbMaxExtentSparse', 'split.vmdk', '64M');
  qemuImg('create', '-q', '-f', 'vmdk', '-b', 'sparse.vmdk', '-F', 'vmdk', 'child.vmdk');
  qemuImg('create', '-q', '-f', 'vdi', 'disk.vdi', '96M');
  qemuImg('create', '-q', '-f', 'vpc', 'dynamic.vhd', '64M');
  qemuImg('convert', '-q', '-f', 'raw', '-O', 'vpc', '-o', 'subformat=fixed', 'disk.raw', 'fixed.vhd');
  qemuImg('create', '-q', '-f', 'vhdx', 'disk.vhdx', '64M');
  mkdirSync(f('iso'));
  writeFileSync(f('iso/hello.txt'), 'hello\n');
  execFileSync('xorriso', ['-as', 'mkisofs', '-quiet', '-o', f('disk.iso'), f('iso')], { stdio: ['ignore', 'ignore', 'pipe'] });
  // A stream-optimised VMDK as VMware writes it: grain directory pointer in a footer at the end of the file.
  const so = readFileSync(f('stream.vmdk'));
  const header = Buffer.from(so.subarray(0, 512));
  const atEnd = Buffer.from(so);
  atEnd.fill(0xff, 56, 64); // gdOffset = GD_AT_END
  const marker = Buffer.alloc(512);
  marker.writeUInt32LE(3, 12); // MARKER_FOOTER
  writeFileSync(f('footer.vmdk'), Buffer.concat([atEnd, marker, header, Buffer.alloc(512)]));
  // A raw disk whose guest data starts with a qcow2 header naming a backing file on the host.
  writeFileSync(f('guest-qcow2-header.raw'), Buffer.concat([readFileSync(f('overlay.qcow2')).subarray(0, 64 * 1024), Buffer.alloc(MiB)]));
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('probeImage', () => {
  it.each<[string, DiskFormat, number]>([
    ['v3.qcow2', 'qcow2', 64 * MiB],
    ['v2.qcow2', 'qcow2', 32 * MiB],
    ['converted.qcow2', 'qcow2', 4 * MiB],
    ['disk.raw', 'raw', 4 * MiB],
    ['sparse.vmdk', 'vmdk', 64 * MiB],
    ['stream.vmdk', 'vmdk', 4 * MiB],
    ['footer.vmdk', 'vmdk', 4 * MiB],
    ['disk.vdi', 'vdi', 96 * MiB],
    ['disk.vhdx', 'vhdx', 64 * MiB],
    ['disk.iso', 'iso', 376832],
  ])('%s as %s: virtual size %d', async (file, format, size) => {
    const r = await probeImage(f(file), { format });
    expect(r).toMatchObject({ format, virtualSize: size, dirty: false });
    expect(r.qemu.format).toBe(format === 'iso' ? 'raw' : format);
  });

  it('vhd (qemu vpc), dynamic and fixed: the footer current size', async () => {
    const dyn = await probeImage(f('dynamic.vhd'), { format: 'vhd' });
    expect(dyn.qemu.format).toBe('vpc');
    expect(dyn.virtualSize).toBeGreaterThanOrEqual(64 * MiB);
    const fixed = await probeImage(f('fixed.vhd'), { format: 'vhd' });
    expect(fixed.virtualSize).toBe(statSync(f('fixed.vhd')).size - 512);
  });

  it('always passes -f: a raw disk that starts with a qcow2 header stays raw, its "backing file" unread', async () => {
    const r = await probeImage(f('guest-qcow2-header.raw'), { format: 'raw' });
    expect(r.virtualSize).toBe(statSync(f('guest-qcow2-header.raw')).size);
    expect(r.qemu['backing-filename']).toBeUndefined();
  });

  it('rejects a backing file', async () => {
    const e = await rejection(f('overlay.qcow2'), { format: 'qcow2' });
    expect(e).toMatchObject({ reason: 'BackingFile', permanent: true });
    expect(e.message).toContain('"v3.qcow2"');
    expect((await rejection(f('child.vmdk'), { format: 'vmdk' })).reason).toBe('BackingFile');
  });

  it('rejects a qcow2 external data file', async () => {
    const e = await rejection(f('datafile.qcow2'), { format: 'qcow2' });
    expect(e).toMatchObject({ reason: 'ExternalDataFile', permanent: true });
    expect(e.message).toContain('"data.raw"');
  });

  it('rejects VMDK extents that are not the probed file (flat and split descriptors)', async () => {
    for (const [file, extent] of [
      ['flat.vmdk', 'flat-flat.vmdk'],
      ['split.vmdk', 'split-s001.vmdk'],
    ]) {
      const e = await rejection(f(file!), { format: 'vmdk' });
      expect(e.reason).toBe('ExternalExtent');
      expect(e.message).toContain(extent);
    }
  });

  it('rejects encrypted images', async () => {
    expect((await rejection(f('luks.qcow2'), { format: 'qcow2' })).reason).toBe('Encrypted');
  });

  it('rejects a virtual size above the maximum', async () => {
    const e = await rejection(f('v3.qcow2'), { format: 'qcow2', maxVirtualSize: 64 * MiB - 1 });
    expect(e).toMatchObject({ reason: 'VirtualSizeTooLarge', permanent: true });
    await expect(probeImage(f('v3.qcow2'), { format: 'qcow2', maxVirtualSize: 64 * MiB })).resolves.toBeDefined();
  });

  it('ProbeFailed when qemu-img refuses the format, naming the image by its display name', async () => {
    const e = await rejection(f('disk.raw'), { format: 'qcow2', displayName: 'ubuntu.img' });
    expect(e).toMatchObject({ reason: 'ProbeFailed', permanent: true });
    expect(e.message).toContain("qemu-img cannot read ubuntu.img as qcow2: qemu-img: Could not open 'ubuntu.img'");
    expect(e.message).not.toContain(dir);
  });

  it('kills qemu-img at the wall timeout (ProbeTimeout, retryable)', async () => {
    // Opening a FIFO without a writer blocks forever: a real qemu-img that never answers.
    const fifo = f('never.fifo');
    execFileSync('mkfifo', [fifo]);
    const t0 = Date.now();
    const e = await rejection(fifo, { format: 'raw', limits: { timeoutMs: 400 } });
    expect(e).toMatchObject({ reason: 'ProbeTimeout', permanent: false });
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(qemuChildren()).toEqual([]);
  });

  it('abort kills qemu-img and rejects with the AbortError', async () => {
    const fifo = f('abort.fifo');
    execFileSync('mkfifo', [fifo]);
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 200);
    await expect(probeImage(fifo, { format: 'raw', signal: ac.signal })).rejects.toMatchObject({ name: 'AbortError' });
    expect(qemuChildren()).toEqual([]);
  });

  it.each(['prlimit', 'ulimit'] as const)('applies the address-space limit through %s', async (limiter) => {
    if (limiter === 'prlimit' && !hasPrlimit()) return;
    await expect(probeImage(f('v3.qcow2'), { format: 'qcow2', limiter })).resolves.toMatchObject({ virtualSize: 64 * MiB });
    const e = await rejection(f('v3.qcow2'), { format: 'qcow2', limiter, limits: { addressSpaceBytes: 8 * MiB } });
    expect(e).toMatchObject({ reason: 'ProbeLimit', permanent: true });
    expect(e.message).toContain(`${8 * MiB} bytes`);
  });

  it('ProbeUnavailable when qemu-img is not installed', async () => {
    for (const limiter of ['prlimit', 'ulimit'] as const) {
      const e = await rejection(f('v3.qcow2'), { format: 'qcow2', qemuImg: '/nonexistent/qemu-img', limiter });
      expect(e).toMatchObject({ reason: 'ProbeUnavailable', permanent: false });
    }
  });
});

describe('ProbeSample', () => {
  it('a small image is sampled whole and probes like the original', async () => {
    const src = readFileSync(f('converted.qcow2'));
    await ProbeSample.with({}, async (sample) => {
      await pipeline(chunked(src), sample);
      const sealed = await sample.seal();
      expect(sealed).toMatchObject({ size: src.length, received: src.length, complete: true });
      expect(sealed.info).toMatchObject({ format: 'qcow2', virtualSize: 4 * MiB });
      expect(readFileSync(sealed.path!).equals(src)).toBe(true);
      expect((await probeImage(sealed.path!, { format: sealed.info.format })).virtualSize).toBe(4 * MiB);
    });
  });

  it('keeps only the head of a large raw stream, as a sparse file of the full length', async () => {
    const total = 80 * MiB;
    const head = randomBytes(MiB);
    const stream = Readable.from(
      (function* () {
        yield head;
        for (let sent = head.length; sent < total; sent += MiB) yield Buffer.alloc(MiB, 7);
      })(),
    );
    await ProbeSample.with({ totalSize: total, headBytes: 8 * MiB }, async (sample) => {
      await pipeline(stream, sample);
      const { path, size, info } = await sample.seal();
      expect(size).toBe(total);
      expect(info.format).toBe('raw');
      const st = statSync(path!);
      expect(st.size).toBe(total);
      expect(st.blocks * 512).toBeLessThan(9 * MiB + 64 * 1024);
      expect((await probeImage(path!, { format: 'raw' })).virtualSize).toBe(total);
    });
  });

  it('head-only before the end: with a known total the file already has the right length', async () => {
    const src = readFileSync(f('v3.qcow2'));
    await ProbeSample.with({ totalSize: src.length }, async (sample) => {
      sample.write(src.subarray(0, 70_000));
      await new Promise((r) => setImmediate(r));
      const early = await sample.seal();
      expect(early).toMatchObject({ size: src.length, received: 70_000, complete: false });
      expect(early.info.format).toBe('qcow2');
      expect(sample.info?.format).toBe('qcow2');
      expect((await probeImage(early.path!, { format: 'qcow2' })).virtualSize).toBe(64 * MiB);
      sample.end(src.subarray(70_000));
    });
  });

  for (const [known, keep] of [[true, 'file'], [false, 'file'], [true, 'probed'], [false, 'probed']] as const) {
    it(`fixed VHD: the footer at the end is kept and recognised (total ${known ? 'known' : 'unknown'}, keep: ${keep})`, async () => {
      const src = readFileSync(f('fixed.vhd'));
      await ProbeSample.with(
        { headBytes: FORMAT_HEAD_BYTES, totalSize: known ? src.length : undefined, keep },
        async (sample) => {
          await pipeline(chunked(src, 999), sample);
          expect(sample.tailBytes).toBe(512);
          const { path, size, info } = await sample.seal();
          expect(size).toBe(src.length);
          expect(info).toMatchObject({ format: 'vhd', subformat: 'fixed', footerAtEnd: true });
          // keep: 'probed' held it as raw in memory until the footer showed a VHD: the file has head + footer.
          expect(statSync(path!).size).toBe(src.length);
          const r = await probeImage(path!, { format: 'vhd' });
          expect(r.virtualSize).toBe(src.length - 512);
        },
      );
    });

    it(`stream-optimised VMDK with its footer at the end: probes from head + tail (total ${known ? 'known' : 'unknown'}, keep: ${keep})`, async () => {
      const src = readFileSync(f('footer.vmdk'));
      expect(src.length).toBeGreaterThan(2 * MiB);
      const opts = { headBytes: FORMAT_HEAD_BYTES, totalSize: known ? src.length : undefined, keep };
      // 'auto' keeps the last 50 MiB of a VMDK: here that is everything after the head.
      await ProbeSample.with(opts, async (sample) => {
        await pipeline(chunked(src, 4097), sample);
        expect(sample.tailBytes).toBe(VMDK_TAIL_BYTES);
        const { path, info } = await sample.seal();
        expect(info).toMatchObject({ format: 'vmdk', subformat: 'streamOptimized', footerAtEnd: true });
        expect(readFileSync(path!).equals(src)).toBe(true);
        expect((await probeImage(path!, { format: 'vmdk' })).virtualSize).toBe(4 * MiB);
      });
      // The footer alone (last 1536 bytes) is what qemu-img info needs besides the head.
      await ProbeSample.with({ ...opts, tailBytes: 4096 }, async (sample) => {
        await pipeline(chunked(src, 4097), sample);
        const { path, size } = await sample.seal();
        expect(size).toBe(src.length);
        expect(readFileSync(path!).equals(src)).toBe(false);
        expect((await probeImage(path!, { format: 'vmdk' })).virtualSize).toBe(4 * MiB);
      });
      // Without the tail qemu-img cannot find the grain directory.
      await ProbeSample.with({ ...opts, tailBytes: 0 }, async (sample) => {
        await pipeline(chunked(src, 4097), sample);
        const { path } = await sample.seal();
        const e = await rejection(path!, { format: 'vmdk' });
        expect(e.reason).toBe('ProbeFailed');
        expect(e.message).toContain('Invalid footer');
      });
    });
  }

  it('a qemu-made stream-optimised VMDK probes from its first 64 KiB alone (grain directory at the start)', async () => {
    const src = readFileSync(f('stream.vmdk'));
    await ProbeSample.with({ headBytes: FORMAT_HEAD_BYTES, tailBytes: 0 }, async (sample) => {
      await pipeline(chunked(src), sample);
      const { path, size } = await sample.seal();
      expect(size).toBe(src.length);
      expect((await probeImage(path!, { format: 'vmdk' })).virtualSize).toBe(4 * MiB);
    });
  });

  describe("keep: 'probed'", () => {
    /** Runs a probed-mode sample in a scratch parent of its own; returns what seal() said and what was on disk. */
    async function probed(src: Buffer, seed: number, totalSize: number | undefined) {
      const parent = mkdtempSync(join(tmpdir(), 'probed-'));
      try {
        return await ProbeSample.with({ dir: parent, totalSize, keep: 'probed' }, async (sample) => {
          await pipeline(chunked(src, seed), sample);
          const filesBeforeSeal = readdirSync(parent).length;
          const sealed = await sample.seal();
          const file = sealed.path === undefined ? undefined : readFileSync(sealed.path);
          const probe = sealed.path === undefined ? undefined : await probeImage(sealed.path, { format: sealed.info.format });
          return { sealed, file, probe, filesBeforeSeal, filesAfterSeal: readdirSync(parent).length };
        });
      } finally {
        expect(readdirSync(parent)).toEqual([]);
        rmSync(parent, { recursive: true, force: true });
      }
    }

    it('raw and ISO streams write no file at all, whatever the chunking', async () => {
      const raw = readFileSync(f('disk.raw'));
      const iso = readFileSync(f('disk.iso'));
      for (const [src, format] of [[raw, 'raw'], [iso, 'iso']] as const) {
        for (const seed of [1, 999, 70_000, MiB]) {
          for (const totalSize of [src.length, undefined]) {
            const r = await probed(src, seed, totalSize);
            expect(r.sealed).toMatchObject({ path: undefined, size: src.length, received: src.length, complete: true });
            expect(r.sealed.info.format).toBe(format);
            expect(r.filesBeforeSeal + r.filesAfterSeal).toBe(0);
          }
        }
      }
    });

    it('a format qemu-img reads becomes a file at the format head, holding every byte before it (any chunking)', async () => {
      const src = readFileSync(f('converted.qcow2'));
      // Chunk sizes that put the end of the 64 KiB format head inside a chunk, at its end, and in the first chunk.
      for (const seed of [1, 999, 65_536, MiB]) {
        for (const totalSize of [src.length, undefined]) {
          const r = await probed(src, seed, totalSize);
          expect(r.filesBeforeSeal).toBe(1);
          expect(r.sealed.info).toMatchObject({ format: 'qcow2', virtualSize: 4 * MiB });
          expect(r.file!.equals(src)).toBe(true);
          expect(r.probe!.virtualSize).toBe(4 * MiB);
        }
      }
    });

    it('a qcow2 shorter than the format head gets its file at seal()', async () => {
      qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', 'tiny.qcow2', '3M');
      const src = readFileSync(f('tiny.qcow2'));
      expect(src.length).toBeLessThan(FORMAT_HEAD_BYTES);
      const r = await probed(src, 100, undefined);
      expect(r.filesBeforeSeal).toBe(0);
      expect(r.filesAfterSeal).toBe(1);
      expect(r.file!.equals(src)).toBe(true);
      expect(r.probe!.virtualSize).toBe(3 * MiB);
    });
  });

  it('places head and tail bytes exactly, for any chunking (ring file when the total is unknown)', async () => {
    for (const [len, tail, seed] of [
      [200_000, 1000, 1],
      [200_000, 70_000, 3],
      [65_536 + 10, 4096, 5],
      [1_000_000, 333_333, 77],
      [40_000, 5000, 2],
    ] as const) {
      const src = randomBytes(len);
      for (const totalSize of [len, undefined]) {
        await ProbeSample.with({ headBytes: FORMAT_HEAD_BYTES, tailBytes: tail, totalSize }, async (sample) => {
          await pipeline(chunked(src, seed), sample);
          const { path, size } = await sample.seal();
          expect(size).toBe(len);
          const got = readFileSync(path!);
          const headEnd = Math.min(len, FORMAT_HEAD_BYTES);
          const tailStart = Math.max(headEnd, len - tail);
          expect(got.subarray(0, headEnd).equals(src.subarray(0, headEnd))).toBe(true);
          expect(got.subarray(tailStart).equals(src.subarray(tailStart))).toBe(true);
          expect(got.subarray(headEnd, tailStart).every((b) => b === 0)).toBe(true);
          for (const name of readdirSync(join(path!, '..'))) {
            expect(statSync(join(path!, '..', name)).size).toBeLessThanOrEqual(Math.max(len, tail));
          }
        });
      }
    }
  });

  it('dispose removes everything, also when the work fails, and is idempotent', async () => {
    let path = '';
    await expect(
      ProbeSample.with({}, async (sample) => {
        path = sample.path!;
        await pipeline(createReadStream(f('v3.qcow2')), sample);
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    expect(existsSync(path)).toBe(false);
    expect(existsSync(join(path, '..'))).toBe(false);

    const s = await ProbeSample.create({ tailBytes: 100 });
    s.write(Buffer.alloc(FORMAT_HEAD_BYTES + 10));
    await s.dispose();
    await s.dispose();
    expect(existsSync(join(s.path!, '..'))).toBe(false);
    await expect(s.seal()).rejects.toThrow(/after dispose/);
  });
});
