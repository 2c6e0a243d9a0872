/**
 * The `imports` queue: the one place that knows BullMQ. Jobs carry references (which image, which
 * generation), never bytes or secrets. The rest of the project sees `ImportQueue` (producers) and
 * `startImportWorker` (consumers) with plain types, and signals its error classes with `JobFailure`.
 *
 * Cancellation crosses processes: `cancel(jobId)` removes a waiting job, or publishes on a Redis channel to
 * which every worker process listens; the one running the job aborts its signal.
 */
import { DelayedError, Queue, QueueEvents, UnrecoverableError, WaitingError, Worker, type Job, type JobsOptions } from 'bullmq';
import type { Redis } from 'ioredis';
import { createRedis } from './connection.ts';

export const IMPORT_QUEUE = 'imports';

/** What a job carries: a reference to one generation of one image. */
export interface ImportJobData {
  kind: 'ClusterVirtualImage' | 'VirtualImage';
  namespace?: string;
  name: string;
  uid: string;
  generation: number;
}

/** Progress as forwarded by workers (throttled to about 1/s per job). */
export interface ImportProgress {
  phase: string;
  bytesDone: number;
  bytesTotal?: number;
  currentBps?: number;
  avgBps?: number;
}

export interface ImportJobResult {
  outcome: 'imported' | 'superseded' | 'cancelled';
  manifestDigest?: string;
}

export interface QueueSettings {
  redisUrl: string;
  /** Key prefix with a hash tag, e.g. `{dvcr}`. */
  prefix: string;
  attempts?: number;
}

/** The BullMQ job id of one generation of one image (no `:`; not all digits). */
export function importJobId(d: Pick<ImportJobData, 'uid' | 'generation'>): string {
  return `${d.uid}-g${d.generation}`;
}

export function defaultJobOptions(attempts = 8): JobsOptions {
  return {
    attempts,
    backoff: { type: 'exponential', delay: 2000 },
    removeOnComplete: { age: 24 * 3600, count: 5000 },
    removeOnFail: { age: 7 * 24 * 3600, count: 5000 },
  };
}

function cancelChannel(prefix: string): string {
  return `${prefix}:${IMPORT_QUEUE}:cancel`;
}

export interface JobCounts {
  waiting: number;
  active: number;
  delayed: number;
  completed: number;
  failed: number;
  prioritized: number;
}

/** Producer side: enqueue, cancel, inspect. */
export class ImportQueue {
  readonly queue: Queue<ImportJobData, ImportJobResult>;
  private readonly publisher: Redis;
  private readonly ownsPublisher: boolean;

  constructor(private readonly settings: QueueSettings, connection?: Redis) {
    this.publisher = connection ?? createRedis(settings.redisUrl, 'producer');
    this.ownsPublisher = connection === undefined;
    this.queue = new Queue<ImportJobData, ImportJobResult>(IMPORT_QUEUE, {
      connection: this.publisher,
      prefix: settings.prefix,
      defaultJobOptions: defaultJobOptions(settings.attempts),
    });
    // Connection errors while Redis restarts: callers see failed commands; without a listener BullMQ prints each.
    this.queue.on('error', () => undefined);
  }

  /** Adds the job for this generation; a second call for the same generation is a no-op. */
  async enqueue(data: ImportJobData, opts: { delayMs?: number } = {}): Promise<string> {
    const jobId = importJobId(data);
    await this.queue.add('import', data, { jobId, ...(opts.delayMs ? { delay: opts.delayMs } : {}) });
    return jobId;
  }

  /**
   * Stops the job: removed if it has not started, else its worker aborts it (the job then fails as
   * cancelled, without retries). Returns what happened.
   */
  async cancel(jobId: string): Promise<'removed' | 'signalled' | 'absent'> {
    const job = await this.queue.getJob(jobId);
    if (!job) return 'absent';
    const state = await job.getState();
    if (state === 'completed' || state === 'failed') return 'absent';
    if (state !== 'active') {
      try {
        await job.remove();
        return 'removed';
      } catch {
        /* became active meanwhile: signal it */
      }
    }
    await this.publisher.publish(cancelChannel(this.settings.prefix), jobId);
    return 'signalled';
  }

  async state(jobId: string): Promise<string | undefined> {
    const job = await this.queue.getJob(jobId);
    return job ? job.getState() : undefined;
  }

  /** What a completed job returned (undefined while it has not completed, or once it is removed). */
  async result(jobId: string): Promise<ImportJobResult | undefined> {
    const job = await this.queue.getJob(jobId);
    return job?.finishedOn !== undefined && job.returnvalue ? job.returnvalue : undefined;
  }

  async counts(): Promise<JobCounts> {
    const c = await this.queue.getJobCounts('waiting', 'active', 'delayed', 'completed', 'failed', 'prioritized');
    return {
      waiting: c.waiting ?? 0,
      active: c.active ?? 0,
      delayed: c.delayed ?? 0,
      completed: c.completed ?? 0,
      failed: c.failed ?? 0,
      prioritized: c.prioritized ?? 0,
    };
  }

  async close(): Promise<void> {
    await this.queue.close();
    if (this.ownsPublisher) await this.publisher.quit().catch(() => undefined);
  }
}

/** Thrown by a processor to say how BullMQ should treat a failure. */
export class JobFailure extends Error {
  override readonly name = 'JobFailure';
  constructor(
    message: string,
    readonly errorClass: 'transient' | 'rate-limited' | 'permanent' | 'cancelled',
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

/** What a processor sees of a job. */
export interface ImportJob {
  readonly id: string;
  readonly data: ImportJobData;
  /** Attempts already made before this one (0 on the first run). */
  readonly attemptsMade: number;
  readonly maxAttempts: number;
  updateProgress(p: ImportProgress): Promise<void>;
  log(line: string): Promise<void>;
}

export type ImportProcessor = (job: ImportJob, signal: AbortSignal) => Promise<ImportJobResult>;

export interface ImportWorkerOptions extends QueueSettings {
  concurrency: number;
  processor: ImportProcessor;
  /** Lock duration; renewed at half this period by a timer on this thread. Default 60 s. */
  lockDurationMs?: number;
  /** Called when a job ends for good or a worker-level error occurs (logging). */
  onEvent?: (e: WorkerEvent) => void;
}

export type WorkerEvent =
  | { type: 'completed'; jobId: string; result: ImportJobResult }
  | { type: 'failed'; jobId: string; message: string; final: boolean; attemptsMade: number }
  | { type: 'error'; message: string }
  | { type: 'stalled'; jobId: string };

export interface ImportWorkerHandle {
  /** Stops taking jobs; waits up to `deadlineMs` for running ones, then aborts them (they go back to the queue). */
  close(deadlineMs?: number): Promise<void>;
  readonly running: number;
}

export function startImportWorker(opts: ImportWorkerOptions): ImportWorkerHandle {
  const connection = createRedis(opts.redisUrl, 'worker');
  const subscriber = createRedis(opts.redisUrl, 'worker');
  const cancelled = new Set<string>();
  let closing = false;

  const worker: Worker<ImportJobData, ImportJobResult> = new Worker<ImportJobData, ImportJobResult>(
    IMPORT_QUEUE,
    async (job: Job<ImportJobData, ImportJobResult>, token?: string, signal?: AbortSignal) => {
      if (closing) {
        // BullMQ can still hand out a job after close() began (a blocked wait woken by a new job): give it
        // straight back, untouched, for another worker.
        await job.moveToWait(token);
        throw new WaitingError();
      }
      const ac = new AbortController();
      const onAbort = () => ac.abort(signal?.reason ?? new Error('cancelled'));
      if (signal?.aborted) onAbort();
      else signal?.addEventListener('abort', onAbort, { once: true });
      const view: ImportJob = {
        id: job.id!,
        data: job.data,
        attemptsMade: job.attemptsMade,
        maxAttempts: job.opts.attempts ?? 1,
        updateProgress: (p) => job.updateProgress(p as unknown as object),
        log: async (line) => {
          await job.log(line);
        },
      };
      try {
        return await opts.processor(view, ac.signal);
      } catch (e) {
        if (closing && ac.signal.aborted && !cancelled.has(job.id!)) {
          // Shutting down past the deadline: hand the job back without spending an attempt (checked before
          // the cancel below: the abort of a shutdown is not a user's cancel).
          await job.moveToDelayed(Date.now() + 1000, token);
          throw new DelayedError();
        }
        if (cancelled.has(job.id!) || (e instanceof JobFailure && e.errorClass === 'cancelled')) {
          throw new UnrecoverableError(`cancelled: ${e instanceof Error ? e.message : String(e)}`);
        }
        if (e instanceof JobFailure) {
          if (e.errorClass === 'permanent') throw new UnrecoverableError(e.message);
          if (e.errorClass === 'rate-limited') {
            // Delay only this job (other registries are not limited); no attempt is spent.
            await job.moveToDelayed(Date.now() + Math.max(1000, e.retryAfterMs ?? 5000), token);
            throw new DelayedError();
          }
        }
        throw e;
      } finally {
        signal?.removeEventListener('abort', onAbort);
        cancelled.delete(job.id!);
      }
    },
    {
      connection,
      prefix: opts.prefix,
      concurrency: opts.concurrency,
      lockDuration: opts.lockDurationMs ?? 60_000,
      // Check for stalled jobs (a worker that died) at the lock period, not BullMQ's fixed 30 s.
      stalledInterval: Math.min(30_000, opts.lockDurationMs ?? 60_000),
      maxStalledCount: 2,
      autorun: true,
    },
  );

  worker.on('completed', (job, result) => opts.onEvent?.({ type: 'completed', jobId: job.id!, result }));
  worker.on('failed', (job, err) => {
    if (!job || err instanceof DelayedError || err.name === 'DelayedError') return;
    const final = err instanceof UnrecoverableError || err.name === 'UnrecoverableError' || job.attemptsMade >= (job.opts.attempts ?? 1);
    opts.onEvent?.({ type: 'failed', jobId: job.id!, message: err.message, final, attemptsMade: job.attemptsMade });
  });
  worker.on('error', (err) => opts.onEvent?.({ type: 'error', message: err.message }));
  worker.on('stalled', (jobId) => opts.onEvent?.({ type: 'stalled', jobId }));

  void subscriber.subscribe(cancelChannel(opts.prefix));
  subscriber.on('message', (_channel: string, jobId: string) => {
    cancelled.add(jobId);
    if (!worker.cancelJob(jobId, 'cancelled by request')) cancelled.delete(jobId);
  });

  let active = 0;
  worker.on('active', () => active++);
  const dec = () => {
    active = Math.max(0, active - 1);
  };
  worker.on('completed', dec);
  worker.on('failed', dec);

  return {
    get running() {
      return active;
    },
    async close(deadlineMs = 30_000) {
      closing = true;
      const closed = worker.close();
      const timer = setTimeout(() => worker.cancelAllJobs('worker shutting down'), deadlineMs);
      try {
        await closed;
      } finally {
        clearTimeout(timer);
        await subscriber.quit().catch(() => undefined);
        await connection.quit().catch(() => undefined);
      }
    },
  };
}

/** Typed live events of the queue (for watchers that want job-level progress). */
export class ImportEvents {
  readonly events: QueueEvents;
  constructor(settings: QueueSettings) {
    this.events = new QueueEvents(IMPORT_QUEUE, {
      connection: createRedis(settings.redisUrl, 'worker'),
      prefix: settings.prefix,
    });
  }
  onProgress(fn: (jobId: string, p: ImportProgress) => void): void {
    this.events.on('progress', ({ jobId, data }) => fn(jobId, data as unknown as ImportProgress));
  }
  onCompleted(fn: (jobId: string, r: ImportJobResult) => void): void {
    this.events.on('completed', ({ jobId, returnvalue }) => fn(jobId, returnvalue as unknown as ImportJobResult));
  }
  onFailed(fn: (jobId: string, reason: string) => void): void {
    this.events.on('failed', ({ jobId, failedReason }) => fn(jobId, failedReason));
  }
  waitUntilReady(): Promise<unknown> {
    return this.events.waitUntilReady();
  }
  close(): Promise<void> {
    return this.events.close();
  }
}
