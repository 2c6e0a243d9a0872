/**
 * The BullMQ import worker: the control plane of one job. On this thread: lock renewal (BullMQ's timer),
 * status writes (throttled to about 1/s), cancellation, and mapping the data plane's failure classes to retry,
 * rate-limit delay or a final failure. The bytes move in a piscina thread (`import.thread.ts`).
 */
import { Piscina } from 'piscina';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { dvcrHost, type Config } from '../src/config.ts';
import {
  dvcrRepository,
  ImageStore,
  ImportStats,
  isSpecFrozen,
  onAttemptFailed,
  onFailed,
  onProvisioningStarted,
  refOf,
  StaleWriteError,
  type Image,
  type ImageRef,
} from '../src/images/index.ts';
import type { ImportFailure, ImportTask } from '../src/pipeline/types.ts';
import { createRedis } from '../queues/connection.ts';
import { JobFailure, startImportWorker, type ImportJob, type ImportJobResult, type ImportWorkerHandle } from '../queues/imports.ts';
import { ImportControl } from './control.ts';
import { importThreadOptions } from './thread-entry.ts';
import type { ThreadTaskInput, ThreadTaskResult } from './import.thread.ts';
import { resolveObjectRef, type ObjectRefTaskSource } from './object-ref.ts';

export { SpeedMeter } from './control.ts';

export interface ImportWorkerOptions {
  config: Config;
  logger: Logger;
  /** Override the thread count (default: config.workerConcurrency). */
  threads?: number;
}

export interface RunningImportWorker {
  close(deadlineMs?: number): Promise<void>;
}

/**
 * The data plane's task for one image generation: references only, no secrets. An ObjectRef source must have
 * been resolved by the control plane first (`resolveObjectRef`) and is passed in.
 */
export function buildTask(image: Image, config: Config, objectRef?: ObjectRefTaskSource): ImportTask {
  const task = sourceTask(image, config, objectRef);
  // Ours: the image's conversion wins over the worker default. An ObjectRef copy is never converted.
  const convertTo = image.spec.conversion?.format ?? config.convertTo;
  return convertTo && task.source.type !== 'ObjectRef' ? { ...task, convertTo } : task;
}

function sourceTask(image: Image, config: Config, objectRef: ObjectRefTaskSource | undefined): ImportTask {
  const ds = image.spec.dataSource;
  const registry = dvcrHost(config);
  const target = { registry, repository: dvcrRepository(registry, refOf(image)), tag: image.metadata.uid };
  const imageRef = `${image.kind}/${image.metadata.namespace ? `${image.metadata.namespace}/` : ''}${image.metadata.name}`;
  if (ds.type === 'ObjectRef' && objectRef) return { imageRef, target, source: objectRef };
  if (ds.type === 'ContainerImage' && ds.containerImage) {
    const ci = ds.containerImage;
    return {
      imageRef,
      target,
      source: {
        type: 'ContainerImage',
        image: ci.image,
        ...(ci.platform ? { platform: ci.platform } : {}),
        ...(ci.imagePullSecret ? { pullSecret: { name: ci.imagePullSecret.name, ...(ci.imagePullSecret.namespace ? { namespace: ci.imagePullSecret.namespace } : {}) } } : {}),
        ...(ci.caBundle ? { caBundle: ci.caBundle } : {}),
      },
    };
  }
  if (ds.type === 'HTTP' && ds.http) {
    const h = ds.http;
    const checksums = h.checksum ? Object.fromEntries(Object.entries(h.checksum).filter(([, v]) => typeof v === 'string')) : undefined;
    return {
      imageRef,
      target,
      source: {
        type: 'HTTP',
        url: h.url,
        ...(h.caBundle ? { caBundle: h.caBundle } : {}),
        ...(checksums && Object.keys(checksums).length ? { checksums } : {}),
      },
    };
  }
  throw new JobFailure(`data source type ${ds.type} is not supported by this worker yet`, 'permanent');
}

export function startWorker(opts: ImportWorkerOptions): RunningImportWorker {
  const { config, logger } = opts;
  const threads = opts.threads ?? config.workerConcurrency;
  const redis: Redis = createRedis(config.redisUrl, 'worker');
  const store = new ImageStore({ redis, prefix: `${config.redisPrefix}:images` });
  const stats = new ImportStats(redis, store.prefix);
  const pool = new Piscina<ThreadTaskInput, ThreadTaskResult>({
    ...importThreadOptions(logger),
    workerData: { config },
    // Threads stay warm: starting one (and loading its modules) takes a moment.
    minThreads: threads,
    maxThreads: threads,
    idleTimeout: 60_000,
    concurrentTasksPerWorker: 1,
  });

  const processor = async (job: ImportJob, signal: AbortSignal): Promise<ImportJobResult> => {
    const { data } = job;
    const ref: ImageRef = { kind: data.kind, name: data.name, ...(data.namespace ? { namespace: data.namespace } : {}) };
    const log = logger.child({ job: job.id, image: `${data.kind}/${data.namespace ? `${data.namespace}/` : ''}${data.name}`, generation: data.generation });
    const image = await store.get(data.kind, data.namespace, data.name);
    if (!image || image.metadata.uid !== data.uid || image.metadata.generation !== data.generation) {
      log.info('image changed or gone before the import started: skipping this generation');
      return { outcome: 'superseded' };
    }
    if (image.metadata.deletionTimestamp) return { outcome: 'cancelled' };
    if (isSpecFrozen(image.status)) return { outcome: 'superseded' };
    if (image.spec.dataSource.type === 'Upload') {
      // Upload images are served by the API (the upload URL); a job for one has nothing to do here.
      log.info('Upload image: its bytes arrive through the API upload URL, not this worker');
      return { outcome: 'superseded' };
    }
    const write = (mutate: Parameters<ImageStore['updateStatus']>[3]) =>
      store.updateStatus(ref, data.uid, data.generation, mutate);
    let objectRef: ObjectRefTaskSource | undefined;
    if (image.spec.dataSource.type === 'ObjectRef') {
      const resolved = await resolveObjectRef({ store, image, write, stats, log, waitMs: config.sourceWaitInterval });
      if ('outcome' in resolved) return resolved;
      objectRef = resolved;
    }
    let task: ImportTask;
    try {
      task = buildTask(image, config, objectRef);
    } catch (e) {
      // A spec this worker cannot run: the image must say so, not sit in Pending.
      const failure = { reason: 'UnsupportedDataSource', message: (e as Error).message, retryable: false };
      await write((s) => onFailed(s, failure)).catch(() => undefined);
      await stats.recordFailure(failure.reason).catch(() => undefined);
      throw new JobFailure(failure.message, 'permanent');
    }

    await write((s) => onProvisioningStarted(s, { attempt: job.attemptsMade + 1, registryURL: `${task.target.registry}/${task.target.repository}:${task.target.tag}` }));
    log.info({ source: task.source.type, attempt: job.attemptsMade + 1 }, 'import started');

    const control = new ImportControl({
      store,
      ref,
      uid: data.uid,
      generation: data.generation,
      log,
      signal,
      onProgress: (p) =>
        job.updateProgress({ phase: p.stage, bytesDone: p.bytesDone, bytesTotal: p.bytesTotal, currentBps: p.currentBps, avgBps: p.avgBps }),
      onLog: (line) => void job.log(line).catch(() => undefined),
    });
    const result = await control.run(pool, task);

    if (control.stale) return { outcome: 'superseded' };
    if (result.ok) {
      const o = result.outcome;
      if (!(await control.markReady(o))) return { outcome: 'superseded', manifestDigest: o.manifestDigest };
      await stats.recordSuccess(o.storedBytes, o.durationMs / 1000).catch(() => undefined);
      log.info({ format: o.format, storedBytes: o.storedBytes, durationMs: o.durationMs, digest: o.manifestDigest }, 'import ready');
      return { outcome: 'imported', manifestDigest: o.manifestDigest };
    }
    return fail(result.failure);

    async function fail(f: ImportFailure): Promise<never> {
      if (f.errorClass === 'cancelled' || signal.aborted) {
        log.info('import cancelled');
        throw new JobFailure(f.message, 'cancelled');
      }
      const final = f.errorClass === 'permanent' || (f.errorClass === 'transient' && job.attemptsMade + 1 >= job.maxAttempts);
      const failure = { reason: f.reason, message: f.message, retryable: f.errorClass !== 'permanent' };
      try {
        await write((s) => (final ? onFailed(s, failure) : onAttemptFailed(s, failure, f.retryAfterMs !== undefined ? { retryInMs: f.retryAfterMs } : {})));
      } catch (e) {
        if (!(e instanceof StaleWriteError)) throw e;
      }
      if (final) await stats.recordFailure(f.reason).catch(() => undefined);
      log.warn({ reason: f.reason, class: f.errorClass, final }, f.message);
      throw new JobFailure(f.message, f.errorClass, f.retryAfterMs);
    }
  };

  const handle: ImportWorkerHandle = startImportWorker({
    redisUrl: config.redisUrl,
    prefix: config.redisPrefix,
    concurrency: threads,
    lockDurationMs: config.jobLockDuration,
    processor,
    onEvent: (e) => {
      if (e.type === 'error') logger.error({ err: e.message }, 'worker error');
      else if (e.type === 'stalled') logger.warn({ job: e.jobId }, 'job stalled: it will be run again');
    },
  });

  return {
    async close(deadlineMs = 30_000) {
      await handle.close(deadlineMs);
      await pool.destroy();
      await redis.quit().catch(() => undefined);
    },
  };
}
