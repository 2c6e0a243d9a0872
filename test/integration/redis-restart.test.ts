/**
 * Redis restarted mid-run: a redis-server of this test's own with AOF, the service and a worker on it. While
 * an import is transferring (a slow HTTP source) and more jobs wait, Redis stops and starts again on the same
 * port and data folder. Nothing is lost: every image ends Ready, every job completed, the worker reconnected.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startRedis, type RedisServer } from '../../src/stack/index.ts';
import { startHttpServer, type TestHttpServer } from '../helpers/http-server.ts';
import { startImportStack, type ImportStack } from '../helpers/import-stack.ts';

describe('Redis restarted mid-run', () => {
  let redis: RedisServer;
  let stack: ImportStack;
  let srv: TestHttpServer;
  let work: string;

  const cvi = (name: string, url: string) => ({
    apiVersion: 'virtualization.deckhouse.io/v1alpha2',
    kind: 'ClusterVirtualImage',
    metadata: { name },
    spec: { dataSource: { type: 'HTTP', http: { url } } },
  });

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'redis-restart-'));
    redis = await startRedis({ dataDir: join(work, 'redis'), appendOnly: true });
    stack = await startImportStack({ redisUrl: redis.url });
    srv = await startHttpServer();
  });
  afterAll(async () => {
    await stack?.close();
    await srv?.close();
    await redis?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('an import in flight and waiting jobs survive the restart; the worker reconnects', async () => {
    // A raw disk served at ~1 MiB/s: the first import takes about 8 s, long enough to restart Redis under it.
    const disk = Buffer.alloc(8 * 1024 * 1024);
    for (let off = 0; off < disk.length; off += 64 * 1024) randomBytes(16 * 1024).copy(disk, off);
    srv.file('/slow.img', { body: disk, bytesPerSecond: 1024 * 1024 });
    srv.file('/fast.img', { body: disk });
    stack.startWorker({ threads: 1 });
    const applied = [
      await stack.service.apply(cvi('rr-slow', `${srv.url}/slow.img`)),
      await stack.service.apply(cvi('rr-next-1', `${srv.url}/fast.img`)),
      await stack.service.apply(cvi('rr-next-2', `${srv.url}/fast.img`)),
    ];

    // Restart once the slow import is transferring (bytes have arrived, and it is far from done).
    for (let i = 0; i < 200; i++) {
      const r = srv.requestsFor('/slow.img')[0];
      if (r && r.bytesSent > 512 * 1024) break;
      await sleep(50);
    }
    expect(srv.requestsFor('/slow.img')[0]?.bytesSent).toBeGreaterThan(512 * 1024);
    const mid = await stack.store.get('ClusterVirtualImage', undefined, 'rr-slow');
    expect(mid?.status.phase).toBe('Provisioning');

    const { port, dataDir } = redis;
    await redis.stop();
    await sleep(1500);
    redis = await startRedis({ dataDir, port, appendOnly: true });
    // The transfer was still going when Redis came back.
    expect(srv.requestsFor('/slow.img')[0]?.bytesSent).toBeLessThan(disk.length);

    for (const name of ['rr-slow', 'rr-next-1', 'rr-next-2']) {
      const img = await stack.waitFor('ClusterVirtualImage', name, ['Ready', 'Failed'], 90_000);
      expect(img.status.phase, `${name}: ${JSON.stringify(img.status.failure)}`).toBe('Ready');
    }
    for (const { object } of applied) {
      expect(await stack.dvcr.listTags(stack.registryHostPort, `cvi/${object.metadata.name}`)).toEqual([object.metadata.uid]);
    }
    const counts = await stack.queue.counts();
    expect(counts).toMatchObject({ completed: 3, failed: 0, waiting: 0, active: 0, delayed: 0 });
    // The slow import was not started over from scratch by a second attempt.
    const slow = await stack.store.get('ClusterVirtualImage', undefined, 'rr-slow');
    expect(slow?.status.attempts).toBe(1);
  }, 150_000);
});
