/**
 * Checksums over bytes exactly as delivered: several hashes in one pass, and the comparison with what the
 * image spec promised. Hash only what is asked for: md5 runs at about 0.7 GB/s, sha256 (SHA-NI) at 1.6 GB/s.
 */
import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { DiskError } from './errors.ts';

export type HashAlgorithm = 'md5' | 'sha1' | 'sha256' | 'sha512';

export const HASH_ALGORITHMS: readonly HashAlgorithm[] = ['md5', 'sha1', 'sha256', 'sha512'];

/** Length of each algorithm's lowercase hex digest. */
export const HASH_HEX_LENGTH: Readonly<Record<HashAlgorithm, number>> = { md5: 32, sha1: 40, sha256: 64, sha512: 128 };

/** Hex digests by algorithm, e.g. a spec's `checksum: {sha256: ...}` or what was computed. */
export type Checksums = Partial<Record<HashAlgorithm, string>>;

/** Several hashes fed together. For code that already holds each chunk (a tee's writer). */
export class MultiHash {
  readonly algorithms: readonly HashAlgorithm[];
  #hashes: Hash[];
  #bytes = 0;
  #result: Checksums | undefined;

  constructor(algorithms: Iterable<HashAlgorithm>) {
    this.algorithms = [...new Set(algorithms)];
    this.#hashes = this.algorithms.map((a) => createHash(a));
  }

  update(chunk: Uint8Array): void {
    if (this.#result) throw new Error('MultiHash.update after digest');
    const hashes = this.#hashes;
    for (let i = 0; i < hashes.length; i++) hashes[i]!.update(chunk);
    this.#bytes += chunk.length;
  }

  /** Bytes hashed so far. */
  get bytes(): number {
    return this.#bytes;
  }

  /** The hex digests; finishes the hashes (later calls return the same value). */
  digest(): Checksums {
    if (!this.#result) {
      const out: Checksums = {};
      this.algorithms.forEach((a, i) => (out[a] = this.#hashes[i]!.digest('hex')));
      this.#result = out;
    }
    return this.#result;
  }
}

/** A pass-through stream that hashes every chunk on its way. `digest()` is ready once it has ended. */
export class HashingStream extends Transform {
  readonly #hash: MultiHash;

  constructor(algorithms: Iterable<HashAlgorithm>) {
    super();
    this.#hash = new MultiHash(algorithms);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#hash.update(chunk);
    callback(null, chunk);
  }

  get bytes(): number {
    return this.#hash.bytes;
  }

  digest(): Checksums {
    if (!this.writableFinished) throw new Error('HashingStream.digest before the stream has ended');
    return this.#hash.digest();
  }
}

/** The algorithms to compute for `expected`, plus any always wanted (e.g. sha256 for status). */
export function algorithmsFor(expected: Checksums, always: readonly HashAlgorithm[] = []): HashAlgorithm[] {
  return HASH_ALGORITHMS.filter((a) => expected[a] !== undefined || always.includes(a));
}

/**
 * Throws a permanent `ChecksumMismatch` naming every algorithm whose digest differs (hex compared without
 * regard to case). Every expected algorithm must have been computed: a missing one is a programming error.
 */
export function verifyChecksums(expected: Checksums, actual: Checksums): void {
  const mismatches: string[] = [];
  for (const a of HASH_ALGORITHMS) {
    const want = expected[a];
    if (want === undefined) continue;
    const got = actual[a];
    if (got === undefined) throw new Error(`verifyChecksums: ${a} was expected but not computed`);
    if (want.trim().toLowerCase() !== got.toLowerCase()) mismatches.push(`${a}: expected ${want.trim()}, got ${got}`);
  }
  if (mismatches.length > 0) {
    throw new DiskError(
      `checksum mismatch (${mismatches.join('; ')}): the downloaded bytes differ from the checksum in the ` +
        'image spec; check that the checksum belongs to this exact file (before any decompression)',
      { reason: 'ChecksumMismatch', permanent: true },
    );
  }
}
