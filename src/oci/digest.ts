/** Content digests: parsing and incremental hashing. */
import { createHash, type Hash } from 'node:crypto';
import { OciError } from './errors.ts';

export type DigestAlgorithm = 'sha256' | 'sha512';

export function parseDigest(digest: string): { algorithm: DigestAlgorithm; hex: string } {
  const m = /^(sha256|sha512):([a-f0-9]+)$/.exec(digest);
  if (!m || (m[1] === 'sha256' && m[2]!.length !== 64) || (m[1] === 'sha512' && m[2]!.length !== 128)) {
    throw new OciError(`invalid digest "${digest}"`, { errorClass: 'permanent', reason: 'DIGEST_INVALID' });
  }
  return { algorithm: m[1] as DigestAlgorithm, hex: m[2]! };
}

export function digestOf(data: Uint8Array, algorithm: DigestAlgorithm = 'sha256'): string {
  return `${algorithm}:${createHash(algorithm).update(data).digest('hex')}`;
}

/** An incremental digest that counts bytes too. */
export class DigestCounter {
  private readonly hash: Hash;
  bytes = 0;
  constructor(readonly algorithm: DigestAlgorithm = 'sha256') {
    this.hash = createHash(algorithm);
  }
  update(chunk: Uint8Array): void {
    this.hash.update(chunk);
    this.bytes += chunk.byteLength;
  }
  digest(): string {
    return `${this.algorithm}:${this.hash.digest('hex')}`;
  }
}
