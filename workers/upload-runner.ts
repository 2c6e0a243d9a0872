/**
 * The data plane of uploads, owned by the API process: a small piscina pool running the same thread task as the
 * import worker (`import.thread.ts`, source `Upload`). The API's main thread only moves the request body's chunks
 * to the thread over a MessagePort (transferred, with a window of acknowledgements: the socket is read as fast as
 * DVCR takes the bytes, and never buffered whole; src/sources/upload.ts); hashing, unwrapping, probing and the
 * DVCR upload run in the thread. The control plane (status writes, progress and speed, the commit gate) is the
 * worker's (`control.ts`).
 *
 * A client that goes away mid-body aborts the thread (cooperatively, then terminated after a grace period) and
 * the result says `interrupted`; src/api/uploads.ts decides what the image does next.
 */
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import { Piscina } from 'piscina';
import type { Logger } from 'pino';
import { imageLabel, type UploadRunner, type UploadRunRequest, type UploadRunResult } from '../src/api/uploads.ts';
import { dvcrHost, type Config } from '../src/config.ts';
import { dvcrRepository, onProvisioningStarted, refOf, StaleWriteError, type Image, type ImageStore, type ImportStats } from '../src/images/index.ts';
import type { ImportTask } from '../src/pipeline/types.ts';
import { sendUploadBody } from '../src/sources/upload.ts';
import { ImportControl } from './control.ts';
import { importThreadOptions } from './thread-entry.ts';
import type { ThreadTaskInput, ThreadTaskResult } from './import.thread.ts';

export interface UploadRunnerOptions {
  config: Config;
  logger: Logger;
  store: ImageStore;
  /** Pool-wide statistics (successes and failures are counted like the worker's). */
  stats?: ImportStats;
  /** Uploads moving at once in this process (threads). Default: WORKER_CONCURRENCY. */
  threads?: number;
}

/** The data plane's task for one upload (the body's port goes in the transferList). */
export function buildUploadTask(image: Image, config: Config, body: MessagePort, size: number | undefined): ImportTask {
  const ds = image.spec.dataSource;
  const registry = dvcrHost(config);
  const checksum = ds.type === 'Upload' ? ds.upload?.checksum : undefined;
  const checksums = checksum ? Object.fromEntries(Object.entries(checksum).filter(([, v]) => typeof v === 'string')) : undefined;
  // As for every source: the image's conversion wins over the default (CONVERT_TO).
  const convertTo = image.spec.conversion?.format ?? config.convertTo;
  return {
    ...(convertTo ? { convertTo } : {}),
    imageRef: imageLabel(image),
    target: { registry, repository: dvcrRepository(registry, refOf(image)), tag: image.metadata.uid },
    source: {
      type: 'Upload',
      body,
      ...(size !== undefined ? { size } : {}),
      ...(checksums && Object.keys(checksums).length ? { checksums } : {}),
    },
  };
}

export function startUploadRunner(opts: UploadRunnerOptions): UploadRunner {
  const { config, logger, store, stats } = opts;
  const pool = new Piscina<ThreadTaskInput, ThreadTaskResult>({
    ...importThreadOptions(logger),
    workerData: { config },
    minThreads: 0,
    maxThreads: opts.threads ?? config.workerConcurrency,
    idleTimeout: 60_000,
    concurrentTasksPerWorker: 1,
  });

  async function run({ image, body, size, signal }: UploadRunRequest): Promise<UploadRunResult> {
    const ref = refOf(image);
    const { uid, generation } = image.metadata;
    const log = logger.child({ image: imageLabel(image), generation, source: 'Upload' });
    const ac = new AbortController();
    /** Why the upload ended early, when it did: the client went away, or `signal` (shutdown, lost lock). */
    let interrupted: string | undefined;
    const stopWith = (why: string): void => {
      interrupted ??= why;
      ac.abort();
    };
    const onAbort = (): void => stopWith((signal.reason as Error | undefined)?.message ?? 'the upload was stopped');
    const onClose = (): void => {
      if (!body.complete) stopWith('the connection closed');
    };
    body.on('close', onClose);
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    const channel = new MessageChannel();
    const reader = sendUploadBody(body, channel.port1);
    try {
      const task = buildUploadTask(image, config, channel.port2, size);
      const registryURL = `${task.target.registry}/${task.target.repository}:${task.target.tag}`;
      const control = new ImportControl({ store, ref, uid, generation, log, signal: ac.signal });
      let started: Image;
      try {
        started = await control.write((s) =>
          s.phase === 'WaitForUserUpload' || s.phase === 'Provisioning' ? onProvisioningStarted(s, { registryURL }) : s,
        );
      } catch (e) {
        if (e instanceof StaleWriteError) return { outcome: 'superseded', message: 'a spec change or a delete took over' };
        throw e;
      }
      if (started.status.phase !== 'Provisioning') return { outcome: 'superseded', message: `the image is ${started.status.phase}` };
      log.info({ size: size ?? 'unknown', attempt: started.status.attempts }, 'upload started');

      const result = await control.run(pool, task, [channel.port2]);
      if (control.stale) return { outcome: 'superseded', message: 'a spec change or a delete took over' };
      if (result.ok) {
        const o = result.outcome;
        const ready = await control.markReady(o);
        if (!ready) return { outcome: 'superseded', message: 'a spec change or a delete took over' };
        await stats?.recordSuccess(o.storedBytes, o.durationMs / 1000).catch(() => undefined);
        log.info({ format: o.format, storedBytes: o.storedBytes, durationMs: o.durationMs, digest: o.manifestDigest }, 'upload ready');
        return { outcome: 'ready', image: ready };
      }
      const failure = interrupted
        ? { ...result.failure, message: `${interrupted} after ${reader.bytes()}${size !== undefined ? ` of ${size}` : ''} bytes` }
        : result.failure;
      if (!interrupted && failure.errorClass === 'permanent') await stats?.recordFailure(failure.reason).catch(() => undefined);
      log.warn({ reason: failure.reason, class: failure.errorClass, interrupted: interrupted !== undefined }, failure.message);
      return { outcome: 'failed', failure, interrupted: interrupted !== undefined };
    } finally {
      reader.stop();
      body.off('close', onClose);
      signal.removeEventListener('abort', onAbort);
    }
  }

  return {
    run,
    async close() {
      await pool.destroy();
    },
  };
}
