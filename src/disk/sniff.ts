/**
 * Compression and tar sniffing by bytes, never by name. Pure functions of a head buffer: they never throw and
 * answer "no" when the head is too short to tell.
 */

export type Compression = 'gzip' | 'xz' | 'zstd' | 'bzip2';

/** Bytes of the head `sniffCompression` looks at (the bzip2 block magic ends at 10). */
export const COMPRESSION_SNIFF_BYTES = 10;

/** Bytes of the head `isTar` needs: the `ustar` magic sits at 257..261. */
export const TAR_SNIFF_BYTES = 262;

/** Which compression the bytes start with, if any. */
export function sniffCompression(head: Uint8Array): Compression | null {
  if (head.length < 2) return null;
  const b0 = head[0];
  const b1 = head[1];
  // gzip: 1f 8b, and the only defined method 8 (deflate) when the third byte is present.
  if (b0 === 0x1f && b1 === 0x8b) return head.length < 3 || head[2] === 8 ? 'gzip' : null;
  if (head.length < 4) return null;
  const b2 = head[2];
  const b3 = head[3];
  // zstd frame 28 b5 2f fd; skippable frames 5? 2a 4d 18 (pzstd and seekable zstd start with one).
  if (b0 === 0x28 && b1 === 0xb5 && b2 === 0x2f && b3 === 0xfd) return 'zstd';
  if (b0 !== undefined && (b0 & 0xf0) === 0x50 && b1 === 0x2a && b2 === 0x4d && b3 === 0x18) return 'zstd';
  // bzip2: "BZh" + block size '1'..'9', then a block magic (pi) or the end-of-stream magic (sqrt(pi)).
  if (b0 === 0x42 && b1 === 0x5a && b2 === 0x68 && b3 !== undefined && b3 >= 0x31 && b3 <= 0x39) {
    if (head.length < 10) return 'bzip2';
    return startsWith(head, BZIP2_BLOCK, 4) || startsWith(head, BZIP2_EOS, 4) ? 'bzip2' : null;
  }
  if (startsWith(head, XZ_MAGIC, 0)) return 'xz';
  return null;
}

/** Whether the head is a tar header block (POSIX `ustar\0` or GNU `ustar ` at 257). */
export function isTar(head: Uint8Array): boolean {
  return startsWith(head, USTAR, 257);
}

const XZ_MAGIC = Uint8Array.of(0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00);
const BZIP2_BLOCK = Uint8Array.of(0x31, 0x41, 0x59, 0x26, 0x53, 0x59);
const BZIP2_EOS = Uint8Array.of(0x17, 0x72, 0x45, 0x38, 0x50, 0x90);
const USTAR = Uint8Array.of(0x75, 0x73, 0x74, 0x61, 0x72);

/** Whether `bytes` holds `magic` at `offset` (false when too short). */
export function startsWith(bytes: Uint8Array, magic: Uint8Array, offset: number): boolean {
  if (offset < 0 || bytes.length < offset + magic.length) return false;
  for (let i = 0; i < magic.length; i++) {
    if (bytes[offset + i] !== magic[i]) return false;
  }
  return true;
}
