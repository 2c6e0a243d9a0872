/**
 * The DVCR registry restarted mid-push, through the real worker: a registry of this test's own serves as DVCR;
 * while the disk layer is being uploaded to it (its upload session folder exists and the source is part-read),
 * the registry process stops and starts again on the same port and storage. The interrupted push is a transient
 * failure: the attempt starts over, the image ends Ready (never Failed) with one complete image in DVCR.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startRegistry, type RegistryServer } from '../../src/stack/index.ts';
import { checkStore } from '../../src/cli/check.ts';
import type { ImageStatus } from '../../src/images/index.ts';
import { startHttpServer, type TestHttpServer } from '../helpers/http-server.ts';
import { startImportStack, uploadSessions, type ImportStack } from '../helpers/import-stack.ts';

describe('DVCR registry restarted mid-push', () => {
  let dvcr: RegistryServer;
  let stack: ImportStack;
  let srv: TestHttpServer;
  let work: string;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'dvcr-restart-'));
    dvcr = await startRegistry({ dataDir: join(work, 'dvcr') });
    stack = await startImportStack({ dvcrUrl: dvcr.url });
    srv = await startHttpServer();
  });
  afterAll(async () => {
    await stack?.close();
    await srv?.close();
    await dvcr?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('the interrupted push is retried as a new attempt; Ready with one complete image, never Failed', async () => {
    // A raw disk of known length streams straight into the DVCR layer upload; served at ~3 MiB/s, the push is
    // in flight for about 8 s.
    const disk = Buffer.alloc(24 * 1024 * 1024);
    for (let off = 0; off < disk.length; off += 256 * 1024) randomBytes(64 * 1024).copy(disk, off);
    srv.file('/big.img', { body: disk, bytesPerSecond: 3 * 1024 * 1024 });
    stack.startWorker({ threads: 1 });

    const statuses: ImageStatus[] = [];
    const watching = new AbortController();
    const watched = (async () => {
      for await (const ev of stack.store.watch('ClusterVirtualImage', { name: 'dvcr-restart', signal: watching.signal, blockMs: 200 })) {
        if (ev.type !== 'BOOKMARK') statuses.push(ev.object.status);
      }
    })().catch(() => undefined);

    const { object } = await stack.service.apply({
      apiVersion: 'virtualization.deckhouse.io/v1alpha2',
      kind: 'ClusterVirtualImage',
      metadata: { name: 'dvcr-restart' },
      spec: { dataSource: { type: 'HTTP', http: { url: `${srv.url}/big.img` } } },
    });

    // Stop DVCR once its upload session exists and a quarter of the disk has gone through.
    for (let i = 0; i < 300; i++) {
      const r = srv.requestsFor('/big.img')[0];
      if (uploadSessions(dvcr, 'cvi/dvcr-restart').length > 0 && r && r.bytesSent > disk.length / 4) break;
      await sleep(50);
    }
    expect(uploadSessions(dvcr, 'cvi/dvcr-restart').length).toBeGreaterThan(0);
    const sent = srv.requestsFor('/big.img')[0]?.bytesSent ?? 0;
    expect(sent).toBeGreaterThan(disk.length / 4);
    expect(sent).toBeLessThan(disk.length);
    const { port, dataDir } = dvcr;
    await dvcr.stop();
    await sleep(1000);
    dvcr = await startRegistry({ dataDir, port });

    const ready = await stack.waitFor('ClusterVirtualImage', 'dvcr-restart', ['Ready', 'Failed'], 90_000);
    watching.abort();
    await watched;
    expect(ready.status.phase, JSON.stringify(ready.status.failure)).toBe('Ready');
    // The push failed transiently (recorded, retryable) and a second attempt did the work; never Failed.
    expect(statuses.map((s) => s.phase)).not.toContain('Failed');
    expect(statuses.some((s) => s.failure?.retryable === true)).toBe(true);
    expect(ready.status.attempts).toBeGreaterThanOrEqual(2);
    expect(ready.status.failure).toBeUndefined();
    expect(ready.status.checksums?.sha256).toBe(createHash('sha256').update(disk).digest('hex'));
    expect(ready.status.size?.storedBytes).toBe(String(disk.length));

    // One complete image: exactly one tag, its manifest is the one the job committed, labels and disk agree.
    expect(await stack.dvcr.listTags(stack.registryHostPort, 'cvi/dvcr-restart')).toEqual([object.metadata.uid]);
    const m = await stack.dvcr.getManifest({ registry: stack.registryHostPort, repository: 'cvi/dvcr-restart', tag: object.metadata.uid, digest: undefined });
    const result = await stack.queue.result(`${object.metadata.uid}-g1`);
    expect(result).toMatchObject({ outcome: 'imported', manifestDigest: m.digest });
    expect(await checkStore({ store: stack.store, queue: stack.queue, dvcr: stack.dvcr, registry: stack.registryHostPort, verifyDisk: true })).toEqual([]);
  }, 120_000);
});
