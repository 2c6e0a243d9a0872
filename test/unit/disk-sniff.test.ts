/**
 * Compression and tar sniffing on output of the real tools, plus properties on arbitrary bytes.
 */
import { execFileSync } from 'node:child_process';
import { gzipSync } from 'node:zlib';
import fc from 'fast-check';
import { pack } from 'tar-stream';
import { describe, expect, it } from 'vitest';
import { COMPRESSION_SNIFF_BYTES, isTar, sniffCompression, TAR_SNIFF_BYTES } from '../../src/disk/sniff.ts';

const payload = Buffer.from('QFI\xfb a disk would be here '.repeat(100), 'latin1');

function tool(cmd: string, args: string[], input: Buffer): Buffer {
  return execFileSync(cmd, args, { input, maxBuffer: 64 * 1024 * 1024 });
}

async function tarOf(name: string, body: Buffer): Promise<Buffer> {
  const p = pack();
  p.entry({ name, mode: 0o644 }, body);
  p.finalize();
  const chunks: Buffer[] = [];
  for await (const c of p) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

describe('sniffCompression', () => {
  it('recognises gzip, xz, zstd and bzip2 as written by the real tools', () => {
    expect(sniffCompression(gzipSync(payload))).toBe('gzip');
    expect(sniffCompression(tool('gzip', ['-c'], payload))).toBe('gzip');
    expect(sniffCompression(tool('xz', ['-c'], payload))).toBe('xz');
    expect(sniffCompression(tool('zstd', ['-c', '-q'], payload))).toBe('zstd');
    expect(sniffCompression(tool('bzip2', ['-c'], payload))).toBe('bzip2');
    expect(sniffCompression(tool('bzip2', ['-c'], Buffer.alloc(0)))).toBe('bzip2');
  });

  it('recognises a zstd skippable frame at the start', () => {
    const skippable = Buffer.from([0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4]);
    expect(sniffCompression(Buffer.concat([skippable, tool('zstd', ['-c', '-q'], payload)]))).toBe('zstd');
  });

  it('says null for uncompressed data and for heads too short to tell', () => {
    expect(sniffCompression(payload)).toBeNull();
    expect(sniffCompression(new Uint8Array(0))).toBeNull();
    expect(sniffCompression(Uint8Array.of(0x1f))).toBeNull();
    expect(sniffCompression(Uint8Array.of(0xfd, 0x37, 0x7a, 0x58, 0x5a))).toBeNull();
    expect(sniffCompression(Buffer.from('BZh9 not bzip2'))).toBeNull();
    expect(sniffCompression(Uint8Array.of(0x1f, 0x8b, 0x07))).toBeNull(); // gzip has only method 8
  });

  it('needs at most COMPRESSION_SNIFF_BYTES', () => {
    for (const c of [gzipSync(payload), tool('xz', ['-c'], payload), tool('zstd', ['-c', '-q'], payload), tool('bzip2', ['-c'], payload)]) {
      expect(sniffCompression(c.subarray(0, COMPRESSION_SNIFF_BYTES))).toBe(sniffCompression(c));
    }
  });
});

describe('isTar', () => {
  it('recognises a ustar header (tar-stream and GNU tar)', async () => {
    const t = await tarOf('disk/disk.img', payload);
    expect(isTar(t)).toBe(true);
    expect(isTar(t.subarray(0, TAR_SNIFF_BYTES))).toBe(true);
    expect(isTar(t.subarray(0, TAR_SNIFF_BYTES - 1))).toBe(false);
    const gnu = execFileSync('tar', ['--format=gnu', '-cf', '-', '-C', '/etc', 'hostname']);
    expect(isTar(gnu)).toBe(true);
  });

  it('is false for compressed tars and other data', async () => {
    expect(isTar(gzipSync(await tarOf('disk/x', payload)))).toBe(false);
    expect(isTar(payload)).toBe(false);
    expect(isTar(new Uint8Array(0))).toBe(false);
  });
});

describe('sniffers never throw', () => {
  it('on arbitrary bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), (b) => {
        const c = sniffCompression(b);
        expect(c === null || ['gzip', 'xz', 'zstd', 'bzip2'].includes(c)).toBe(true);
        expect(typeof isTar(b)).toBe('boolean');
      }),
      { numRuns: 5000 },
    );
  });

  it('on magic prefixes followed by arbitrary bytes', () => {
    const prefixes = [[0x1f, 0x8b], [0x28, 0xb5, 0x2f, 0xfd], [0x5e, 0x2a, 0x4d, 0x18], [0x42, 0x5a, 0x68], [0xfd, 0x37, 0x7a, 0x58]];
    fc.assert(
      fc.property(fc.constantFrom(...prefixes), fc.uint8Array({ maxLength: 16 }), (p, rest) => {
        sniffCompression(Uint8Array.from([...p, ...rest]));
      }),
    );
  });
});
