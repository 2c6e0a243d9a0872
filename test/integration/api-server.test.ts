/**
 * The HTTP API end to end: a real ImageStore (Redis), ImportQueue (BullMQ) and registry client behind
 * `buildServer`, listening on 127.0.0.1:0, driven through `ImageClient` and raw HTTP.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer as createNetServer, connect, type Server as NetServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ImportQueue, importJobId } from '../../queues/imports.ts';
import { ApiError, ImageClient, parseSse } from '../../src/api/client.ts';
import { ImporterMetrics } from '../../src/api/metrics.ts';
import { buildServer, type BuildServerOptions } from '../../src/api/server.ts';
import { ImageService } from '../../src/api/service.ts';
import {
  API_VERSION,
  ImageStore,
  onReady,
  refOf,
  type Image,
  type WatchEvent,
} from '../../src/images/index.ts';
import { RegistryClient } from '../../src/oci/index.ts';
import { startRegistry } from '../../src/stack/index.ts';

const tag = randomUUID().slice(0, 8);
const PREFIX = `{t-api-${tag}}`;
const CONNECTION_NAME = `t-api-${tag}`;

let redis: Redis;
let store: ImageStore;
let queue: ImportQueue;
let service: ImageService;
const servers: FastifyInstance[] = [];

function cvi(name: string, url = 'https://images.example/disk.qcow2'): Record<string, unknown> {
  return {
    apiVersion: API_VERSION,
    kind: 'ClusterVirtualImage',
    metadata: { name },
    spec: { dataSource: { type: 'HTTP', http: { url } } },
  };
}

function vi(name: string, namespace?: string): Record<string, unknown> {
  return {
    apiVersion: API_VERSION,
    kind: 'VirtualImage',
    metadata: namespace ? { name, namespace } : { name },
    spec: { dataSource: { type: 'ContainerImage', containerImage: { image: 'registry.example/ns/img:1' } } },
  };
}

function baseConfig(): BuildServerOptions['config'] {
  return { dvcrUrl: inject('registryUrl'), insecureRegistries: [inject('registryHostPort')] };
}

async function start(extra: Partial<BuildServerOptions> = {}): Promise<{ app: FastifyInstance; url: string }> {
  const app = buildServer({ service, queue, redis, config: baseConfig(), heartbeatMs: 200, ...extra });
  await app.listen({ host: '127.0.0.1', port: 0 });
  servers.push(app);
  return { app, url: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}` };
}

/** Reads `n` events from a watch (or until the deadline), then aborts it. */
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
    ac.abort();
  }
  return out;
}

/** Starts a client watch and reads through its BOOKMARK; `next(n)` reads the next n events. */
async function watching(client: ImageClient, name: string) {
  const ac = new AbortController();
  const it = client.watch('ClusterVirtualImage', { name, signal: ac.signal })[Symbol.asyncIterator]();
  const initial: WatchEvent[] = [];
  for (;;) {
    const r = await it.next();
    if (r.done) throw new Error('watch ended before its BOOKMARK');
    initial.push(r.value);
    if (r.value.type === 'BOOKMARK') break;
  }
  return {
    ac,
    initial,
    next: async (n: number): Promise<WatchEvent[]> => {
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
      }
      return out;
    },
    stop: async () => {
      ac.abort();
      await it.return?.();
    },
  };
}

async function markReady(image: Image): Promise<Image> {
  const { uid, generation } = image.metadata;
  return store.updateStatus(refOf(image), uid, generation, (s) =>
    onReady(s, { registryURL: `dvcr.example/cvi/${image.metadata.name}:${uid}`, format: 'qcow2', storedBytes: 10, unpackedBytes: 20 }),
  );
}

/** Connections of this file's Redis client family that are blocked in XREAD (open watch readers). */
async function openReaders(): Promise<number> {
  const list = (await redis.client('LIST')) as string;
  return list.split('\n').filter((l) => l.includes(`name=${CONNECTION_NAME} `) && /cmd=xread\b/.test(l)).length;
}

async function until(cond: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}

beforeAll(async () => {
  redis = new Redis(inject('redisUrl'), { connectionName: CONNECTION_NAME });
  store = new ImageStore({ redis, prefix: `${PREFIX}:images` });
  queue = new ImportQueue({ redisUrl: inject('redisUrl'), prefix: PREFIX });
  const dvcr = new RegistryClient({ insecureRegistries: [inject('registryHostPort')] });
  service = new ImageService({ store, queue, dvcr, dvcrHost: inject('registryHostPort') });
});

afterAll(async () => {
  await Promise.all(servers.map((s) => s.close()));
  await queue?.close();
  await redis?.quit();
});

describe('images API', () => {
  let client: ImageClient;
  let url: string;
  beforeAll(async () => {
    ({ url } = await start());
    client = new ImageClient({ server: url });
  });

  it('applies: created, configured on a spec change, unchanged; one job per generation', async () => {
    const before = await queue.counts();
    const created = await client.apply(cvi('ubuntu'));
    expect(created.result).toBe('created');
    expect(created.created).toBe(true);
    expect(created.object.metadata.generation).toBe(1);
    const uid = created.object.metadata.uid;
    expect(await queue.state(importJobId({ uid, generation: 1 }))).toBe('waiting');
    expect((await queue.counts()).waiting).toBe(before.waiting + 1);

    const same = await client.apply(cvi('ubuntu'));
    expect(same.result).toBe('unchanged');
    expect(same.object.metadata.generation).toBe(1);
    expect((await queue.counts()).waiting).toBe(before.waiting + 1);

    const changed = await client.apply(cvi('ubuntu', 'https://images.example/other.qcow2'));
    expect(changed.result).toBe('configured');
    expect(changed.specChanged).toBe(true);
    expect(changed.object.metadata.generation).toBe(2);
    expect(changed.object.metadata.uid).toBe(uid);
    // The first generation's job is gone, the second one waits: still exactly one job for the image.
    expect(await queue.state(importJobId({ uid, generation: 1 }))).toBeUndefined();
    expect(await queue.state(importJobId({ uid, generation: 2 }))).toBe('waiting');
    expect((await queue.counts()).waiting).toBe(before.waiting + 1);

    const again = await client.apply(cvi('ubuntu', 'https://images.example/other.qcow2'));
    expect(again.result).toBe('unchanged');
    expect((await queue.counts()).waiting).toBe(before.waiting + 1);
  });

  it('answers 201 for a creation and 200 otherwise', async () => {
    const post = (body: unknown) =>
      request(`${url}/apis/v1/images`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const a = await post(cvi('status-codes'));
    expect(a.statusCode).toBe(201);
    await a.body.dump();
    const b = await post(cvi('status-codes'));
    expect(b.statusCode).toBe(200);
    expect(((await b.body.json()) as { result: string }).result).toBe('unchanged');
  });

  it('rejects an invalid manifest with 422 and every issue', async () => {
    const bad = {
      apiVersion: API_VERSION,
      kind: 'ClusterVirtualImage',
      metadata: { name: 'Bad_Name' },
      spec: { dataSource: { type: 'HTTP', http: { url: 'ftp://x', checksum: { sha256: 'abc' } } } },
    };
    const err = await client.apply(bad).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    const e = err as ApiError;
    expect(e.status).toBe(422);
    expect(e.code).toBe('Invalid');
    expect(e.issues.length).toBeGreaterThanOrEqual(3);
    const paths = e.issues.map((i) => i.path);
    expect(paths).toContain('metadata.name');
    expect(paths).toContain('spec.dataSource.http.url');
    expect(paths).toContain('spec.dataSource.http.checksum.sha256');
    for (const i of e.issues) expect(e.message).toContain(i.message);

    const notObject = (await client.apply([1, 2]).catch((x: unknown) => x)) as ApiError;
    expect(notObject.status).toBe(422);
    expect(notObject.issues[0]?.path).toBe('');
  });

  it('refuses a spec change of a Ready image with 409 and upstream message', async () => {
    const { object } = await client.apply(cvi('frozen'));
    await markReady(object);
    const err = (await client.apply(cvi('frozen', 'https://images.example/new.qcow2')).catch((e: unknown) => e)) as ApiError;
    expect(err).toBeInstanceOf(ApiError);
    expect(err.status).toBe(409);
    expect(err.code).toBe('SpecFrozen');
    expect(err.message).toBe('ClusterVirtualImage is in a Ready state: configuration changes are not available');
  });

  it('gets, lists and deletes; 404 afterwards', async () => {
    await client.apply(cvi('to-delete'));
    const got = await client.get('ClusterVirtualImage', 'to-delete');
    expect(got?.metadata.name).toBe('to-delete');
    expect(got?.status.phase).toBe('Pending');
    const names = (await client.list('ClusterVirtualImage')).map((i) => i.metadata.name);
    expect(names).toContain('to-delete');
    expect(names).toEqual([...names].sort());

    const deleted = await client.delete('ClusterVirtualImage', 'to-delete');
    expect(deleted?.metadata.deletionTimestamp).toBeDefined();
    expect(deleted?.status.phase).toBe('Terminating');
    expect(await client.get('ClusterVirtualImage', 'to-delete')).toBeNull();
    expect(await client.delete('ClusterVirtualImage', 'to-delete')).toBeNull();
    expect((await client.list('ClusterVirtualImage')).map((i) => i.metadata.name)).not.toContain('to-delete');

    const raw = await request(`${url}/apis/v1/clustervirtualimages/to-delete`);
    expect(raw.statusCode).toBe(404);
    expect(await raw.body.json()).toEqual({
      error: { code: 'NotFound', message: 'ClusterVirtualImage "to-delete" not found' },
    });
  });

  it('answers 202 and leaves the object Terminating when DVCR cannot be reached during a delete', async () => {
    const closed = createNetServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', () => r()));
    const deadHost = `127.0.0.1:${(closed.address() as AddressInfo).port}`;
    await new Promise<void>((r) => closed.close(() => r()));
    const dvcr = new RegistryClient({ insecureRegistries: [deadHost], retry: { attempts: 1 } });
    const offline = new ImageService({ store, queue, dvcr, dvcrHost: deadHost });
    const own = await start({ service: offline });
    const c = new ImageClient({ server: own.url });
    await c.apply(cvi('stuck'));
    const res = await request(`${own.url}/apis/v1/clustervirtualimages/stuck`, { method: 'DELETE' });
    expect(res.statusCode).toBe(202);
    const body = (await res.body.json()) as Image;
    expect(body.status.phase).toBe('Terminating');
    expect((await c.get('ClusterVirtualImage', 'stuck'))?.metadata.deletionTimestamp).toBeDefined();
    // Once DVCR answers again (the shared service), the deletion completes.
    expect((await client.delete('ClusterVirtualImage', 'stuck'))?.status.phase).toBe('Terminating');
    expect(await client.get('ClusterVirtualImage', 'stuck')).toBeNull();
  });

  it('handles VirtualImages by namespace', async () => {
    const a = await client.apply(vi('disk-a'), { namespace: 'team-a' });
    expect(a.object.metadata.namespace).toBe('team-a');
    await client.apply(vi('disk-b', 'team-b'));
    expect((await client.list('VirtualImage', 'team-a')).map((i) => i.metadata.name)).toEqual(['disk-a']);
    const all = (await client.list('VirtualImage')).map((i) => `${i.metadata.namespace}/${i.metadata.name}`);
    expect(all).toEqual(expect.arrayContaining(['team-a/disk-a', 'team-b/disk-b']));
    expect((await client.get('VirtualImage', 'disk-b', 'team-b'))?.metadata.namespace).toBe('team-b');
    expect(await client.get('VirtualImage', 'disk-b', 'team-a')).toBeNull();
    expect((await client.delete('VirtualImage', 'disk-a', 'team-a'))?.status.phase).toBe('Terminating');
    expect(await client.list('VirtualImage', 'team-a')).toEqual([]);
  });

  it('answers 400 for invalid path and query parameters, NoRoute for unknown paths', async () => {
    const badName = await request(`${url}/apis/v1/clustervirtualimages/Not_Valid`);
    expect(badName.statusCode).toBe(400);
    const body = (await badName.body.json()) as { error: { code: string; message: string; issues: unknown[] } };
    expect(body.error.code).toBe('BadRequest');
    expect(body.error.message).toContain('params.name: is not a valid name');

    const badWatch = await request(`${url}/apis/v1/clustervirtualimages?watch=maybe`);
    expect(badWatch.statusCode).toBe(400);
    await badWatch.body.dump();

    const badId = await request(`${url}/apis/v1/clustervirtualimages?watch=true`, { headers: { 'last-event-id': 'nope' } });
    expect(badId.statusCode).toBe(400);
    await badId.body.dump();

    const none = await request(`${url}/apis/v2/whatever`);
    expect(none.statusCode).toBe(404);
    expect(((await none.body.json()) as { error: { code: string } }).error.code).toBe('NoRoute');
  });

  it('rejects a body over 1 MiB with 413 and a clear message', async () => {
    const huge = { ...cvi('huge'), metadata: { name: 'huge', annotations: { blob: 'x'.repeat(1024 * 1024 + 10) } } };
    const err = (await client.apply(huge).catch((e: unknown) => e)) as ApiError;
    expect(err).toBeInstanceOf(ApiError);
    expect(err.status).toBe(413);
    expect(err.code).toBe('PayloadTooLarge');
    expect(err.message).toContain('1 MiB');
    expect(await client.get('ClusterVirtualImage', 'huge')).toBeNull();
  });

  it('answers 415 for a body that is not JSON, 400 for broken JSON', async () => {
    const yaml = await request(`${url}/apis/v1/images`, { method: 'POST', headers: { 'content-type': 'application/yaml' }, body: 'kind: x' });
    expect(yaml.statusCode).toBe(415);
    expect(((await yaml.body.json()) as { error: { code: string } }).error.code).toBe('UnsupportedMediaType');
    const text = await request(`${url}/apis/v1/images`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: '{}' });
    expect(text.statusCode).toBe(415);
    await text.body.dump();
    const empty = await request(`${url}/apis/v1/images`, { method: 'POST' });
    expect(empty.statusCode).toBe(400);
    expect(((await empty.body.json()) as { error: { message: string } }).error.message).toContain('JSON body');
    const broken = await request(`${url}/apis/v1/images`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"kind":' });
    expect(broken.statusCode).toBe(400);
    expect(((await broken.body.json()) as { error: { message: string } }).error.message).toContain('not valid JSON');
  });

  it('watches: ADDED, then MODIFIED on a status write, then DELETED', async () => {
    const { object } = await client.apply(cvi('watched'));
    const w = await watching(client, 'watched');
    try {
      expect(w.initial.map((e) => e.type)).toEqual(['ADDED', 'BOOKMARK']);
      const added = w.initial[0] as Extract<WatchEvent, { object: Image }>;
      expect(added.object.metadata.uid).toBe(object.metadata.uid);
      expect(added.id).toBeUndefined();

      await markReady(object);
      const modified = await w.next(1);
      expect(modified[0]?.type).toBe('MODIFIED');
      const mod = modified[0] as Extract<WatchEvent, { object: Image }>;
      expect(mod.id).toMatch(/^\d+-\d+$/);
      expect(mod.object.status.phase).toBe('Ready');

      await client.delete('ClusterVirtualImage', 'watched');
      const rest = await w.next(2);
      expect(rest.map((e) => e.type)).toEqual(['MODIFIED', 'DELETED']);
      expect((rest[0] as typeof mod).object.status.phase).toBe('Terminating');
    } finally {
      await w.stop();
    }
  });

  it('streams SSE over raw HTTP: headers, heartbeats, and resume with Last-Event-ID', async () => {
    await client.apply(cvi('sse'));
    const ac = new AbortController();
    const res = await request(`${url}/apis/v1/clustervirtualimages?watch=true&name=sse`, { signal: ac.signal });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/event-stream/);
    expect(res.headers['cache-control']).toContain('no-cache');

    // Raw bytes until a heartbeat comment has gone by after the BOOKMARK.
    let text = '';
    const decoder = new TextDecoder();
    for await (const chunk of res.body) {
      text += decoder.decode(chunk as Buffer, { stream: true });
      if (/event: BOOKMARK[\s\S]*: heartbeat\n\n/.test(text)) break;
    }
    ac.abort();
    expect(text).toContain('event: ADDED\ndata: {"type":"ADDED","object":');
    const bookmark = /id: (\d+-\d+)\nevent: BOOKMARK\n/.exec(text)?.[1];
    expect(bookmark).toBeDefined();

    // Changes while nobody watches, then resume from the bookmark: exactly those changes, no initial list.
    const image = (await store.get('ClusterVirtualImage', undefined, 'sse'))!;
    await markReady(image);
    await client.apply({ ...cvi('sse'), metadata: { name: 'sse', labels: { a: 'b' } } });
    const resumed = await request(`${url}/apis/v1/clustervirtualimages?watch=true&name=sse`, {
      headers: { 'last-event-id': bookmark! },
    });
    const events: Array<{ event: string; id: string | undefined; data: string }> = [];
    for await (const msg of parseSse(resumed.body)) {
      events.push(msg);
      const last = JSON.parse(msg.data) as { object?: Image };
      if (last.object?.metadata.labels?.a === 'b') break;
    }
    resumed.body.destroy();
    expect(events.every((e) => e.event === 'MODIFIED')).toBe(true);
    expect(events.every((e) => e.id && /^\d+-\d+$/.test(e.id))).toBe(true);
    expect((JSON.parse(events.at(-1)!.data) as { object: Image }).object.status.phase).toBe('Ready');

    // The same through ?sinceId=.
    const viaQuery = await request(`${url}/apis/v1/clustervirtualimages?watch=true&name=sse&sinceId=${bookmark}`);
    const first = await parseSse(viaQuery.body).next();
    viaQuery.body.destroy();
    expect(first.value?.event).toBe('MODIFIED');
  });

  it('ends a watch whose position expired with an ERROR event (ApiError 410 in the client)', async () => {
    const future = `${Date.now() + 10 * 365 * 24 * 3600 * 1000}-0`;
    const ac = new AbortController();
    const err = (await take(client.watch('ClusterVirtualImage', { sinceId: future, signal: ac.signal }), 1, ac).catch(
      (e: unknown) => e,
    )) as ApiError;
    expect(err).toBeInstanceOf(ApiError);
    expect(err.status).toBe(410);
    expect(err.code).toBe('Expired');
  });

  it('closes its Redis reader when the client goes away', async () => {
    await until(async () => (await openReaders()) === 0);
    const w = await watching(client, 'nobody');
    await until(async () => (await openReaders()) === 1);
    await w.stop();
    await until(async () => (await openReaders()) === 0);
  });

  it('reconnects a dropped watch and resumes with Last-Event-ID', async () => {
    const proxy = await dropProxy(new URL(url).port);
    try {
      const via = new ImageClient({ server: `http://127.0.0.1:${proxy.port}` });
      const { object } = await client.apply(cvi('dropped'));
      const w = await watching(via, 'dropped');
      try {
        expect(w.initial.map((e) => e.type)).toEqual(['ADDED', 'BOOKMARK']);
        proxy.dropAll();
        // A change while the connection is down must still arrive, once, and no initial list again.
        await markReady(object);
        const events = [] as WatchEvent[];
        while (!events.some((e) => e.type === 'MODIFIED' && e.object.status.phase === 'Ready')) {
          const [ev] = await w.next(1);
          if (!ev) throw new Error('watch ended');
          events.push(ev);
        }
        expect(events.every((e) => e.type === 'MODIFIED')).toBe(true);
        expect(proxy.connections()).toBeGreaterThanOrEqual(2);
        expect(proxy.lastEventIds().some((id) => /^\d+-\d+$/.test(id))).toBe(true);
      } finally {
        await w.stop();
      }
    } finally {
      await proxy.close();
    }
  });

  it('ends open watches when the server closes', async () => {
    const own = await start();
    const ac = new AbortController();
    const events: WatchEvent[] = [];
    const done = (async () => {
      const res = await request(`${own.url}/apis/v1/clustervirtualimages?watch=true`, { signal: ac.signal });
      for await (const msg of parseSse(res.body)) events.push(JSON.parse(msg.data) as WatchEvent);
    })();
    await until(async () => events.some((e) => e.type === 'BOOKMARK'));
    const t0 = Date.now();
    await own.app.close();
    await done;
    expect(Date.now() - t0).toBeLessThan(2000);
  });

  it('says how to fix an unreachable server', async () => {
    const closed = createNetServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', () => r()));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((r) => closed.close(() => r()));
    const err = (await new ImageClient({ server: `http://127.0.0.1:${port}` }).list('ClusterVirtualImage').catch((e: unknown) => e)) as ApiError;
    expect(err).toBeInstanceOf(ApiError);
    expect(err.status).toBe(0);
    expect(err.code).toBe('Unreachable');
    expect(err.message).toBe(
      `cannot reach the dvcr-importer API at http://127.0.0.1:${port} (connection refused): is "dvcr-importer up" or ` +
        '"serve" running? set --server or DVCR_IMPORTER_SERVER',
    );
  });
});

describe('auth', () => {
  const OPERATOR = `op-${randomUUID()}`;
  const READER = `ro-${randomUUID()}`;
  let url: string;
  beforeAll(async () => {
    ({ url } = await start({ config: { ...baseConfig(), apiToken: OPERATOR }, apiReadToken: READER }));
  });

  it('answers 401 without or with a wrong token, never echoing it', async () => {
    const none = await request(`${url}/apis/v1/clustervirtualimages`);
    expect(none.statusCode).toBe(401);
    expect(none.headers['www-authenticate']).toContain('Bearer');
    expect(((await none.body.json()) as { error: { code: string } }).error.code).toBe('Unauthorized');

    const wrong = await request(`${url}/apis/v1/clustervirtualimages`, { headers: { authorization: 'Bearer sekrit-guess' } });
    expect(wrong.statusCode).toBe(401);
    const text = await wrong.body.text();
    expect(text).not.toContain('sekrit-guess');

    const basic = await request(`${url}/metrics`, { headers: { authorization: 'Basic dXNlcjpwYXNz' } });
    expect(basic.statusCode).toBe(401);
    await basic.body.dump();

    const err = (await new ImageClient({ server: url }).list('ClusterVirtualImage').catch((e: unknown) => e)) as ApiError;
    expect(err.status).toBe(401);
    expect(err.code).toBe('Unauthorized');
  });

  it('lets the read-only token read but not write (403)', async () => {
    const reader = new ImageClient({ server: url, token: READER });
    expect(Array.isArray(await reader.list('ClusterVirtualImage'))).toBe(true);
    const err = (await reader.apply(cvi('by-reader')).catch((e: unknown) => e)) as ApiError;
    expect(err.status).toBe(403);
    expect(err.code).toBe('Forbidden');
    expect(err.message).toContain('read-only');
    expect(err.message).not.toContain(READER);
    const del = (await reader.delete('ClusterVirtualImage', 'x').catch((e: unknown) => e)) as ApiError;
    expect(del.status).toBe(403);
    const metrics = await request(`${url}/metrics`, { headers: { authorization: `Bearer ${READER}` } });
    expect(metrics.statusCode).toBe(200);
    await metrics.body.dump();
  });

  it('lets the operator token do everything; /healthz and /readyz are open, /metrics is not', async () => {
    const op = new ImageClient({ server: url, token: OPERATOR });
    expect((await op.apply(cvi('by-operator'))).result).toBe('created');
    expect((await op.get('ClusterVirtualImage', 'by-operator'))?.metadata.name).toBe('by-operator');
    const health = await request(`${url}/healthz`);
    expect(health.statusCode).toBe(200);
    expect(await health.body.json()).toEqual({ status: 'ok' });
    const ready = await request(`${url}/readyz`);
    expect([200, 503]).toContain(ready.statusCode);
    await ready.body.dump();
    const metrics = await request(`${url}/metrics`);
    expect(metrics.statusCode).toBe(401);
    await metrics.body.dump();
  });

  it('never logs the Authorization header or a token', async () => {
    const lines: string[] = [];
    const logger = pino({ level: 'trace' }, { write: (l: string) => void lines.push(l) });
    const own = await start({ logger, config: { ...baseConfig(), apiToken: OPERATOR }, apiReadToken: READER });
    for (const token of [OPERATOR, READER, 'wrong-token-value']) {
      for (const [method, path] of [['GET', '/apis/v1/clustervirtualimages'], ['POST', '/apis/v1/images'], ['GET', '/nope']] as const) {
        const res = await request(`${own.url}${path}`, {
          method,
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
          ...(method === 'POST' ? { body: JSON.stringify(cvi('logged')) } : {}),
        });
        await res.body.dump();
      }
    }
    await new ImageClient({ server: own.url, token: OPERATOR }).delete('ClusterVirtualImage', 'logged');
    const log = lines.join('');
    expect(lines.length).toBeGreaterThan(5);
    expect(log).not.toContain(OPERATOR);
    expect(log).not.toContain(READER);
    expect(log).not.toContain('wrong-token-value');
    expect(log.toLowerCase()).not.toContain('authorization');
  });

  it('refuses a read token without an operator token', () => {
    expect(() => buildServer({ service, queue, config: baseConfig(), apiReadToken: 'x' })).toThrow(/API_TOKEN/);
  });
});

describe('operations routes', () => {
  it('exposes job and image gauges and the recorded series on /metrics', async () => {
    const registry = new ImporterMetrics();
    registry.bytesImported.inc(1234);
    registry.importFailures.inc({ reason: 'Checksum "mismatch"' });
    registry.importDuration.observe(42);
    const { url } = await start({ metrics: registry });
    await new ImageClient({ server: url }).apply(cvi('metered'));
    const res = await request(`${url}/metrics`);
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toBe('text/plain; version=0.0.4; charset=utf-8');
    const text = await res.body.text();
    const counts = await queue.counts();
    expect(text).toContain('# TYPE dvcr_importer_jobs gauge');
    expect(text).toContain(`dvcr_importer_jobs{state="waiting"} ${counts.waiting + counts.prioritized}`);
    for (const state of ['active', 'delayed', 'completed', 'failed']) expect(text).toMatch(new RegExp(`dvcr_importer_jobs\\{state="${state}"\\} \\d+`));
    const pending = (await store.list('ClusterVirtualImage')).filter((i) => i.status.phase === 'Pending').length;
    expect(text).toContain('# TYPE dvcr_importer_images gauge');
    expect(text).toContain(`dvcr_importer_images{kind="ClusterVirtualImage",phase="Pending"} ${pending}`);
    expect(text).toContain('dvcr_importer_images{kind="VirtualImage",phase="ImageLost"} 0');
    expect(text).toContain('dvcr_importer_bytes_imported_total 1234');
    expect(text).toContain('dvcr_importer_import_failures_total{reason="Checksum \\"mismatch\\""} 1');
    expect(text).toContain('dvcr_importer_import_duration_seconds_bucket{le="60"} 1');
    expect(text).toContain('dvcr_importer_import_duration_seconds_bucket{le="15"} 0');
    expect(text).toContain('dvcr_importer_collector_up{collector="jobs"} 1');
  });

  it('is ready when Redis and DVCR answer, 503 naming DVCR when the registry is stopped', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'api-readyz-'));
    const registry = await startRegistry({ dataDir: dir });
    try {
      const { url } = await start({ config: { dvcrUrl: registry.url, insecureRegistries: [registry.hostPort] } });
      const ok = await request(`${url}/readyz`);
      expect(ok.statusCode).toBe(200);
      expect(await ok.body.json()).toEqual({ status: 'ready', checks: { redis: { ok: true }, dvcr: { ok: true } } });

      await registry.stop();
      const down = await request(`${url}/readyz`);
      expect(down.statusCode).toBe(503);
      const body = (await down.body.json()) as { status: string; checks: Record<string, { ok: boolean; error?: string }> };
      expect(body.status).toBe('not ready');
      expect(body.checks.redis).toEqual({ ok: true });
      expect(body.checks.dvcr?.ok).toBe(false);
      expect(body.checks.dvcr?.error).toContain('connection refused');

      const health = await request(`${url}/healthz`);
      expect(health.statusCode).toBe(200);
      await health.body.dump();
    } finally {
      await registry.stop().catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reports a failing Redis check by name', async () => {
    const { url } = await start({
      checks: {
        redis: async () => {
          throw new Error('connect ECONNREFUSED 127.0.0.1:1');
        },
      },
    });
    const res = await request(`${url}/readyz`);
    expect(res.statusCode).toBe(503);
    const body = (await res.body.json()) as { checks: Record<string, { ok: boolean; error?: string }> };
    expect(body.checks.redis).toEqual({ ok: false, error: 'connect ECONNREFUSED 127.0.0.1:1' });
    expect(body.checks.dvcr).toEqual({ ok: true });
  });

  it('serves an OpenAPI document listing every route', async () => {
    const { url } = await start({ config: { ...baseConfig(), apiToken: 'tok' } });
    const res = await request(`${url}/openapi.json`, { headers: { authorization: 'Bearer tok' } });
    expect(res.statusCode).toBe(200);
    const doc = (await res.body.json()) as {
      openapi: string;
      paths: Record<string, Record<string, { operationId?: string; parameters?: Array<{ name: string; in: string }>; security?: unknown[] }>>;
      components: { schemas: Record<string, unknown>; securitySchemes?: unknown };
    };
    expect(doc.openapi).toMatch(/^3\./);
    const ops = Object.entries(doc.paths).flatMap(([p, methods]) => Object.keys(methods).map((m) => `${m.toUpperCase()} ${p}`));
    expect(ops.sort()).toEqual(
      [
        'POST /apis/v1/images',
        'GET /apis/v1/clustervirtualimages',
        'GET /apis/v1/clustervirtualimages/{name}',
        'DELETE /apis/v1/clustervirtualimages/{name}',
        'GET /apis/v1/virtualimages',
        'GET /apis/v1/namespaces/{namespace}/virtualimages',
        'GET /apis/v1/namespaces/{namespace}/virtualimages/{name}',
        'DELETE /apis/v1/namespaces/{namespace}/virtualimages/{name}',
        'GET /openapi.json',
        'GET /metrics',
        'GET /healthz',
        'GET /readyz',
      ].sort(),
    );
    const list = doc.paths['/apis/v1/clustervirtualimages']!.get!;
    expect(list.parameters?.map((p) => `${p.in}:${p.name}`)).toEqual(['query:watch', 'query:name', 'query:sinceId']);
    const item = doc.paths['/apis/v1/namespaces/{namespace}/virtualimages/{name}']!.delete!;
    expect(item.parameters?.map((p) => `${p.in}:${p.name}`)).toEqual(['path:namespace', 'path:name']);
    expect(doc.paths['/healthz']!.get!.security).toEqual([]);
    expect(doc.components.securitySchemes).toBeDefined();
    expect(Object.keys(doc.components.schemas)).toEqual(
      expect.arrayContaining(['Image', 'Manifest', 'ApplyResult', 'ImageList', 'WatchEvent', 'Error', 'Readiness']),
    );
    // Every $ref resolves.
    const refs = JSON.stringify(doc).match(/"\$ref":"#\/components\/schemas\/([A-Za-z]+)"/g) ?? [];
    for (const r of refs) expect(doc.components.schemas).toHaveProperty(r.split('/').pop()!.replace('"', ''));
  });
});

// ---------------------------------------------------------------------------------------------------------------

/** A TCP proxy on loopback whose connections can all be cut at once; records Last-Event-ID headers it carries. */
async function dropProxy(targetPort: string): Promise<{
  port: number;
  dropAll(): void;
  connections(): number;
  lastEventIds(): string[];
  close(): Promise<void>;
}> {
  const sockets = new Set<Socket>();
  const ids: string[] = [];
  let count = 0;
  const server: NetServer = createNetServer((down) => {
    count++;
    const up = connect(Number(targetPort), '127.0.0.1');
    sockets.add(down);
    sockets.add(up);
    down.on('data', (chunk: Buffer) => {
      const m = /last-event-id: *([^\r\n]+)/i.exec(chunk.toString('latin1'));
      if (m?.[1]) ids.push(m[1]);
    });
    down.pipe(up);
    up.pipe(down);
    const cleanup = (): void => {
      down.destroy();
      up.destroy();
      sockets.delete(down);
      sockets.delete(up);
    };
    down.on('error', cleanup).on('close', cleanup);
    up.on('error', cleanup).on('close', cleanup);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    port: (server.address() as AddressInfo).port,
    dropAll: () => {
      for (const s of sockets) s.destroy();
    },
    connections: () => count,
    lastEventIds: () => ids,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
