/**
 * The data plane of one import, run in a piscina worker thread: pulls, unwraps, hashes, probes and pushes the
 * bytes. Never on the thread that holds BullMQ locks. Progress goes back on the task's MessagePort; an
 * `{type: 'abort'}` message on the same port cancels cooperatively (children killed, uploads stopped).
 */
import type { MessagePort } from 'node:worker_threads';
import { workerData } from 'piscina';
import type { Config } from '../src/config.ts';
import { createPipelineContext, type PipelineContext } from '../src/pipeline/context.ts';
import { toFailure } from '../src/pipeline/failure.ts';
import { runImport } from '../src/pipeline/run.ts';
import type {
  ControlMessage,
  ImportFailure,
  ImportOutcome,
  ImportTask,
  PipelineProgress,
  ThreadMessage,
} from '../src/pipeline/types.ts';

export interface ThreadTaskInput {
  task: ImportTask;
  port: MessagePort;
}

export type ThreadTaskResult = { ok: true; outcome: ImportOutcome } | { ok: false; failure: ImportFailure };

/** How often progress crosses to the main thread (the main thread throttles Redis writes further). */
const PROGRESS_INTERVAL_MS = 250;

let context: Promise<PipelineContext> | undefined;

export default async function importTask({ task, port }: ThreadTaskInput): Promise<ThreadTaskResult> {
  const ac = new AbortController();
  let commitReply: ((m: Extract<ControlMessage, { type: 'commit-reply' }>) => void) | undefined;
  port.on('message', (m: ControlMessage) => {
    if (m.type === 'abort') ac.abort(Object.assign(new Error('the import was cancelled'), { name: 'AbortError' }));
    else if (m.type === 'commit-reply') commitReply?.(m);
  });
  const beforeCommit = async (): Promise<void> => {
    const reply = await new Promise<Extract<ControlMessage, { type: 'commit-reply' }>>((resolve) => {
      commitReply = resolve;
      port.postMessage({ type: 'commit-request' } satisfies ThreadMessage);
    });
    if (!reply.ok) throw Object.assign(new Error(`not committing: ${reply.reason ?? 'superseded'}`), { name: 'AbortError' });
  };
  let last = 0;
  let pending: PipelineProgress | undefined;
  const post = (msg: ThreadMessage) => port.postMessage(msg);
  const onProgress = (p: PipelineProgress) => {
    const now = Date.now();
    if (now - last >= PROGRESS_INTERVAL_MS || p.stage !== pending?.stage) {
      last = now;
      pending = p;
      post({ type: 'progress', progress: p });
    } else {
      pending = p;
    }
  };
  try {
    context ??= createPipelineContext((workerData as { config: Config }).config);
    const ctx = await context;
    const outcome = await runImport(task, ctx, {
      signal: ac.signal,
      onProgress,
      log: (line) => post({ type: 'log', line }),
      beforeCommit,
    });
    if (pending) post({ type: 'progress', progress: pending });
    return { ok: true, outcome };
  } catch (e) {
    return { ok: false, failure: toFailure(ac.signal.aborted ? ac.signal.reason : e) };
  } finally {
    port.close();
  }
}
