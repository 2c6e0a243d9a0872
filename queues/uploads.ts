/**
 * The `upload-timeouts` queue: one delayed job per wait of an `Upload` image for its bytes. When the delay is over,
 * whichever API process is running picks the job up and fails the image with `WaitForUserUploadTimeout` if it is
 * still waiting (the processor decides; a job whose image moved on does nothing).
 *
 * Why a delayed job: the timer lives in Redis, so it survives restarts of every API process, fires once even with
 * several of them (BullMQ hands a job to one worker), and costs nothing per image while it waits (no scan of all
 * images). Jobs carry the image reference only, never the upload token.
 */
import { Queue, Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { createRedis } from './connection.ts';

export const UPLOAD_TIMEOUT_QUEUE = 'upload-timeouts';
export const UPLOAD_TIMEOUT_JOB = 'upload-timeout';

/** One wait of one generation of one image. */
export interface UploadTimeoutData {
  kind: 'ClusterVirtualImage' | 'VirtualImage';
  namespace?: string;
  name: string;
  uid: string;
  generation: number;
}

export type UploadTimeoutProcessor = (data: UploadTimeoutData) => Promise<void>;

export interface UploadTimeoutSettings {
  redisUrl: string;
  /** Key prefix with a hash tag, e.g. `{dvcr}`. */
  prefix: string;
}

export class UploadTimeouts {
  private readonly queue: Queue<UploadTimeoutData>;
  private readonly producer: Redis;
  private worker: Worker<UploadTimeoutData> | undefined;
  private workerConnection: Redis | undefined;

  constructor(private readonly settings: UploadTimeoutSettings) {
    this.producer = createRedis(settings.redisUrl, 'producer', { enableOfflineQueue: true });
    this.queue = new Queue<UploadTimeoutData>(UPLOAD_TIMEOUT_QUEUE, {
      connection: this.producer,
      prefix: settings.prefix,
      defaultJobOptions: {
        attempts: 5,
        backoff: { type: 'exponential', delay: 1000 },
        removeOnComplete: { age: 3600, count: 1000 },
        removeOnFail: { age: 24 * 3600, count: 1000 },
      },
    });
  }

  /** Checks the image after `delayMs`. Each wait gets its own job (a re-entered wait schedules a new one). */
  async schedule(data: UploadTimeoutData, delayMs: number): Promise<void> {
    await this.queue.add(UPLOAD_TIMEOUT_JOB, data, { delay: Math.max(0, Math.round(delayMs)) });
  }

  /** Starts processing due jobs in this process (every API process does; each job runs once). */
  start(processor: UploadTimeoutProcessor, onError?: (message: string) => void): void {
    if (this.worker) return;
    this.workerConnection = createRedis(this.settings.redisUrl, 'worker');
    this.worker = new Worker<UploadTimeoutData>(
      UPLOAD_TIMEOUT_QUEUE,
      async (job: Job<UploadTimeoutData>) => {
        await processor(job.data);
      },
      { connection: this.workerConnection, prefix: this.settings.prefix, concurrency: 4, autorun: true },
    );
    this.worker.on('error', (e) => onError?.(e.message));
    this.worker.on('failed', (_job, e) => onError?.(e.message));
  }

  async close(): Promise<void> {
    await this.worker?.close();
    await this.workerConnection?.quit().catch(() => undefined);
    await this.queue.close();
    await this.producer.quit().catch(() => undefined);
  }
}
