/**
 * The BullMQ import worker: the control plane of one job. On this thread: lock renewal (BullMQ's timer),
 * status writes (throttled to about 1/s), cancellation, and mapping the data plane's failure classes to retry,
 * rate-limit delay or a final failure. The bytes move in a piscina thread (`import.thread.ts`).
 */
import { MessageChannel } from 'node:worker_threads';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
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
  onProgress,
  onProvisioningStarted,
  onReady,
  refOf,
  StaleWriteError,
  type Image,
  type ImageFormat,
  type ImageRef,
} from '../src/images/index.ts';
import type { ControlMessage, ImportFailure, ImportTask, ThreadMessage } from '../src/pipeline/types.ts';
import { createRedis } from '../queues/connection.ts';
import { JobFailure, startImportWorker, type ImportJob, type ImportJobResult, type ImportWorkerHandle } from '../queues/imports.ts';
import type { ThreadTaskInput, ThreadTaskResult } from './import.thread.ts';

/** Status and job-progress writes per job: at most one per this period (plus phase changes). */
const STATUS_INTERVAL_MS = 1000;
/** After a cooperative abort, how long the thread gets before it is terminated. */
const ABORT_GRACE_MS = 10_000;

export interface ImportWorkerOptions {
  config: Config;
  logger: Logger;
  /** Override the thread count (default: config.workerConcurrency). */
  threads?: number;
}

export interface RunningImportWorker {
  close(deadlineMs?: number): Promise<void>;
}

/** Current speed over a sliding window, and the average since the attempt began. */
export class SpeedMeter {
  private readonly samples: Array<{ t: number; bytes: number }> = [];
  private readonly start: number;
  constructor(
    private readonly windowMs = 3000,
    now = Date.now(),
  ) {
    this.start = now;
    this.samples.push({ t: now, bytes: 0 });
  }
  add(bytes: number, now = Date.now()): { currentBps: number; avgBps: number } {
    this.samples.push({ t: now, bytes });
    while (this.samples.length > 2 && now - this.samples[1]!.t >= this.windowMs) this.samples.shift();
    const first = this.samples[0]!;
    const dt = (now - first.t) / 1000;
    const currentBps = dt > 0 ? Math.max(0, (bytes - first.bytes) / dt) : 0;
    const total = (now - this.start) / 1000;
    const avgBps = total > 0 ? bytes / total : 0;
    return { currentBps, avgBps };
  }
}

function tsxImport(): string[] {
  // The project runs TypeScript through tsx; worker threads need the loader too (Node 20 cannot load .ts).
  const require = createRequire(import.meta.url);
  return ['--import', pathToFileURL(require.resolve('tsx')).href];
}

/** The data plane's task for one image generation: references only, no secrets. */
export function buildTask(image: Image, config: Config): ImportTask {
  const ds = image.spec.dataSource;
  const registry = dvcrHost(config);
  const target = { registry, repository: dvcrRepository(registry, refOf(image)), tag: image.metadata.uid };
  const imageRef = `${image.kind}/${image.metadata.namespace ? `${image.metadata.namespace}/` : ''}${image.metadata.name}`;
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
    filename: new URL('./import.thread.ts', import.meta.url).href,
    execArgv: tsxImport(),
    workerData: { config },
    // Threads stay warm: starting one (and loading the TypeScript) costs about a second.
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
    const write = (mutate: Parameters<ImageStore['updateStatus']>[3]) =>
      store.updateStatus(ref, data.uid, data.generation, mutate);
    let task: ImportTask;
    try {
      task = buildTask(image, config);
    } catch (e) {
      // A spec this worker cannot run: the image must say so, not sit in Pending.
      const failure = { reason: 'UnsupportedDataSource', message: (e as Error).message, retryable: false };
      await write((s) => onFailed(s, failure)).catch(() => undefined);
      await stats.recordFailure(failure.reason).catch(() => undefined);
      throw new JobFailure(failure.message, 'permanent');
    }

    await write((s) => onProvisioningStarted(s, { attempt: job.attemptsMade + 1, registryURL: `${task.target.registry}/${task.target.repository}:${task.target.tag}` }));
    log.info({ source: task.source.type, attempt: job.attemptsMade + 1 }, 'import started');

    const channel = new MessageChannel();
    const hard = new AbortController();
    const meter = new SpeedMeter();
    let lastWrite = 0;
    let lastStage = '';
    let writing: Promise<unknown> = Promise.resolve();
    let stale = false;
    const onAbort = () => {
      channel.port1.postMessage({ type: 'abort' });
      setTimeout(() => hard.abort(), ABORT_GRACE_MS).unref();
    };
    signal.addEventListener('abort', onAbort, { once: true });
    channel.port1.on('message', (m: ThreadMessage) => {
      if (m.type === 'commit-request') {
        // The last gate before the manifest: is this still the image's current generation?
        void store
          .get(data.kind, data.namespace, data.name)
          .then((cur) => {
            const ok = !signal.aborted && !stale && cur !== null && cur.metadata.uid === data.uid &&
              cur.metadata.generation === data.generation && cur.metadata.deletionTimestamp === undefined;
            if (!ok) stale = true;
            channel.port1.postMessage({ type: 'commit-reply', ok, ...(ok ? {} : { reason: 'a newer generation or a delete took over' }) } satisfies ControlMessage);
          })
          .catch((e: unknown) => channel.port1.postMessage({ type: 'commit-reply', ok: false, reason: (e as Error).message } satisfies ControlMessage));
        return;
      }
      if (m.type === 'log') {
        log.info(m.line);
        void job.log(m.line).catch(() => undefined);
        return;
      }
      const p = m.progress;
      const speeds = meter.add(p.bytesDone);
      const now = Date.now();
      if (now - lastWrite < STATUS_INTERVAL_MS && p.stage === lastStage) return;
      lastWrite = now;
      lastStage = p.stage;
      writing = writing
        .then(() =>
          Promise.all([
            write((s) => onProgress(s, { bytesDone: p.bytesDone, bytesTotal: p.bytesTotal, ...speeds })),
            job.updateProgress({ phase: p.stage, bytesDone: p.bytesDone, bytesTotal: p.bytesTotal, ...speeds }),
          ]),
        )
        .catch((e: unknown) => {
          if (e instanceof StaleWriteError) {
            // A newer generation or a delete took over: stop this import.
            stale = true;
            onAbort();
          } else {
            log.warn({ err: (e as Error).message }, 'progress write failed');
          }
        });
    });

    let result: ThreadTaskResult;
    try {
      result = await pool.run({ task, port: channel.port2 }, { transferList: [channel.port2], signal: hard.signal });
    } catch (e) {
      result = {
        ok: false,
        failure: hard.signal.aborted
          ? { errorClass: 'cancelled', reason: 'Cancelled', message: 'the import was cancelled' }
          : { errorClass: 'transient', reason: 'WorkerThreadFailed', message: `worker thread failed: ${(e as Error).message}` },
      };
    } finally {
      signal.removeEventListener('abort', onAbort);
      channel.port1.close();
    }
    await writing;

    if (stale) return { outcome: 'superseded' };
    if (result.ok) {
      const o = result.outcome;
      const avgBps = o.durationMs > 0 ? (o.sourceBytes * 1000) / o.durationMs : undefined;
      try {
        await write((s) =>
          onReady(s, {
            registryURL: o.registryURL,
            format: o.format as ImageFormat,
            storedBytes: o.storedBytes,
            unpackedBytes: o.virtualSize,
            sha256: o.sha256,
            ...(avgBps !== undefined ? { avgBps } : {}),
          }),
        );
      } catch (e) {
        if (e instanceof StaleWriteError) return { outcome: 'superseded', manifestDigest: o.manifestDigest };
        throw e;
      }
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
