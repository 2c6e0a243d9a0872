/**
 * ImageStore: image resources in Redis, with optimistic concurrency and a change stream for watchers.
 *
 * Layout (every key under one prefix holding a Redis Cluster hash tag, default `{dvcr}:images`, so all keys live
 * in one slot and the Lua scripts below may touch them together):
 *
 * ```
 * <prefix>:cvi:<name>          hash {rev, obj}   one ClusterVirtualImage (obj = JSON of the whole resource)
 * <prefix>:vi:<ns>/<name>      hash {rev, obj}   one VirtualImage
 * <prefix>:idx:cvi | :idx:vi   zset (score 0)    members `<name>` / `<ns>/<name>`, listed in name order (BYLEX)
 * <prefix>:events              stream            {type ADDED|MODIFIED|DELETED, kind, namespace, name, object}
 * ```
 *
 * Every write is one Lua script that checks the object's `rev` (compare-and-set), appends the event (XADD with
 * approximate MAXLEN trimming) and stores the object with `rev` = the event's stream id. So the stream id is the
 * object's version, the event order is the write order, and a watcher can resume from any id it has seen.
 *
 * Status writes (`updateStatus`) re-read and retry on a concurrent write, but are refused outright when the object
 * is gone, re-created (uid), has a newer spec (generation) or is being deleted: a stale worker never overwrites the
 * status of a newer generation.
 *
 * The store does not own the Redis client it is given (close it yourself); each `watch` opens one duplicate
 * connection for its blocking reads and closes it when the iteration ends or its signal aborts. The client must
 * not use ioredis' `keyPrefix` (the scripts build key names themselves): put the prefix in `prefix` instead.
 */
import { createHash, randomUUID } from 'node:crypto';
import type { Cluster, Redis } from 'ioredis';
import { SpecFrozenError, StaleWriteError, StoreConflictError, WatchExpiredError } from './errors.ts';
import {
  API_VERSION,
  formatRef,
  refOf,
  type Image,
  type ImageKind,
  type ImageMetadata,
  type ImageRef,
  type ImageSpecInput,
} from './schema.ts';
import {
  isSpecFrozen,
  onCreated,
  onSpecChanged,
  onTerminating,
  rfc3339Now,
  stampGeneration,
  type ImageStatus,
} from './status.ts';

export type RedisClient = Redis | Cluster;

export interface ImageStoreOptions {
  redis: RedisClient;
  /** Key prefix; must contain a hash tag (`{...}`). Default `{dvcr}:images`. */
  prefix?: string;
  /** Approximate cap of the event stream (XADD MAXLEN ~). Default 10 000 events. */
  streamMaxLen?: number;
  /** Attempts of one optimistic write under contention before StoreConflictError. Default 20. */
  maxWriteAttempts?: number;
  /** Clock (creation/deletion timestamps, condition times). Default `new Date()`. */
  now?: () => Date;
  /** uid generator for new objects. Default `crypto.randomUUID`. */
  newUid?: () => string;
}

export const DEFAULT_PREFIX = '{dvcr}:images';
export const DEFAULT_STREAM_MAXLEN = 10_000;

export type ApplyResultKind = 'created' | 'configured' | 'unchanged';

export interface ApplyResult {
  object: Image;
  /** A new object (new uid, generation 1): start an import. */
  created: boolean;
  /** The spec of an existing object changed (generation + 1, status reset to Pending): restart the import. */
  specChanged: boolean;
  /** kubectl's word for what happened: `created`, `configured` (spec or labels/annotations) or `unchanged`. */
  result: ApplyResultKind;
}

export type ImageEventType = 'ADDED' | 'MODIFIED' | 'DELETED';

/**
 * What `watch` yields. Objects present when the watch starts come first as ADDED without `id`, then one BOOKMARK
 * whose `id` is the stream position they describe, then live events each with its stream `id`. Resume with the
 * last `id` received (`sinceId`): an event without `id` is not a resumable position. A BOOKMARK also comes, at most
 * every `bookmarkIntervalMs`, while only events for other objects pass, so a quiet filtered watch keeps a recent id.
 */
export type WatchEvent =
  | { type: ImageEventType; object: Image; id?: string }
  | { type: 'BOOKMARK'; id: string };

export interface WatchOptions {
  /** Only this object (with `namespace` for a VirtualImage; without it, that name in every namespace). */
  name?: string;
  /** VirtualImage only: only this namespace. */
  namespace?: string;
  /** Resume after this stream id: no initial objects, only events after it. Throws WatchExpiredError if trimmed. */
  sinceId?: string;
  /** Ends the iteration (and closes its connection). */
  signal?: AbortSignal;
  /** XREAD BLOCK timeout per round, ms. Default 5000. */
  blockMs?: number;
  /** See {@link WatchEvent}. Default 60 000. */
  bookmarkIntervalMs?: number;
}

export interface UpdateStatusOptions {
  /** Allow the write while the object is being deleted (the delete flow's own writes). Default false. */
  allowTerminating?: boolean;
}

/** Mutates nothing: returns the next status (return the same object to skip the write). */
export type StatusMutator = (status: ImageStatus, object: Image) => ImageStatus;

// ---------------------------------------------------------------------------------------------------------------
// Lua

/** CAS write of one object plus its event. Returns {1, streamId} or {0, currentRev}. */
const PUT_SCRIPT = `
local cur = redis.call('HGET', KEYS[1], 'rev')
if ARGV[1] == '' then
  if cur then return {0, cur} end
elseif cur ~= ARGV[1] then
  return {0, cur or ''}
end
local id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*',
  'type', ARGV[3], 'kind', ARGV[6], 'namespace', ARGV[7], 'name', ARGV[8], 'object', ARGV[2])
if ARGV[3] == 'DELETED' then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[4])
else
  redis.call('HSET', KEYS[1], 'rev', id, 'obj', ARGV[2])
  redis.call('ZADD', KEYS[2], 0, ARGV[4])
end
return {1, id}
`;

/** Consistent snapshot: {lastStreamId, rev1, obj1, rev2, obj2, ...} for index members in [ARGV[2], ARGV[3]]. */
const SNAPSHOT_SCRIPT = `
local out = {}
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if #last > 0 then out[1] = last[1][1] else out[1] = '0-0' end
local members = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[2], ARGV[3])
for _, m in ipairs(members) do
  local v = redis.call('HMGET', ARGV[1] .. m, 'rev', 'obj')
  if v[1] and v[2] then
    out[#out + 1] = v[1]
    out[#out + 1] = v[2]
  end
end
return out
`;

class LuaScript {
  private readonly sha: string;
  constructor(private readonly source: string) {
    this.sha = createHash('sha1').update(source).digest('hex');
  }

  async run(redis: RedisClient, keys: string[], args: (string | number)[]): Promise<unknown> {
    try {
      return await redis.evalsha(this.sha, keys.length, ...keys, ...args);
    } catch (e) {
      if (!(e instanceof Error) || !e.message.includes('NOSCRIPT')) throw e;
      return await redis.eval(this.source, keys.length, ...keys, ...args);
    }
  }
}

const putScript = new LuaScript(PUT_SCRIPT);
const snapshotScript = new LuaScript(SNAPSHOT_SCRIPT);

// ---------------------------------------------------------------------------------------------------------------

interface Stored {
  rev: string;
  obj: Image;
}

/** Objects whose last state a store remembers (`ImageStore.recent`): a worker's in-flight images and then some. */
const RECENT_OBJECTS = 1024;

/** What a status write does with the state `cur`: write this object, change nothing, or refuse. */
function planStatusWrite(
  ref: ImageRef,
  cur: Stored | null,
  uid: string,
  generation: number,
  mutate: StatusMutator,
  opts: UpdateStatusOptions,
): { write: Image } | { unchanged: Image } | { error: StaleWriteError } {
  if (!cur) return { error: new StaleWriteError(`${formatRef(ref)} no longer exists`, 'NotFound') };
  const old = cur.obj;
  if (old.metadata.uid !== uid) {
    return {
      error: new StaleWriteError(
        `${formatRef(ref)} was re-created (uid ${old.metadata.uid}); the write was for uid ${uid}`,
        'UidMismatch',
      ),
    };
  }
  if (old.metadata.generation !== generation) {
    return {
      error: new StaleWriteError(
        `${formatRef(ref)} is at generation ${old.metadata.generation}; the write was for generation ${generation}`,
        'GenerationMismatch',
      ),
    };
  }
  if (old.metadata.deletionTimestamp !== undefined && !opts.allowTerminating) {
    return { error: new StaleWriteError(`${formatRef(ref)} is being deleted`, 'Terminating') };
  }
  const next = mutate(old.status, old);
  if (next === old.status) return { unchanged: old };
  const status = stampGeneration(next, generation);
  if (canonicalJSON(status) === canonicalJSON(old.status)) return { unchanged: old };
  return { write: { ...old, status } };
}

const KIND_KEY: Record<ImageKind, string> = { ClusterVirtualImage: 'cvi', VirtualImage: 'vi' };

export class ImageStore {
  readonly prefix: string;
  readonly streamKey: string;
  private readonly redis: RedisClient;
  private readonly streamMaxLen: number;
  private readonly maxWriteAttempts: number;
  private readonly now: () => Date;
  private readonly newUid: () => string;

  constructor(opts: ImageStoreOptions) {
    this.redis = opts.redis;
    this.prefix = opts.prefix ?? DEFAULT_PREFIX;
    if (!/\{[^{}]+\}/.test(this.prefix)) {
      throw new TypeError(`ImageStore prefix "${this.prefix}" must contain a Redis Cluster hash tag, e.g. "{dvcr}:images"`);
    }
    const keyPrefix = (this.redis.options as { keyPrefix?: string } | undefined)?.keyPrefix;
    if (keyPrefix) {
      throw new TypeError(`ImageStore needs a Redis client without keyPrefix (got "${keyPrefix}"); use the prefix option`);
    }
    this.streamKey = `${this.prefix}:events`;
    this.streamMaxLen = opts.streamMaxLen ?? DEFAULT_STREAM_MAXLEN;
    this.maxWriteAttempts = opts.maxWriteAttempts ?? 20;
    this.now = opts.now ?? (() => new Date());
    this.newUid = opts.newUid ?? randomUUID;
  }

  // -- keys

  private objectKey(ref: ImageRef): string {
    return `${this.prefix}:${KIND_KEY[ref.kind]}:${member(ref)}`;
  }

  private indexKey(kind: ImageKind): string {
    return `${this.prefix}:idx:${KIND_KEY[kind]}`;
  }

  // -- reads

  private async read(ref: ImageRef): Promise<Stored | null> {
    const key = this.objectKey(ref);
    const [rev, json] = await this.redis.hmget(key, 'rev', 'obj');
    if (rev == null || json == null) {
      this.recent.delete(key);
      return null;
    }
    this.remember(key, rev, json);
    return { rev, obj: JSON.parse(json) as Image };
  }

  /**
   * The last state of an object this store read or wrote, as JSON (so no caller can change it): a status write
   * tries it first and saves a round trip (a worker's writes follow its own read or write). Only a successful
   * compare-and-set is taken from it; anything else (a conflict, a stale uid or generation, nothing to write) is
   * decided again on a fresh read.
   */
  private readonly recent = new Map<string, { rev: string; json: string }>();

  private remember(key: string, rev: string, json: string): void {
    this.recent.delete(key);
    this.recent.set(key, { rev, json });
    if (this.recent.size > RECENT_OBJECTS) this.recent.delete(this.recent.keys().next().value!);
  }

  private recall(ref: ImageRef): Stored | undefined {
    const r = this.recent.get(this.objectKey(ref));
    return r && { rev: r.rev, obj: JSON.parse(r.json) as Image };
  }

  /** One object, or null. `namespace` is ignored for a ClusterVirtualImage and required for a VirtualImage. */
  async get(kind: ImageKind, namespace: string | undefined, name: string): Promise<Image | null> {
    return (await this.read(makeRef(kind, namespace, name)))?.obj ?? null;
  }

  /** All objects of a kind (a VirtualImage namespace when given), sorted by namespace then name. */
  async list(kind: ImageKind, namespace?: string): Promise<Image[]> {
    return (await this.snapshot(kind, { namespace })).objects.map((s) => s.obj);
  }

  private async snapshot(
    kind: ImageKind,
    filter: { namespace?: string | undefined; name?: string | undefined },
  ): Promise<{ lastId: string; objects: Stored[] }> {
    let min = '-';
    let max = '+';
    if (kind === 'ClusterVirtualImage') {
      if (filter.name !== undefined) min = max = `[${filter.name}`;
    } else if (filter.namespace !== undefined) {
      if (filter.name !== undefined) {
        min = max = `[${filter.namespace}/${filter.name}`;
      } else {
        // Members `<ns>/<name>`: '0' is the character after '/', so [ns/, ns0) is exactly this namespace.
        min = `[${filter.namespace}/`;
        max = `(${filter.namespace}0`;
      }
    }
    const reply = (await snapshotScript.run(
      this.redis,
      [this.indexKey(kind), this.streamKey],
      [`${this.prefix}:${KIND_KEY[kind]}:`, min, max],
    )) as string[];
    const [lastId = '0-0', ...rest] = reply;
    const objects: Stored[] = [];
    for (let i = 0; i + 1 < rest.length; i += 2) {
      const obj = JSON.parse(rest[i + 1] as string) as Image;
      if (filter.name !== undefined && obj.metadata.name !== filter.name) continue;
      objects.push({ rev: rest[i] as string, obj });
    }
    return { lastId, objects };
  }

  // -- writes

  /** CAS write; false when the object's rev is no longer `expectedRev` ('' = must not exist). */
  private async put(ref: ImageRef, expectedRev: string, obj: Image, type: ImageEventType): Promise<string | null> {
    const key = this.objectKey(ref);
    const json = JSON.stringify(obj);
    // Forgotten first: whatever happens to this write, the remembered state may no longer be the stored one.
    this.recent.delete(key);
    const reply = (await putScript.run(
      this.redis,
      [key, this.indexKey(ref.kind), this.streamKey],
      [expectedRev, json, type, member(ref), this.streamMaxLen, ref.kind, ref.namespace ?? '', ref.name],
    )) as [number, string];
    if (reply[0] !== 1) return null;
    if (type !== 'DELETED') this.remember(key, reply[1], json);
    return reply[1];
  }

  /**
   * Creates the object (fresh uid, generation 1, status Pending) or updates it: a changed spec bumps the generation
   * and resets the status to Pending (the caller restarts the import); changed labels/annotations alone do neither.
   * A spec change is refused once the image is Ready (upstream's message) or while it is being deleted.
   * The manifest must come from `parseImageManifest`.
   */
  async apply(manifest: ImageSpecInput): Promise<ApplyResult> {
    const ref = refOf(manifest);
    checkRef(ref);
    for (let attempt = 0; attempt < this.maxWriteAttempts; attempt++) {
      const cur = await this.read(ref);
      const now = this.now();
      if (!cur) {
        const status = stampGeneration(onCreated({ now }), 1);
        const server = { uid: this.newUid(), generation: 1, creationTimestamp: rfc3339Now(now) };
        const obj = buildObject(manifest, server, manifest.spec, status);
        if ((await this.put(ref, '', obj, 'ADDED')) !== null) {
          return { object: obj, created: true, specChanged: false, result: 'created' };
        }
        continue;
      }
      const old = cur.obj;
      const specChanged = canonicalJSON(old.spec) !== canonicalJSON(manifest.spec);
      const metaChanged =
        canonicalJSON(old.metadata.labels ?? {}) !== canonicalJSON(manifest.metadata.labels ?? {}) ||
        canonicalJSON(old.metadata.annotations ?? {}) !== canonicalJSON(manifest.metadata.annotations ?? {});
      if (!specChanged && !metaChanged) return { object: old, created: false, specChanged: false, result: 'unchanged' };
      if (specChanged) {
        if (old.metadata.deletionTimestamp !== undefined) {
          throw new SpecFrozenError(
            `${formatRef(ref)} is being deleted: configuration changes are not available`,
            'Terminating',
          );
        }
        if (isSpecFrozen(old.status)) {
          throw new SpecFrozenError(`${ref.kind} is in a Ready state: configuration changes are not available`, 'Ready');
        }
      }
      const generation = specChanged ? old.metadata.generation + 1 : old.metadata.generation;
      const status = specChanged ? stampGeneration(onSpecChanged(old.status, generation, { now }), generation) : old.status;
      const obj = buildObject(
        manifest,
        {
          uid: old.metadata.uid,
          generation,
          creationTimestamp: old.metadata.creationTimestamp,
          deletionTimestamp: old.metadata.deletionTimestamp,
        },
        specChanged ? manifest.spec : old.spec,
        status,
      );
      if ((await this.put(ref, cur.rev, obj, 'MODIFIED')) !== null) {
        return { object: obj, created: false, specChanged, result: 'configured' };
      }
    }
    throw new StoreConflictError(`${formatRef(ref)}: too many concurrent writes; try again`);
  }

  /**
   * Writes the status of one generation of one object: `mutate` gets the current status and returns the next
   * (return the same object to write nothing). Atomic against concurrent writes (re-read and retried). Throws
   * StaleWriteError when the object is gone, its uid or generation differ from the caller's, or it is being deleted
   * (unless `allowTerminating`). The status and its conditions are stamped with `observedGeneration`.
   */
  async updateStatus(
    ref: ImageRef,
    uid: string,
    generation: number,
    mutate: StatusMutator,
    opts: UpdateStatusOptions = {},
  ): Promise<Image> {
    checkRef(ref);
    for (let attempt = 0; attempt < this.maxWriteAttempts; attempt++) {
      const remembered = attempt === 0 ? this.recall(ref) : undefined;
      const cur = remembered ?? (await this.read(ref));
      const plan = planStatusWrite(ref, cur, uid, generation, mutate, opts);
      if ('write' in plan) {
        if ((await this.put(ref, cur!.rev, plan.write, 'MODIFIED')) !== null) return plan.write;
        continue;
      }
      // An answer without a write is only given from what Redis holds now.
      if (remembered) continue;
      if ('error' in plan) throw plan.error;
      return plan.unchanged;
    }
    throw new StoreConflictError(`${formatRef(ref)}: too many concurrent writes; try again`);
  }

  /**
   * Starts deletion: sets `metadata.deletionTimestamp` and phase Terminating. Idempotent (an object already being
   * deleted is returned as is). Null when there is no such object (or its uid differs from `opts.uid`).
   */
  async markDeleting(ref: ImageRef, opts: { uid?: string } = {}): Promise<Image | null> {
    checkRef(ref);
    for (let attempt = 0; attempt < this.maxWriteAttempts; attempt++) {
      const cur = await this.read(ref);
      if (!cur || (opts.uid !== undefined && cur.obj.metadata.uid !== opts.uid)) return null;
      const old = cur.obj;
      if (old.metadata.deletionTimestamp !== undefined) return old;
      const now = this.now();
      const obj: Image = {
        ...old,
        metadata: metadataInOrder({ ...old.metadata, deletionTimestamp: rfc3339Now(now) }),
        status: stampGeneration(onTerminating(old.status, { now }), old.metadata.generation),
      };
      if ((await this.put(ref, cur.rev, obj, 'MODIFIED')) !== null) return obj;
    }
    throw new StoreConflictError(`${formatRef(ref)}: too many concurrent writes; try again`);
  }

  /**
   * Removes the object (the end of deletion) and emits DELETED with its last state. With `opts.uid`, only that
   * incarnation is removed (a re-created object of the same name is left alone). Returns the removed object.
   */
  async remove(ref: ImageRef, opts: { uid?: string } = {}): Promise<Image | null> {
    checkRef(ref);
    for (let attempt = 0; attempt < this.maxWriteAttempts; attempt++) {
      const cur = await this.read(ref);
      if (!cur || (opts.uid !== undefined && cur.obj.metadata.uid !== opts.uid)) return null;
      if ((await this.put(ref, cur.rev, cur.obj, 'DELETED')) !== null) return cur.obj;
    }
    throw new StoreConflictError(`${formatRef(ref)}: too many concurrent writes; try again`);
  }

  // -- watch

  /**
   * Current objects, then live changes, of one kind (optionally one namespace / one name). See {@link WatchEvent}
   * for the order and resuming. Ends when `signal` aborts or the consumer stops iterating.
   */
  async *watch(kind: ImageKind, opts: WatchOptions = {}): AsyncGenerator<WatchEvent, void, undefined> {
    const { name, namespace, signal } = opts;
    if (kind === 'ClusterVirtualImage' && namespace !== undefined) {
      throw new TypeError('ClusterVirtualImage is cluster-scoped: watch it without a namespace');
    }
    const blockMs = opts.blockMs ?? 5000;
    const bookmarkIntervalMs = opts.bookmarkIntervalMs ?? 60_000;
    if (signal?.aborted) return;

    let cursor: string;
    if (opts.sinceId === undefined) {
      const snap = await this.snapshot(kind, { namespace, name });
      for (const s of snap.objects) {
        if (signal?.aborted) return;
        yield { type: 'ADDED', object: s.obj };
      }
      cursor = snap.lastId;
      if (signal?.aborted) return;
      yield { type: 'BOOKMARK', id: cursor };
    } else {
      cursor = parseStreamId(opts.sinceId);
      await this.checkNotExpired(cursor);
    }

    const reader = (this.redis as { duplicate(): RedisClient }).duplicate();
    // A pending XREAD BLOCK is ended by closing its connection; the read then rejects and the loop returns.
    const onAbort = (): void => reader.disconnect();
    signal?.addEventListener('abort', onAbort, { once: true });
    let lastYield = Date.now();
    let lastYieldedId = cursor; // the snapshot's BOOKMARK, or sinceId that the caller already holds
    try {
      while (!signal?.aborted) {
        let reply: [string, [string, string[]][]][] | null;
        try {
          reply = (await reader.xread('COUNT', 100, 'BLOCK', blockMs, 'STREAMS', this.streamKey, cursor)) as
            | [string, [string, string[]][]][]
            | null;
        } catch (e) {
          if (signal?.aborted) return;
          throw e;
        }
        for (const [, entries] of reply ?? []) {
          for (const [id, fields] of entries) {
            cursor = id;
            const ev = parseEntry(fields);
            const wanted =
              ev !== null &&
              ev.kind === kind &&
              (namespace === undefined || ev.namespace === namespace) &&
              (name === undefined || ev.name === name);
            if (!ev || !wanted) continue;
            if (signal?.aborted) return;
            yield { type: ev.type, object: ev.object, id };
            lastYield = Date.now();
            lastYieldedId = id;
          }
        }
        // Only other objects' events passed since the last yield: offer their position as a bookmark.
        if (cursor !== lastYieldedId && Date.now() - lastYield >= bookmarkIntervalMs) {
          if (signal?.aborted) return;
          yield { type: 'BOOKMARK', id: cursor };
          lastYield = Date.now();
          lastYieldedId = cursor;
        }
      }
    } finally {
      signal?.removeEventListener('abort', onAbort);
      reader.disconnect();
    }
  }

  /** The id of the newest event ('0-0' when none): a position to resume a watch from. */
  async lastEventId(): Promise<string> {
    const last = (await this.redis.xrevrange(this.streamKey, '+', '-', 'COUNT', 1)) as [string, string[]][];
    return last[0]?.[0] ?? '0-0';
  }

  /** Throws WatchExpiredError when events after `sinceId` were trimmed or the id is from a stream we do not have. */
  private async checkNotExpired(sinceId: string): Promise<void> {
    let info: unknown;
    try {
      info = await this.redis.xinfo('STREAM', this.streamKey);
    } catch (e) {
      if (e instanceof Error && /no such key/i.test(e.message)) {
        if (compareStreamIds(sinceId, '0-0') > 0) throw new WatchExpiredError(sinceId);
        return;
      }
      throw e;
    }
    const map = pairs(info);
    const lastGenerated = typeof map['last-generated-id'] === 'string' ? map['last-generated-id'] : undefined;
    if (lastGenerated !== undefined && compareStreamIds(sinceId, lastGenerated) > 0) {
      throw new WatchExpiredError(sinceId); // an id from the future: Redis was reset
    }
    const maxDeleted = map['max-deleted-entry-id'];
    if (typeof maxDeleted === 'string' && compareStreamIds(sinceId, maxDeleted) < 0) throw new WatchExpiredError(sinceId);
    // Trimming (MAXLEN) removes the oldest entries: events after sinceId are all still there when sinceId is at or
    // after the first entry, or nothing was ever trimmed. (An id exactly at the last trimmed entry counts as expired:
    // a needless relist, never a missed event.)
    const length = Number(map.length ?? 0);
    const added = map['entries-added'] === undefined ? undefined : Number(map['entries-added']);
    if (added !== undefined && added <= length) return;
    const first = map['first-entry'];
    const recorded = map['recorded-first-entry-id'];
    const firstId =
      typeof recorded === 'string' ? recorded : Array.isArray(first) && typeof first[0] === 'string' ? first[0] : undefined;
    if (firstId === undefined) {
      // Empty stream after trimming: only the newest position is safe.
      if (lastGenerated !== undefined && compareStreamIds(sinceId, lastGenerated) < 0) throw new WatchExpiredError(sinceId);
      return;
    }
    if (compareStreamIds(sinceId, firstId) < 0) throw new WatchExpiredError(sinceId);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Helpers

function member(ref: ImageRef): string {
  return ref.kind === 'ClusterVirtualImage' ? ref.name : `${ref.namespace ?? ''}/${ref.name}`;
}

function makeRef(kind: ImageKind, namespace: string | undefined, name: string): ImageRef {
  const ref: ImageRef = kind === 'ClusterVirtualImage' ? { kind, name } : { kind, namespace, name };
  checkRef(ref);
  return ref;
}

function checkRef(ref: ImageRef): void {
  if (!ref.name) throw new TypeError(`${ref.kind} reference without a name`);
  if (ref.kind === 'VirtualImage' && !ref.namespace) {
    throw new TypeError(`VirtualImage "${ref.name}" reference without a namespace`);
  }
  if (/[/:\s]/.test(ref.name) || (ref.namespace !== undefined && /[/:\s]/.test(ref.namespace))) {
    throw new TypeError(`invalid ${ref.kind} reference "${ref.namespace ?? ''}/${ref.name}"`);
  }
}

function metadataInOrder(m: ImageMetadata): ImageMetadata {
  const out: ImageMetadata = { name: m.name } as ImageMetadata;
  if (m.namespace !== undefined) out.namespace = m.namespace;
  out.uid = m.uid;
  out.generation = m.generation;
  out.creationTimestamp = m.creationTimestamp;
  if (m.deletionTimestamp !== undefined) out.deletionTimestamp = m.deletionTimestamp;
  if (m.labels !== undefined && Object.keys(m.labels).length > 0) out.labels = m.labels;
  if (m.annotations !== undefined && Object.keys(m.annotations).length > 0) out.annotations = m.annotations;
  return out;
}

function buildObject(
  manifest: ImageSpecInput,
  server: { uid: string; generation: number; creationTimestamp: string; deletionTimestamp?: string | undefined },
  spec: Image['spec'],
  status: ImageStatus,
): Image {
  const metadata = metadataInOrder({
    name: manifest.metadata.name,
    namespace: manifest.kind === 'VirtualImage' ? manifest.metadata.namespace : undefined,
    uid: server.uid,
    generation: server.generation,
    creationTimestamp: server.creationTimestamp,
    deletionTimestamp: server.deletionTimestamp,
    labels: manifest.metadata.labels,
    annotations: manifest.metadata.annotations,
  } as ImageMetadata);
  return { apiVersion: API_VERSION, kind: manifest.kind, metadata, spec, status };
}

/** JSON with object keys sorted: equal values give equal strings. */
export function canonicalJSON(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return v;
    const sorted: Record<string, unknown> = {};
    for (const k of Object.keys(v).sort()) sorted[k] = (v as Record<string, unknown>)[k];
    return sorted;
  });
}

const STREAM_ID = /^(\d+)(?:-(\d+))?$/;

function parseStreamId(id: string): string {
  const m = STREAM_ID.exec(id);
  if (!m) throw new TypeError(`"${id}" is not a stream id (<ms>-<seq>)`);
  return `${m[1]}-${m[2] ?? '0'}`;
}

/** Orders Redis stream ids (`<ms>-<seq>`). */
export function compareStreamIds(a: string, b: string): number {
  const [am = '0', as = '0'] = a.split('-');
  const [bm = '0', bs = '0'] = b.split('-');
  const d = BigInt(am) - BigInt(bm) || BigInt(as) - BigInt(bs);
  return d < 0n ? -1 : d > 0n ? 1 : 0;
}

function pairs(reply: unknown): Record<string, unknown> {
  if (Array.isArray(reply)) {
    const out: Record<string, unknown> = {};
    for (let i = 0; i + 1 < reply.length; i += 2) out[String(reply[i])] = reply[i + 1];
    return out;
  }
  if (reply instanceof Map) return Object.fromEntries(reply) as Record<string, unknown>;
  return typeof reply === 'object' && reply !== null ? (reply as Record<string, unknown>) : {};
}

interface ParsedEntry {
  type: ImageEventType;
  kind: string;
  namespace: string | undefined;
  name: string;
  object: Image;
}

function parseEntry(fields: string[]): ParsedEntry | null {
  const f = pairs(fields);
  const type = f.type;
  if (type !== 'ADDED' && type !== 'MODIFIED' && type !== 'DELETED') return null;
  if (typeof f.object !== 'string' || typeof f.kind !== 'string' || typeof f.name !== 'string') return null;
  const namespace = typeof f.namespace === 'string' && f.namespace !== '' ? f.namespace : undefined;
  return { type, kind: f.kind, namespace, name: f.name, object: JSON.parse(f.object) as Image };
}
