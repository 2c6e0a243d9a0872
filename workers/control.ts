/**
 * The control plane of one import running in a piscina thread, shared by the BullMQ import worker
 * (`import-worker.ts`) and the API's upload endpoint (`upload-runner.ts`). On the calling (main) thread:
 *
 * - progress from the thread's MessagePort becomes status writes (`onProgress`, at most one per second, the
 *   latest report always landing within that second) with current and average speed (`SpeedMeter`);
 * - the commit gate: right before the manifest, the thread asks whether this generation may still write it (same
 *   uid and generation, not being deleted, not cancelled);
 * - cancellation: `abort()` asks the thread to stop cooperatively and terminates it after a grace period;
 * - a status write refused as stale (a newer generation or a delete took over) stops the import;
 * - the final Ready write (`onReady`).
 *
 * Failure policy (retry, back to waiting, Failed) stays with the caller: it differs between a queued import and
 * an upload whose bytes cannot be read twice.
 */
import { MessageChannel, type TransferListItem } from 'node:worker_threads';
import type { Piscina } from 'piscina';
import type { Logger } from 'pino';
import {
  onProgress,
  onReady,
  StaleWriteError,
  type Image,
  type ImageFormat,
  type ImageRef,
  type ImageStore,
  type StatusMutator,
} from '../src/images/index.ts';
import type { ControlMessage, ImportFailure, ImportOutcome, ImportTask, PipelineProgress, ThreadMessage } from '../src/pipeline/types.ts';
import type { ThreadTaskInput, ThreadTaskResult } from './import.thread.ts';

/** Status writes per import: at most one per this period. */
export const STATUS_INTERVAL_MS = 1000;
/** After a cooperative abort, how long the thread gets before it is terminated. */
export const ABORT_GRACE_MS = 10_000;

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

export type ImportPool = Pick<Piscina<ThreadTaskInput, ThreadTaskResult>, 'run'>;

/** One progress report with its speeds, as written to the status. */
export type ProgressWithSpeed = PipelineProgress & { currentBps: number; avgBps: number };

export interface ImportControlOptions {
  store: ImageStore;
  ref: ImageRef;
  uid: string;
  generation: number;
  log: Logger;
  /** Cancels the import (a cancel request, a shutdown, a client that went away). */
  signal: AbortSignal;
  /** Also called with each throttled progress report, alongside the status write (BullMQ job progress). */
  onProgress?: (p: ProgressWithSpeed) => Promise<unknown>;
  /** Each log line of the thread (already written to `log`). */
  onLog?: (line: string) => void;
}

export class ImportControl {
  /** A status write was refused as stale or the commit gate said no: a newer generation or a delete took over. */
  stale = false;
  private readonly opts: ImportControlOptions;
  private readonly hard = new AbortController();
  private aborted = false;

  constructor(opts: ImportControlOptions) {
    this.opts = opts;
  }

  /** Writes this generation's status (throws StaleWriteError when it is no longer the current one). */
  write(mutate: StatusMutator): Promise<Image> {
    const { store, ref, uid, generation } = this.opts;
    return store.updateStatus(ref, uid, generation, mutate);
  }

  /**
   * Runs the task in the pool and serves its port until it ends. Never throws for the task's own failures: a
   * thread that died, or was terminated after an abort, comes back as a failure.
   */
  async run(pool: ImportPool, task: ImportTask, transferList: readonly unknown[] = []): Promise<ThreadTaskResult> {
    const { signal, log } = this.opts;
    const channel = new MessageChannel();
    const port = channel.port1;
    const meter = new SpeedMeter();
    // The Provisioning write has just happened: the first progress write comes one interval later, so an
    // import shorter than that writes no progress at all (Provisioning, then Ready).
    let lastWrite = Date.now();
    let latest: ProgressWithSpeed | undefined;
    let trailing: NodeJS.Timeout | undefined;
    let writing: Promise<unknown> = Promise.resolve();
    const onAbort = (): void => {
      if (this.aborted) return;
      this.aborted = true;
      port.postMessage({ type: 'abort' } satisfies ControlMessage);
      setTimeout(() => this.hard.abort(), ABORT_GRACE_MS).unref();
    };
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    /** Writes the latest report (status and job progress), chained after the previous write. */
    const flush = (): void => {
      trailing = undefined;
      const report = latest;
      if (!report) return;
      latest = undefined;
      lastWrite = Date.now();
      writing = writing
        .then(() =>
          Promise.all([
            this.write((s) => onProgress(s, { bytesDone: report.bytesDone, bytesTotal: report.bytesTotal, currentBps: report.currentBps, avgBps: report.avgBps })),
            this.opts.onProgress?.(report),
          ]),
        )
        .catch((e: unknown) => {
          if (e instanceof StaleWriteError) {
            // A newer generation or a delete took over: stop this import.
            this.stale = true;
            onAbort();
          } else {
            log.warn({ err: (e as Error).message }, 'progress write failed');
          }
        });
    };
    port.on('message', (m: ThreadMessage) => {
      if (m.type === 'commit-request') {
        // The last gate before the manifest: is this still the image's current generation?
        void this.mayCommit()
          .then((reason) => port.postMessage({ type: 'commit-reply', ok: reason === undefined, ...(reason ? { reason } : {}) } satisfies ControlMessage))
          .catch((e: unknown) => port.postMessage({ type: 'commit-reply', ok: false, reason: (e as Error).message } satisfies ControlMessage));
        return;
      }
      if (m.type === 'log') {
        log.info(m.line);
        this.opts.onLog?.(m.line);
        return;
      }
      const p = m.progress;
      latest = { ...p, ...meter.add(p.bytesDone) };
      // At most one write per interval; a report that arrives sooner (a new stage, the last bytes) is written
      // when the interval ends, unless the import has ended by then (its final write says more).
      const wait = lastWrite + STATUS_INTERVAL_MS - Date.now();
      if (wait <= 0) flush();
      else trailing ??= setTimeout(flush, wait);
    });

    let result: ThreadTaskResult;
    try {
      result = await pool.run(
        { task, port: channel.port2 },
        { transferList: [channel.port2, ...transferList] as TransferListItem[], signal: this.hard.signal },
      );
    } catch (e) {
      result = { ok: false, failure: this.threadFailure(e) };
    } finally {
      clearTimeout(trailing);
      signal.removeEventListener('abort', onAbort);
      port.close();
    }
    await writing;
    return result;
  }

  /** Whether the thread may write its manifest: undefined when yes, else why not. */
  private async mayCommit(): Promise<string | undefined> {
    const { store, ref, uid, generation, signal } = this.opts;
    const cur = await store.get(ref.kind, ref.namespace, ref.name);
    const ok =
      !signal.aborted &&
      !this.stale &&
      cur !== null &&
      cur.metadata.uid === uid &&
      cur.metadata.generation === generation &&
      cur.metadata.deletionTimestamp === undefined;
    if (ok) return undefined;
    this.stale = true;
    return 'a newer generation or a delete took over';
  }

  private threadFailure(e: unknown): ImportFailure {
    return this.hard.signal.aborted
      ? { errorClass: 'cancelled', reason: 'Cancelled', message: 'the import was cancelled' }
      : { errorClass: 'transient', reason: 'WorkerThreadFailed', message: `worker thread failed: ${(e as Error).message}` };
  }

  /**
   * The manifest is in DVCR: writes Ready with format, sizes, checksum and average speed; returns the image.
   * Undefined when a newer generation or a delete took over meanwhile (nothing written).
   */
  async markReady(o: ImportOutcome): Promise<Image | undefined> {
    const avgBps = o.durationMs > 0 ? (o.sourceBytes * 1000) / o.durationMs : undefined;
    try {
      return await this.write((s) =>
        onReady(s, {
          registryURL: o.registryURL,
          format: o.format as ImageFormat,
          storedBytes: o.storedBytes,
          unpackedBytes: o.virtualSize,
          ...(o.sha256 ? { sha256: o.sha256 } : {}),
          ...(avgBps !== undefined ? { avgBps } : {}),
          ...(o.originalFormat ? { originalFormat: o.originalFormat as ImageFormat } : {}),
        }),
      );
    } catch (e) {
      if (e instanceof StaleWriteError) {
        this.stale = true;
        return undefined;
      }
      throw e;
    }
  }
}
