import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  API_VERSION,
  ImageStore,
  SpecFrozenError,
  StaleWriteError,
  WatchExpiredError,
  compareStreamIds,
  imageSchema,
  onProgress,
  onProvisioningStarted,
  onReady,
  parseImageManifest,
  type Image,
  type ImageSpecInput,
  type WatchEvent,
  type WatchOptions,
} from '../../src/images/index.ts';

let redis: Redis;

beforeAll(async () => {
  redis = new Redis(inject('redisUrl'), { lazyConnect: true });
  await redis.connect();
});

afterAll(async () => {
  await redis.quit();
});

/** A store under a prefix of its own, so tests never see each other's keys. */
function newStore(opts: { streamMaxLen?: number } = {}): ImageStore {
  return new ImageStore({ redis, prefix: `{dvcr-test-${randomUUID().slice(0, 8)}}:images`, ...opts });
}

function cvi(name: string, url = 'https://images.example/disk.qcow2', labels?: Record<string, string>): ImageSpecInput {
  return parseImageManifest({
    apiVersion: API_VERSION,
    kind: 'ClusterVirtualImage',
    metadata: labels ? { name, labels } : { name },
    spec: { dataSource: { type: 'HTTP', http: { url } } },
  });
}

function vi(namespace: string, name: string): ImageSpecInput {
  return parseImageManifest({
    apiVersion: API_VERSION,
    kind: 'VirtualImage',
    metadata: { name, namespace },
    spec: { dataSource: { type: 'Upload' } },
  });
}

const READY = { registryURL: 'dvcr.example/cvi/x:uid', format: 'qcow2' as const, storedBytes: 10, unpackedBytes: 20 };

/** Collects `n` events from a watch (with a deadline), then stops it. */
async function take(it: AsyncIterable<WatchEvent>, n: number, ac: AbortController, ms = 10_000): Promise<WatchEvent[]> {
  const out: WatchEvent[] = [];
  const timer = setTimeout(() => ac.abort(), ms);
  try {
    for await (const ev of it) {
      out.push(ev);
      if (out.length >= n) break;
    }
  } finally {
    clearTimeout(timer);
  }
  return out;
}

/** Starts a watch and reads up to its first BOOKMARK, so later changes are surely live events. */
async function watching(
  store: ImageStore,
  kind: 'ClusterVirtualImage' | 'VirtualImage',
  opts: Omit<WatchOptions, 'signal'> = {},
): Promise<{ initial: WatchEvent[]; rest: (n: number) => Promise<WatchEvent[]> }> {
  const ac = new AbortController();
  const it = store.watch(kind, { blockMs: 200, ...opts, signal: ac.signal });
  const initial: WatchEvent[] = [];
  for (;;) {
    const r = await it.next();
    if (r.done) throw new Error('watch ended before its BOOKMARK');
    initial.push(r.value);
    if (r.value.type === 'BOOKMARK') break;
  }
  return {
    initial,
    rest: async (n) => {
      const out: WatchEvent[] = [];
      const timer = setTimeout(() => ac.abort(), 10_000);
      try {
        while (out.length < n) {
          const r = await it.next();
          if (r.done) break;
          out.push(r.value);
        }
      } finally {
        clearTimeout(timer);
        await it.return(undefined);
      }
      return out;
    },
  };
}

function summary(evs: WatchEvent[]): string[] {
  return evs.map((e) =>
    e.type === 'BOOKMARK' ? 'BOOKMARK' : `${e.type} ${e.object.metadata.name} g${e.object.metadata.generation} ${e.object.status.phase}`,
  );
}

describe('ImageStore.apply', () => {
  it('creates with a fresh uid, generation 1, creationTimestamp and Pending status', async () => {
    const store = newStore();
    const r = await store.apply(cvi('ubuntu'));
    expect(r.created).toBe(true);
    expect(r.specChanged).toBe(false);
    expect(r.result).toBe('created');
    const o = r.object;
    expect(imageSchema.parse(o)).toBeTruthy();
    expect(o.metadata.uid).toMatch(/^[0-9a-f-]{36}$/);
    expect(o.metadata.generation).toBe(1);
    expect(o.metadata.creationTimestamp).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/);
    expect(Object.keys(o)).toEqual(['apiVersion', 'kind', 'metadata', 'spec', 'status']);
    expect(o.status.phase).toBe('Pending');
    expect(o.status.observedGeneration).toBe(1);
    expect(await store.get('ClusterVirtualImage', undefined, 'ubuntu')).toEqual(o);
  });

  it('re-applying the same manifest is unchanged; labels alone configure without a new generation', async () => {
    const store = newStore();
    const first = (await store.apply(cvi('a'))).object;
    const same = await store.apply(cvi('a'));
    expect(same).toMatchObject({ created: false, specChanged: false, result: 'unchanged' });
    expect(same.object).toEqual(first);
    const labelled = await store.apply(cvi('a', undefined, { tier: 'gold' }));
    expect(labelled).toMatchObject({ created: false, specChanged: false, result: 'configured' });
    expect(labelled.object.metadata).toMatchObject({ uid: first.metadata.uid, generation: 1, labels: { tier: 'gold' } });
  });

  it('a spec change before Ready bumps the generation and resets the status to Pending', async () => {
    const store = newStore();
    const o = (await store.apply(cvi('b'))).object;
    await store.updateStatus({ kind: 'ClusterVirtualImage', name: 'b' }, o.metadata.uid, 1, (s) =>
      onProgress(onProvisioningStarted(s), { bytesDone: 5, bytesTotal: 10, currentBps: 1, avgBps: 1 }),
    );
    const r = await store.apply(cvi('b', 'https://images.example/other.qcow2'));
    expect(r).toMatchObject({ created: false, specChanged: true, result: 'configured' });
    expect(r.object.metadata.generation).toBe(2);
    expect(r.object.metadata.uid).toBe(o.metadata.uid);
    expect(r.object.metadata.creationTimestamp).toBe(o.metadata.creationTimestamp);
    expect(r.object.status.phase).toBe('Pending');
    expect(r.object.status).not.toHaveProperty('progress');
    expect(r.object.status.observedGeneration).toBe(2);
    expect(r.object.spec.dataSource).toEqual({ type: 'HTTP', http: { url: 'https://images.example/other.qcow2' } });
  });

  it("refuses a spec change once Ready with upstream's message; labels may still change", async () => {
    const store = newStore();
    const o = (await store.apply(cvi('c'))).object;
    await store.updateStatus({ kind: 'ClusterVirtualImage', name: 'c' }, o.metadata.uid, 1, (s) => onReady(onProvisioningStarted(s), READY));
    const err = await store.apply(cvi('c', 'https://images.example/new.qcow2')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SpecFrozenError);
    expect((err as Error).message).toBe('ClusterVirtualImage is in a Ready state: configuration changes are not available');
    expect((await store.apply(cvi('c', undefined, { a: 'b' }))).result).toBe('configured');

    const v = (await store.apply(vi('ns', 'v'))).object;
    await store.updateStatus({ kind: 'VirtualImage', namespace: 'ns', name: 'v' }, v.metadata.uid, 1, (s) => onReady(s, READY));
    const manifest = vi('ns', 'v');
    manifest.spec = { dataSource: { type: 'Upload', upload: { checksum: { md5: 'a'.repeat(32) } } } };
    await expect(store.apply(manifest)).rejects.toThrow('VirtualImage is in a Ready state: configuration changes are not available');
  });

  it('refuses a spec change while deleting', async () => {
    const store = newStore();
    await store.apply(cvi('d'));
    await store.markDeleting({ kind: 'ClusterVirtualImage', name: 'd' });
    await expect(store.apply(cvi('d', 'https://images.example/x.img'))).rejects.toThrow(
      'ClusterVirtualImage "d" is being deleted: configuration changes are not available',
    );
  });

  it('concurrent creates of one name make one object', async () => {
    const store = newStore();
    const results = await Promise.all(Array.from({ length: 8 }, () => store.apply(cvi('race'))));
    expect(results.filter((r) => r.created)).toHaveLength(1);
    expect(new Set(results.map((r) => r.object.metadata.uid)).size).toBe(1);
  });

  it('list sorts by name and scopes VirtualImages by namespace', async () => {
    const store = newStore();
    for (const n of ['zeta', 'alpha', 'mid']) await store.apply(cvi(n));
    await store.apply(vi('ns', 'b'));
    await store.apply(vi('ns', 'a'));
    await store.apply(vi('ns-x', 'a'));
    await store.apply(vi('ns0', 'a'));
    expect((await store.list('ClusterVirtualImage')).map((o) => o.metadata.name)).toEqual(['alpha', 'mid', 'zeta']);
    expect((await store.list('VirtualImage', 'ns')).map((o) => `${o.metadata.namespace}/${o.metadata.name}`)).toEqual(['ns/a', 'ns/b']);
    expect((await store.list('VirtualImage')).map((o) => `${o.metadata.namespace}/${o.metadata.name}`)).toEqual([
      'ns-x/a',
      'ns/a',
      'ns/b',
      'ns0/a',
    ]);
    expect(await store.get('VirtualImage', 'ns', 'zzz')).toBeNull();
  });

  it('keeps every key under the prefix (one hash tag)', async () => {
    const store = newStore();
    await store.apply(cvi('k'));
    await store.apply(vi('ns', 'k'));
    const keys = await redis.keys(`${store.prefix}*`);
    expect(keys.sort()).toEqual(
      [`${store.prefix}:cvi:k`, `${store.prefix}:events`, `${store.prefix}:idx:cvi`, `${store.prefix}:idx:vi`, `${store.prefix}:vi:ns/k`].sort(),
    );
  });

  it('rejects a prefix without a hash tag', () => {
    expect(() => new ImageStore({ redis, prefix: 'dvcr:images' })).toThrow(/hash tag/);
  });
});

describe('ImageStore.updateStatus', () => {
  it('writes the status of the current generation and stamps observedGeneration', async () => {
    const store = newStore();
    const o = (await store.apply(cvi('s'))).object;
    const ref = { kind: 'ClusterVirtualImage' as const, name: 's' };
    const after = await store.updateStatus(ref, o.metadata.uid, 1, (s) => onProvisioningStarted(s));
    expect(after.status.phase).toBe('Provisioning');
    expect(after.status.conditions.every((c) => c.observedGeneration === 1)).toBe(true);
    expect(await store.get('ClusterVirtualImage', undefined, 's')).toEqual(after);
  });

  it('a stale worker (old generation) is refused and does not overwrite the new status', async () => {
    const store = newStore();
    const ref = { kind: 'ClusterVirtualImage' as const, name: 'stale' };
    const o = (await store.apply(cvi('stale'))).object;
    await store.apply(cvi('stale', 'https://images.example/v2.img'));
    const err = await store
      .updateStatus(ref, o.metadata.uid, 1, (s) => onReady(onProvisioningStarted(s), READY))
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StaleWriteError);
    expect(err).toMatchObject({ reason: 'GenerationMismatch', code: 'StaleWrite' });
    expect((err as Error).message).toBe('ClusterVirtualImage "stale" is at generation 2; the write was for generation 1');
    const now = await store.get('ClusterVirtualImage', undefined, 'stale');
    expect(now?.status.phase).toBe('Pending');
    expect(now?.metadata.generation).toBe(2);
  });

  it('refuses a write for another uid (re-created object), a missing object, and while deleting', async () => {
    const store = newStore();
    const ref = { kind: 'ClusterVirtualImage' as const, name: 'u' };
    const first = (await store.apply(cvi('u'))).object;
    await store.remove(ref);
    await expect(store.updateStatus(ref, first.metadata.uid, 1, (s) => s)).rejects.toMatchObject({ reason: 'NotFound' });
    await store.apply(cvi('u'));
    await expect(store.updateStatus(ref, first.metadata.uid, 1, (s) => onProvisioningStarted(s))).rejects.toMatchObject({
      reason: 'UidMismatch',
    });
    const second = (await store.get('ClusterVirtualImage', undefined, 'u')) as Image;
    await store.markDeleting(ref);
    await expect(store.updateStatus(ref, second.metadata.uid, 1, (s) => onProvisioningStarted(s))).rejects.toMatchObject({
      reason: 'Terminating',
    });
    const allowed = await store.updateStatus(ref, second.metadata.uid, 1, (s) => ({ ...s, attempts: 9 }), { allowTerminating: true });
    expect(allowed.status.attempts).toBe(9);
  });

  it('concurrent status writes all land (optimistic retry), none lost', async () => {
    const store = newStore();
    const ref = { kind: 'ClusterVirtualImage' as const, name: 'busy' };
    const o = (await store.apply(cvi('busy'))).object;
    await Promise.all(
      Array.from({ length: 10 }, () =>
        store.updateStatus(ref, o.metadata.uid, 1, (s) => ({ ...s, attempts: (s.attempts ?? 0) + 1 })),
      ),
    );
    expect((await store.get('ClusterVirtualImage', undefined, 'busy'))?.status.attempts).toBe(10);
  });

  it('a mutator returning the same status writes nothing (no event)', async () => {
    const store = newStore();
    const o = (await store.apply(cvi('noop'))).object;
    const before = await store.lastEventId();
    await store.updateStatus({ kind: 'ClusterVirtualImage', name: 'noop' }, o.metadata.uid, 1, (s) => s);
    await store.updateStatus({ kind: 'ClusterVirtualImage', name: 'noop' }, o.metadata.uid, 1, (s) => ({ ...s }));
    expect(await store.lastEventId()).toBe(before);
  });
});

describe('ImageStore status writes from remembered state', () => {
  /** Two stores on one prefix, as two processes would be; `a` counts its reads (HMGET round trips). */
  async function twoStores(): Promise<{ a: ImageStore; b: ImageStore; reads: () => number; done: () => Promise<void> }> {
    const prefix = `{dvcr-test-${randomUUID().slice(0, 8)}}:images`;
    const client = new Redis(inject('redisUrl'), { lazyConnect: true });
    await client.connect();
    let n = 0;
    const hmget = client.hmget.bind(client);
    client.hmget = ((...args: Parameters<typeof hmget>) => {
      n++;
      return hmget(...args);
    }) as typeof client.hmget;
    return {
      a: new ImageStore({ redis: client, prefix }),
      b: new ImageStore({ redis, prefix }),
      reads: () => n,
      done: async () => void (await client.quit()),
    };
  }

  it("a status write right after this store's own read or write sends no read", async () => {
    const { a, reads, done } = await twoStores();
    const ref = { kind: 'ClusterVirtualImage' as const, name: 'fast' };
    const o = (await a.apply(cvi('fast'))).object;
    const afterApply = reads();
    await a.updateStatus(ref, o.metadata.uid, 1, (s) => onProvisioningStarted(s));
    await a.updateStatus(ref, o.metadata.uid, 1, (s) => onProgress(s, { bytesDone: 50, bytesTotal: 100, currentBps: 1, avgBps: 1 }));
    const ready = await a.updateStatus(ref, o.metadata.uid, 1, (s) => onReady(s, READY));
    expect(reads()).toBe(afterApply);
    expect(await a.get('ClusterVirtualImage', undefined, 'fast')).toEqual(ready);
    expect(ready.status.phase).toBe('Ready');
    await done();
  });

  it("another writer's change is never lost: the remembered state fails its compare-and-set and the write is redone", async () => {
    const { a, b, reads, done } = await twoStores();
    const ref = { kind: 'ClusterVirtualImage' as const, name: 'shared' };
    const o = (await a.apply(cvi('shared'))).object;
    await a.updateStatus(ref, o.metadata.uid, 1, (s) => onProvisioningStarted(s));
    await b.updateStatus(ref, o.metadata.uid, 1, (s) => ({ ...s, attempts: 7 }));
    const before = reads();
    const after = await a.updateStatus(ref, o.metadata.uid, 1, (s) => onProgress(s, { bytesDone: 10, bytesTotal: 100, currentBps: 1, avgBps: 1 }));
    expect(reads()).toBe(before + 1);
    expect(after.status).toMatchObject({ attempts: 7, progress: '10.0%', phase: 'Provisioning' });
    expect(await b.get('ClusterVirtualImage', undefined, 'shared')).toEqual(after);
    await done();
  });

  it('refusals and no-ops are decided on what Redis holds, not on what the store remembers', async () => {
    const { a, b, done } = await twoStores();
    const ref = { kind: 'ClusterVirtualImage' as const, name: 'moved' };
    const first = (await a.apply(cvi('moved'))).object;
    await a.updateStatus(ref, first.metadata.uid, 1, (s) => onProvisioningStarted(s));
    // Another process changes the spec (generation 2): a remembers generation 1 but a write for 2 goes through.
    await b.apply(cvi('moved', 'https://images.example/v2.img'));
    const gen2 = await a.updateStatus(ref, first.metadata.uid, 2, (s) => onProvisioningStarted(s));
    expect(gen2.metadata.generation).toBe(2);
    expect(gen2.status.phase).toBe('Provisioning');
    // A mutator that finds nothing to do on the remembered state (Provisioning) still acts on the stored one.
    await b.updateStatus(ref, first.metadata.uid, 2, (s) => ({ ...s, phase: 'Pending' }));
    const healed = await a.updateStatus(ref, first.metadata.uid, 2, (s) =>
      s.phase === 'Provisioning' ? s : onProvisioningStarted(s),
    );
    expect(healed.status.phase).toBe('Provisioning');
    // Removed and re-created elsewhere: a's memory of the old uid neither refuses the new one nor admits the old.
    await b.remove(ref);
    const second = (await b.apply(cvi('moved'))).object;
    await expect(a.updateStatus(ref, first.metadata.uid, 1, (s) => onProvisioningStarted(s))).rejects.toMatchObject({
      reason: 'UidMismatch',
    });
    await a.get('ClusterVirtualImage', undefined, 'moved');
    await b.remove(ref);
    await expect(a.updateStatus(ref, second.metadata.uid, 1, (s) => onProvisioningStarted(s))).rejects.toMatchObject({
      reason: 'NotFound',
    });
    await done();
  });
});

describe('ImageStore delete', () => {
  it('markDeleting sets deletionTimestamp and Terminating, idempotently; remove honours uid', async () => {
    const store = newStore();
    const ref = { kind: 'ClusterVirtualImage' as const, name: 'del' };
    const o = (await store.apply(cvi('del'))).object;
    const marked = await store.markDeleting(ref);
    expect(marked?.metadata.deletionTimestamp).toMatch(/Z$/);
    expect(marked?.status.phase).toBe('Terminating');
    expect(await store.markDeleting(ref)).toEqual(marked);
    expect(await store.remove(ref, { uid: 'other' })).toBeNull();
    expect((await store.remove(ref, { uid: o.metadata.uid }))?.metadata.uid).toBe(o.metadata.uid);
    expect(await store.get('ClusterVirtualImage', undefined, 'del')).toBeNull();
    expect(await store.list('ClusterVirtualImage')).toEqual([]);
    expect(await store.remove(ref)).toBeNull();
    expect(await store.markDeleting(ref)).toBeNull();
  });
});

describe('ImageStore.watch', () => {
  it('yields current objects, a BOOKMARK, then ADDED/MODIFIED/DELETED in order', async () => {
    const store = newStore();
    const pre = (await store.apply(cvi('pre'))).object;
    await store.apply(vi('ns', 'not-a-cvi'));
    const w = await watching(store, 'ClusterVirtualImage');
    const ref = { kind: 'ClusterVirtualImage' as const, name: 'live' };
    const live = (await store.apply(cvi('live'))).object;
    await store.apply(vi('ns', 'other'));
    await store.updateStatus(ref, live.metadata.uid, 1, (s) => onProvisioningStarted(s));
    await store.markDeleting(ref);
    await store.remove(ref);
    const got = [...w.initial, ...(await w.rest(4))];
    expect(summary(got)).toEqual([
      'ADDED pre g1 Pending',
      'BOOKMARK',
      'ADDED live g1 Pending',
      'MODIFIED live g1 Provisioning',
      'MODIFIED live g1 Terminating',
      'DELETED live g1 Terminating',
    ]);
    expect(got[0]).toEqual({ type: 'ADDED', object: pre });
    const ids = got.map((e) => e.id).filter((x): x is string => x !== undefined);
    expect(ids).toHaveLength(5);
    for (let i = 1; i < ids.length; i++) expect(compareStreamIds(ids[i - 1] ?? '', ids[i] ?? '')).toBe(-1);
  });

  it('resumes from an id: only the events after it, nothing twice', async () => {
    const store = newStore();
    const ref = { kind: 'ClusterVirtualImage' as const, name: 'r' };
    const o = (await store.apply(cvi('r'))).object;
    const ac1 = new AbortController();
    const first = await take(store.watch('ClusterVirtualImage', { signal: ac1.signal, blockMs: 200 }), 2, ac1);
    const bookmark = first[1];
    expect(bookmark?.type).toBe('BOOKMARK');
    // Changes while nobody watches.
    await store.updateStatus(ref, o.metadata.uid, 1, (s) => onProvisioningStarted(s));
    await store.apply(cvi('r2'));
    const ac2 = new AbortController();
    const resumed = await take(
      store.watch('ClusterVirtualImage', { sinceId: bookmark?.id, signal: ac2.signal, blockMs: 200 }),
      2,
      ac2,
    );
    expect(summary(resumed)).toEqual(['MODIFIED r g1 Provisioning', 'ADDED r2 g1 Pending']);
    // Resume from the middle.
    const ac3 = new AbortController();
    const tail = await take(store.watch('ClusterVirtualImage', { sinceId: resumed[0]?.id, signal: ac3.signal, blockMs: 200 }), 1, ac3);
    expect(summary(tail)).toEqual(['ADDED r2 g1 Pending']);
  });

  it('filters by namespace and name', async () => {
    const store = newStore();
    await store.apply(vi('a', 'x'));
    await store.apply(vi('b', 'x'));
    await store.apply(vi('a', 'y'));
    const w = await watching(store, 'VirtualImage', { namespace: 'a', name: 'x' });
    await store.markDeleting({ kind: 'VirtualImage', namespace: 'b', name: 'x' });
    await store.markDeleting({ kind: 'VirtualImage', namespace: 'a', name: 'y' });
    await store.markDeleting({ kind: 'VirtualImage', namespace: 'a', name: 'x' });
    const got = [...w.initial, ...(await w.rest(1))];
    expect(got.map((e) => (e.type === 'BOOKMARK' ? 'BOOKMARK' : `${e.type} ${e.object.metadata.namespace}/${e.object.metadata.name}`))).toEqual([
      'ADDED a/x',
      'BOOKMARK',
      'MODIFIED a/x',
    ]);
  });

  it('stops promptly when the signal aborts during a blocking read', async () => {
    const store = newStore();
    const ac = new AbortController();
    const it = store.watch('ClusterVirtualImage', { signal: ac.signal, blockMs: 30_000 });
    const first = await it.next();
    expect(first.value).toMatchObject({ type: 'BOOKMARK' });
    const pending = it.next();
    const t0 = Date.now();
    setTimeout(() => ac.abort(), 50);
    expect(await pending).toEqual({ done: true, value: undefined });
    expect(Date.now() - t0).toBeLessThan(5_000);
  });

  it('emits a BOOKMARK while only other objects change, so a filtered watch keeps a recent id', async () => {
    const store = newStore();
    const w = await watching(store, 'ClusterVirtualImage', { name: 'quiet', blockMs: 100, bookmarkIntervalMs: 0 });
    await store.apply(cvi('noisy'));
    const got = [...w.initial, ...(await w.rest(1))];
    expect(got.map((e) => e.type)).toEqual(['BOOKMARK', 'BOOKMARK']);
    expect(got[1]?.id).toBe(await store.lastEventId());
  });

  it('a resume position whose events were trimmed is expired (relist)', async () => {
    const store = newStore({ streamMaxLen: 10 });
    const o = (await store.apply(cvi('t'))).object;
    const old = await store.lastEventId();
    for (let i = 0; i < 300; i++) {
      await store.updateStatus({ kind: 'ClusterVirtualImage', name: 't' }, o.metadata.uid, 1, (s) => ({ ...s, attempts: i + 1 }));
    }
    expect(await redis.xlen(store.streamKey)).toBeLessThan(300);
    const it = store.watch('ClusterVirtualImage', { sinceId: old });
    await expect(it.next()).rejects.toBeInstanceOf(WatchExpiredError);
    const future = store.watch('ClusterVirtualImage', { sinceId: `${Date.now() + 3_600_000}-0` });
    await expect(future.next()).rejects.toThrow(/too old/);
    // A recent position still resumes.
    const recent = await store.lastEventId();
    const ac = new AbortController();
    const evs = take(store.watch('ClusterVirtualImage', { sinceId: recent, signal: ac.signal, blockMs: 200 }), 1, ac);
    // No snapshot with sinceId: the event is read from the stream even if it lands before the first XREAD.
    await store.apply(cvi('t2'));
    expect(summary(await evs)).toEqual(['ADDED t2 g1 Pending']);
  });
});
