import { createHash, randomBytes } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { algorithmsFor, HASH_HEX_LENGTH, HashingStream, MultiHash, verifyChecksums } from '../../src/disk/checksum.ts';
import { DiskError } from '../../src/disk/errors.ts';

const data = randomBytes(3 * 1024 * 1024 + 17);

function hex(alg: string, b: Buffer): string {
  return createHash(alg).update(b).digest('hex');
}

/** Splits a buffer into chunks of varying sizes, like a network stream. */
function* chunks(b: Buffer): Generator<Buffer> {
  let at = 0;
  let size = 1;
  while (at < b.length) {
    yield b.subarray(at, at + size);
    at += size;
    size = (size * 7 + 13) % 200_000 + 1;
  }
}

describe('HashingStream', () => {
  it('passes bytes through unchanged and computes every asked hash in one pass', async () => {
    const h = new HashingStream(['md5', 'sha1', 'sha256', 'sha512']);
    const out: Buffer[] = [];
    await pipeline(
      Readable.from(chunks(data)),
      h,
      new Writable({
        write(c: Buffer, _e, cb) {
          out.push(c);
          cb();
        },
      }),
    );
    expect(Buffer.concat(out).equals(data)).toBe(true);
    expect(h.bytes).toBe(data.length);
    expect(h.digest()).toEqual({
      md5: hex('md5', data),
      sha1: hex('sha1', data),
      sha256: hex('sha256', data),
      sha512: hex('sha512', data),
    });
    for (const [alg, v] of Object.entries(h.digest())) expect(v.length).toBe(HASH_HEX_LENGTH[alg as 'md5']);
  });

  it('computes only what is asked for', async () => {
    const h = new HashingStream(['sha256']);
    await pipeline(Readable.from(chunks(data)), h, new Writable({ write: (_c, _e, cb) => cb() }));
    expect(h.digest()).toEqual({ sha256: hex('sha256', data) });
  });

  it('refuses to give a digest before the end', () => {
    expect(() => new HashingStream(['md5']).digest()).toThrow(/before the stream has ended/);
  });
});

describe('MultiHash', () => {
  it('deduplicates algorithms and hashes the empty input', () => {
    const m = new MultiHash(['sha1', 'sha1']);
    expect(m.algorithms).toEqual(['sha1']);
    expect(m.digest()).toEqual({ sha1: 'da39a3ee5e6b4b0d3255bfef95601890afd80709' });
    expect(m.digest()).toBe(m.digest());
    expect(() => m.update(Buffer.from('x'))).toThrow();
  });
});

describe('verifyChecksums', () => {
  const actual = { md5: hex('md5', data), sha256: hex('sha256', data) };

  it('accepts matching checksums, ignoring case and surrounding spaces', () => {
    expect(() => verifyChecksums({ sha256: ` ${actual.sha256.toUpperCase()} ` }, actual)).not.toThrow();
    expect(() => verifyChecksums({}, actual)).not.toThrow();
  });

  it('names every mismatching algorithm with both values', () => {
    const wrong = 'a'.repeat(64);
    let err: unknown;
    try {
      verifyChecksums({ md5: actual.md5, sha256: wrong }, actual);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(DiskError);
    const e = err as DiskError;
    expect(e.reason).toBe('ChecksumMismatch');
    expect(e.permanent).toBe(true);
    expect(e.message).toContain(`sha256: expected ${wrong}, got ${actual.sha256}`);
    expect(e.message).not.toContain('md5:');
  });

  it('treats an expected but uncomputed algorithm as a programming error', () => {
    expect(() => verifyChecksums({ sha512: 'x' }, actual)).toThrow(/sha512 was expected but not computed/);
  });

  it('algorithmsFor lists the expected ones plus the always wanted, in a stable order', () => {
    expect(algorithmsFor({ sha512: 'x', md5: 'y' }, ['sha256'])).toEqual(['md5', 'sha256', 'sha512']);
    expect(algorithmsFor({})).toEqual([]);
  });

  it('DiskError survives a JSON round trip', () => {
    const e = new DiskError('m', { reason: 'ChecksumMismatch', permanent: true });
    const back = DiskError.fromJSON(JSON.parse(JSON.stringify(e)));
    expect(back).toBeInstanceOf(DiskError);
    expect(back).toMatchObject({ message: 'm', reason: 'ChecksumMismatch', permanent: true });
  });
});
