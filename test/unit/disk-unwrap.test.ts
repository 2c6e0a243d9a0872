/**
 * Streaming decompression with the real tools: nesting, corrupt and truncated data, abort and backpressure.
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { DiskError } from '../../src/disk/errors.ts';
import { unwrap } from '../../src/disk/unwrap.ts';

const MiB = 1024 * 1024;
/** Compressible but not trivial: random blocks repeated. */
const disk = Buffer.concat(Array.from({ length: 48 }, (_, i) => (i % 3 === 0 ? randomBytes(64 * 1024) : Buffer.alloc(64 * 1024, i))));

function tool(cmd: string, args: string[], input: Buffer): Buffer {
  return execFileSync(cmd, args, { input, maxBuffer: 512 * MiB });
}
const memo = new Map<string, Buffer>();
/** Compresses with a real tool; the same input is compressed once per file. */
function compressed(cmd: string, args: string[], b: Buffer): Buffer {
  const key = `${cmd} ${b === disk ? 'disk' : createHash('sha1').update(b).digest('hex')}`;
  let out = memo.get(key);
  if (!out) memo.set(key, (out = tool(cmd, args, b)));
  return out;
}
const xz = (b: Buffer): Buffer => compressed('xz', ['-c', '-T1', '-1'], b);
const zstd = (b: Buffer): Buffer => compressed('zstd', ['-c', '-q'], b);
const bzip2 = (b: Buffer): Buffer => compressed('bzip2', ['-c'], b);

/** A source that delivers `b` in chunks of `size` bytes. */
function source(b: Buffer, size = 64 * 1024): Readable {
  let at = 0;
  return new Readable({
    read() {
      if (at >= b.length) {
        this.push(null);
        return;
      }
      this.push(b.subarray(at, at + size));
      at += size;
    },
  });
}

async function collect(r: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

async function unwrapAll(b: Buffer, chunk?: number): Promise<{ data: Buffer; compression: string[] }> {
  const u = await unwrap(source(b, chunk));
  return { data: await collect(u.stream), compression: u.compression };
}

/** The error of unwrapping `b`, whether unwrap() rejects or the stream fails later. */
async function failure(b: Buffer, opts?: Parameters<typeof unwrap>[1]): Promise<DiskError> {
  try {
    const u = await unwrap(source(b), opts);
    await collect(u.stream);
  } catch (e) {
    expect(e).toBeInstanceOf(DiskError);
    return e as DiskError;
  }
  throw new Error('expected unwrapping to fail');
}

/** Live child processes of this process named `name`. */
function children(name: string): number[] {
  const pids: number[] = [];
  for (const task of readdirSync(`/proc/${process.pid}/task`)) {
    const list = readFileSync(`/proc/${process.pid}/task/${task}/children`, 'utf8').trim();
    for (const p of list.split(/\s+/).filter(Boolean)) {
      try {
        if (readFileSync(`/proc/${p}/comm`, 'utf8').trim() === name) pids.push(Number(p));
      } catch {
        /* gone */
      }
    }
  }
  return pids;
}

function alive(pid: number): boolean {
  if (!existsSync(`/proc/${pid}`)) return false;
  return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
}

describe('unwrap', () => {
  it('passes uncompressed data through untouched, including tiny and empty inputs', async () => {
    for (const [b, chunk] of [[disk, 4096], [Buffer.alloc(0), 1], [Buffer.from([1]), 1], [Buffer.from([0x1f]), 1], [Buffer.from('abc'), 1]] as const) {
      const { data, compression } = await unwrapAll(b, chunk);
      expect(compression).toEqual([]);
      expect(data.equals(b)).toBe(true);
    }
  });

  it('returns the source itself when nothing is compressed', async () => {
    const s = source(disk);
    const u = await unwrap(s);
    expect(u.stream).toBe(s);
  });

  it('works with pipeline() and pipe() consumers, not only async iteration', async () => {
    for (const input of [disk, gzipSync(disk), zstd(disk)]) {
      const u = await unwrap(source(input));
      const hash = createHash('sha256');
      await pipeline(u.stream, hash);
      expect(hash.digest('hex')).toBe(createHash('sha256').update(disk).digest('hex'));
      const u2 = await unwrap(source(input));
      const out = new PassThrough();
      u2.stream.pipe(out);
      expect((await collect(out)).equals(disk)).toBe(true);
    }
  });

  it('gzip, including multi-member files and one-byte chunks', async () => {
    expect(await unwrapAll(gzipSync(disk))).toMatchObject({ compression: ['gzip'] });
    const multi = Buffer.concat([gzipSync(disk.subarray(0, 1000)), gzipSync(disk.subarray(1000))]);
    const { data } = await unwrapAll(multi);
    expect(data.equals(disk)).toBe(true);
    const small = Buffer.from('hello, disk');
    expect((await unwrapAll(gzipSync(small), 1)).data.toString()).toBe('hello, disk');
  });

  it('xz, zstd and bzip2 through their tools', async () => {
    for (const [c, f] of [['xz', xz], ['zstd', zstd], ['bzip2', bzip2]] as const) {
      const { data, compression } = await unwrapAll(f(disk));
      expect(compression).toEqual([c]);
      expect(createHash('sha256').update(data).digest('hex')).toBe(createHash('sha256').update(disk).digest('hex'));
    }
  });

  it('nested layers: disk.qcow2.xz.gz gives ["xz", "gzip"]', async () => {
    const { data, compression } = await unwrapAll(gzipSync(xz(disk)));
    expect(compression).toEqual(['xz', 'gzip']);
    expect(data.equals(disk)).toBe(true);
    const three = await unwrapAll(xz(gzipSync(zstd(disk))));
    expect(three.compression).toEqual(['zstd', 'gzip', 'xz']);
    expect(three.data.equals(disk)).toBe(true);
  });

  it('refuses more layers than allowed', async () => {
    const e = await failure(gzipSync(gzipSync(disk)), { maxLayers: 1 });
    expect(e.reason).toBe('TooManyCompressionLayers');
    expect(e.message).toContain('gzip inside gzip');
  });

  it('corrupt gzip: a clear error naming gzip', async () => {
    const gz = gzipSync(disk);
    gz.fill(0x55, 2000, 4000);
    const e = await failure(gz);
    expect(e.reason).toBe('CorruptCompression');
    expect(e.permanent).toBe(true);
    expect(e.message).toMatch(/^gzip decompression failed: the compressed data is corrupt/);
  });

  it('truncated gzip, xz and zstd: TruncatedCompression naming the compression', async () => {
    for (const [name, c] of [['gzip', gzipSync(disk)], ['xz', xz(disk)], ['zstd', zstd(disk)]] as const) {
      const e = await failure(c.subarray(0, Math.floor(c.length * 0.6)));
      expect(e.reason, name).toBe('TruncatedCompression');
      expect(e.permanent).toBe(false);
      expect(e.message).toMatch(new RegExp(`^${name} decompression failed: the compressed data ends early`));
    }
  });

  it('corrupt xz and zstd after the magic: rejects at once, naming the tool', async () => {
    const junk = randomBytes(4096);
    const e1 = await failure(Buffer.concat([Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), junk]));
    expect(e1.reason).toBe('CorruptCompression');
    expect(e1.message).toContain('xz:');
    // A zstd frame header with a 1 KiB window, then junk: random bytes right after the magic could instead ask
    // for a huge window, which zstd refuses as too much memory (UnsupportedFormat), not as corruption.
    const e2 = await failure(Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x00]), junk]));
    expect(e2.reason).toBe('CorruptCompression');
    expect(e2.message).toMatch(/^zstd decompression failed/);
  });

  it('a missing decoder binary is DecompressorUnavailable (retryable)', async () => {
    const e = await failure(xz(disk), { commands: { xz: ['/nonexistent/xz', '-dc'] } });
    expect(e.reason).toBe('DecompressorUnavailable');
    expect(e.permanent).toBe(false);
    expect(e.message).toContain('/nonexistent/xz');
  });

  it('gzip can be moved into a process of its own (e.g. igzip)', async () => {
    const { data, compression } = await unwrapAll(gzipSync(disk), undefined);
    expect(compression).toEqual(['gzip']);
    const u = await unwrap(source(gzipSync(disk)), { commands: { gzip: ['gzip', '-dc'] } });
    expect((await collect(u.stream)).equals(data)).toBe(true);
  });

  it('errors of the source pass through unchanged', async () => {
    const boom = new Error('connection reset by peer');
    let sent = false;
    const s = new Readable({
      read() {
        if (!sent) {
          sent = true;
          this.push(xz(disk).subarray(0, 4096));
        } else this.destroy(boom);
      },
    });
    let err: unknown;
    try {
      const u = await unwrap(s);
      await collect(u.stream);
    } catch (e) {
      err = e;
    }
    expect(err).toBe(boom);
  });

  it('respects backpressure, then delivers everything', async () => {
    // 256 MiB of zeros compress to a few KiB: without backpressure this would pile up in memory.
    const z = execFileSync('sh', ['-c', 'head -c 268435456 /dev/zero | zstd -c -q']);
    const u = await unwrap(source(z));
    await sleep(300);
    expect(u.stream.readableLength).toBeLessThanOrEqual(2 * MiB);
    expect(children('zstd')).toHaveLength(1);
    let n = 0;
    for await (const c of u.stream) n += (c as Buffer).length;
    expect(n).toBe(256 * MiB);
  });

  it('abort kills the decoder and fails the stream with an AbortError', async () => {
    const z = execFileSync('sh', ['-c', 'head -c 268435456 /dev/zero | zstd -c -q']);
    const ac = new AbortController();
    const before = new Set(children('zstd'));
    const s = source(z);
    const u = await unwrap(s, { signal: ac.signal });
    const pids = children('zstd').filter((p) => !before.has(p));
    expect(pids).toHaveLength(1);
    const closed = new Promise<unknown>((res) => u.stream.once('error', res));
    ac.abort();
    const err = await closed;
    expect((err as Error).name).toBe('AbortError');
    await new Promise((res) => (u.stream.closed ? res(null) : u.stream.once('close', res)));
    expect(alive(pids[0]!)).toBe(false);
    expect(s.destroyed).toBe(true);
  });

  it('destroying the stream kills the decoders of every layer', async () => {
    const z = gzipSync(execFileSync('sh', ['-c', 'head -c 67108864 /dev/zero | xz -c -T1 -0']));
    const u = await unwrap(source(z));
    expect(u.compression).toEqual(['xz', 'gzip']);
    const pids = children('xz');
    expect(pids.length).toBeGreaterThanOrEqual(1);
    u.stream.destroy();
    await new Promise((res) => u.stream.once('close', res));
    for (const p of pids) expect(alive(p)).toBe(false);
  });

  it('an already aborted signal rejects at once', async () => {
    const ac = new AbortController();
    ac.abort();
    await expect(unwrap(source(xz(disk)), { signal: ac.signal })).rejects.toMatchObject({ name: 'AbortError' });
  });
});
