/**
 * Upload tokens and upload locks of `Upload` images, in Redis next to the images (same prefix, same hash tag).
 *
 * A token is 32 random alphanumerics from the CSPRNG (about 190 bits). It is shown to the user inside
 * `status.imageUploadURLs` (as upstream: holding the URL is what allows the upload) and is stored nowhere else in
 * clear: the records below hold its SHA-256 only, so neither a Redis dump, a log line nor a job carries it.
 *
 * ```
 * <prefix>:upload:token:<sha256 hex>   string JSON {kind, namespace, name, uid, generation}
 * <prefix>:upload:tokens:<uid>         set of the image's token digests (to revoke them all)
 * <prefix>:upload:waiting:<uid>        string epoch ms: when the image last entered WaitForUserUpload
 * <prefix>:upload:lock:<uid>           string owner, with a TTL: an upload of this image is running
 * ```
 *
 * A presented token is hashed, its record found by the digest, and the digests compared again with
 * `crypto.timingSafeEqual` (constant time in the token's content). A token is issued before the status showing
 * it is written (so a URL a user can see always has its record); a token whose status write lost a race is
 * `discard`ed, and `revoke` ends every token of an image (Ready, Failed, spec change, delete). The caller also
 * checks the record against the image (same uid and generation, still waiting).
 *
 * The lock makes "one upload at a time" hold across API processes: `SET NX PX`, renewed while the upload runs,
 * released by its owner only; if the owning process dies, it expires and the image can be uploaded again.
 */
import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import type { RedisClient } from './store.ts';
import type { ImageKind, ImageRef } from './schema.ts';

export const UPLOAD_TOKEN_LENGTH = 32;
const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

/** `length` characters from [A-Za-z0-9], uniformly (rejection sampling: no modulo bias). */
export function newUploadToken(length = UPLOAD_TOKEN_LENGTH): string {
  const limit = 256 - (256 % ALPHABET.length); // 248: bytes at or above are skipped
  let out = '';
  while (out.length < length) {
    for (const b of randomBytes(length * 2)) {
      if (b >= limit) continue;
      out += ALPHABET[b % ALPHABET.length];
      if (out.length === length) break;
    }
  }
  return out;
}

/** Whether a path segment can be a token at all (cheap filter before any lookup). */
export function isTokenShaped(s: string): boolean {
  return s.length >= UPLOAD_TOKEN_LENGTH && s.length <= 256 && /^[A-Za-z0-9]+$/.test(s);
}

function digestOf(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

/** What the record of a token says (never the token). */
export interface UploadRecord {
  ref: ImageRef;
  uid: string;
  generation: number;
}

export interface UploadLock {
  /** Extends the lock (call well within the TTL); false when it was lost (expired and taken). */
  renew(): Promise<boolean>;
  release(): Promise<void>;
}

/** Deletes the key only when it still holds our value. */
const RELEASE_SCRIPT = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`;
/** Extends the key's TTL only when it still holds our value. */
const RENEW_SCRIPT = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0`;

export class UploadTokens {
  private readonly redis: RedisClient;
  private readonly prefix: string;

  /** `prefix`: the ImageStore's prefix (with its hash tag). */
  constructor(redis: RedisClient, prefix: string) {
    this.redis = redis;
    this.prefix = prefix;
  }

  private tokenKey(hex: string): string {
    return `${this.prefix}:upload:token:${hex}`;
  }

  private tokensKey(uid: string): string {
    return `${this.prefix}:upload:tokens:${uid}`;
  }

  private waitingKey(uid: string): string {
    return `${this.prefix}:upload:waiting:${uid}`;
  }

  private lockKey(uid: string): string {
    return `${this.prefix}:upload:lock:${uid}`;
  }

  /** A new token for this generation of the image; valid until discarded or revoked. */
  async issue(image: UploadRecord): Promise<string> {
    const token = newUploadToken();
    const hex = digestOf(token).toString('hex');
    const record = JSON.stringify({
      kind: image.ref.kind,
      namespace: image.ref.namespace ?? '',
      name: image.ref.name,
      uid: image.uid,
      generation: image.generation,
      digest: hex,
    });
    await this.redis.multi().set(this.tokenKey(hex), record).sadd(this.tokensKey(image.uid), hex).exec();
    return token;
  }

  /** Forgets one token (its status write lost a race to another token). */
  async discard(uid: string, token: string): Promise<void> {
    const hex = digestOf(token).toString('hex');
    await this.redis.multi().del(this.tokenKey(hex)).srem(this.tokensKey(uid), hex).exec();
  }

  /** The record of a presented token, or null (unknown, revoked, or not a token at all). */
  async lookup(token: string): Promise<UploadRecord | null> {
    if (!isTokenShaped(token)) return null;
    const presented = digestOf(token);
    const json = await this.redis.get(this.tokenKey(presented.toString('hex')));
    if (!json) return null;
    const r = JSON.parse(json) as { kind: ImageKind; namespace: string; name: string; uid: string; generation: number; digest: string };
    const stored = Buffer.from(r.digest, 'hex');
    if (stored.length !== presented.length || !timingSafeEqual(stored, presented)) return null;
    return { ref: { kind: r.kind, name: r.name, ...(r.namespace ? { namespace: r.namespace } : {}) }, uid: r.uid, generation: r.generation };
  }

  /** Whether the image has any live token (housekeeping: a waiting image without one needs a new one). */
  async hasToken(uid: string): Promise<boolean> {
    return (await this.redis.scard(this.tokensKey(uid))) > 0;
  }

  /** The image (re-)entered WaitForUserUpload: the upload timeout counts from `now`. */
  async markWaiting(uid: string, now = Date.now()): Promise<void> {
    await this.redis.set(this.waitingKey(uid), String(now));
  }

  /** When the image last entered WaitForUserUpload (epoch ms), or undefined. */
  async waitingSince(uid: string): Promise<number | undefined> {
    const v = await this.redis.get(this.waitingKey(uid));
    return v === null ? undefined : Number(v);
  }

  /** Ends every token of the image (Ready, Failed, spec change, delete). Idempotent. */
  async revoke(uid: string): Promise<void> {
    const digests = await this.redis.smembers(this.tokensKey(uid));
    const multi = this.redis.multi();
    for (const hex of digests) multi.del(this.tokenKey(hex));
    multi.del(this.tokensKey(uid), this.waitingKey(uid));
    await multi.exec();
  }

  /** Takes the image's upload lock for `ttlMs`, or null when another upload holds it. */
  async lock(uid: string, ttlMs: number): Promise<UploadLock | null> {
    const key = this.lockKey(uid);
    const owner = randomUUID();
    const ok = await this.redis.set(key, owner, 'PX', ttlMs, 'NX');
    if (ok !== 'OK') return null;
    return {
      renew: async () => (await this.redis.eval(RENEW_SCRIPT, 1, key, owner, ttlMs)) === 1,
      release: async () => {
        await this.redis.eval(RELEASE_SCRIPT, 1, key, owner);
      },
    };
  }

  /** Whether an upload of the image is running somewhere (its lock is held). */
  async isLocked(uid: string): Promise<boolean> {
    return (await this.redis.exists(this.lockKey(uid))) === 1;
  }
}
