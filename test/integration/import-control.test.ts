/**
 * ImportControl's status writes, against a real Redis store and a stand-in pool whose "thread" reports progress
 * on the task's port as fast as a small import does: at most one status write per second, the latest report
 * landing within that second, none at all for an import shorter than that.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { MessagePort } from 'node:worker_threads';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { API_VERSION, ImageStore, onProvisioningStarted, parseImageManifest, refOf, type Image } from '../../src/images/index.ts';
import type { PipelineProgress, ThreadMessage } from '../../src/pipeline/types.ts';
import { ImportControl, STATUS_INTERVAL_MS, type ImportPool } from '../../workers/control.ts';
import type { ThreadTaskResult } from '../../workers/import.thread.ts';

let redis: Redis;
beforeAll(async () => {
  redis = new Redis(inject('redisUrl'), { lazyConnect: true });
  await redis.connect();
});
afterAll(async () => {
  await redis.quit();
});

const OUTCOME = {
  format: 'raw', cdrom: false, storedBytes: 100, virtualSize: 100, sha256: 'a'.repeat(64), sourceBytes: 100, compression: [],
  fileName: 'd.img', layerDigest: `sha256:${'b'.repeat(64)}`, manifestDigest: `sha256:${'c'.repeat(64)}`,
  registryURL: 'dvcr.example/cvi/x:uid', durationMs: 1,
};

/** A pool whose task posts the given progress reports, `everyMs` apart, then succeeds. */
function pool(reports: PipelineProgress[], everyMs: number): ImportPool {
  return {
    async run(input: unknown): Promise<ThreadTaskResult> {
      const port = (input as { port: MessagePort }).port;
      for (const progress of reports) {
        port.postMessage({ type: 'progress', progress } satisfies ThreadMessage);
        await sleep(everyMs);
      }
      port.close();
      return { ok: true, outcome: OUTCOME } as ThreadTaskResult;
    },
  } as ImportPool;
}

async function provisioning(store: ImageStore, name: string): Promise<Image> {
  const { object } = await store.apply(
    parseImageManifest({
      apiVersion: API_VERSION,
      kind: 'ClusterVirtualImage',
      metadata: { name },
      spec: { dataSource: { type: 'HTTP', http: { url: 'https://images.example/d.img' } } },
    }),
  );
  return store.updateStatus(refOf(object), object.metadata.uid, object.metadata.generation, (s) => onProvisioningStarted(s, {}));
}

/** Runs the control with `reports`, counting the progress writes it makes and the job-progress reports. */
async function runControl(reports: PipelineProgress[], everyMs: number) {
  const store = new ImageStore({ redis, prefix: `{dvcr-test-${randomUUID().slice(0, 8)}}:images` });
  const image = await provisioning(store, 'img');
  const writes: Array<{ at: number; progress: string | undefined }> = [];
  const jobProgress: number[] = [];
  const started = Date.now();
  const control = new ImportControl({
    store,
    ref: refOf(image),
    uid: image.metadata.uid,
    generation: image.metadata.generation,
    log: pino({ level: 'silent' }),
    signal: new AbortController().signal,
    onProgress: async (p) => {
      jobProgress.push(p.bytesDone);
    },
  });
  const write = control.write.bind(control);
  control.write = async (mutate) => {
    const img = await write(mutate);
    writes.push({ at: Date.now() - started, progress: img.status.progress });
    return img;
  };
  const result = await control.run(pool(reports, everyMs), { imageRef: 'x', target: { registry: 'r', repository: 'cvi/img', tag: 't' }, source: { type: 'HTTP', url: 'https://images.example/d.img' } });
  return { result, writes, jobProgress };
}

const report = (stage: PipelineProgress['stage'], bytesDone: number): PipelineProgress => ({ stage, bytesDone, bytesTotal: 1000 });

describe('ImportControl status writes', () => {
  it('an import shorter than the interval writes no progress at all, whatever its stage changes', async () => {
    const stages = ['Resolving', 'Transferring', 'Probing', 'Committing'] as const;
    const { result, writes, jobProgress } = await runControl(stages.map((s, i) => report(s, (i + 1) * 250)), 20);
    expect(result.ok).toBe(true);
    expect(writes).toEqual([]);
    expect(jobProgress).toEqual([]);
  });

  it('a longer one: at most one write per interval, and the latest report lands within it', async () => {
    // 30 reports 50 ms apart (1.5 s): a new stage now and then, as a real import sends them.
    const reports = Array.from({ length: 30 }, (_, i) => report(i < 10 ? 'Resolving' : i < 25 ? 'Transferring' : 'Committing', (i + 1) * 33));
    const { writes, jobProgress } = await runControl(reports, 50);
    expect(writes.length).toBeGreaterThanOrEqual(1);
    expect(writes.length).toBeLessThanOrEqual(2);
    expect(writes[0]!.at).toBeGreaterThanOrEqual(STATUS_INTERVAL_MS - 50);
    for (let i = 1; i < writes.length; i++) expect(writes[i]!.at - writes[i - 1]!.at).toBeGreaterThanOrEqual(STATUS_INTERVAL_MS - 50);
    // What was written is the newest report at the time (about 1 s in: report 20 or so of 30), one decimal.
    expect(writes[0]!.progress).toMatch(/^\d+\.\d%$/);
    expect(parseFloat(writes[0]!.progress!)).toBeGreaterThan(50);
    expect(jobProgress).toHaveLength(writes.length);
  });
});
