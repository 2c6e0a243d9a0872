/** Consuming a watch stream until a handler says stop, the stream ends, or a signal aborts (whichever comes first). */
import type { WatchEvent } from '../../images/index.ts';

export type WatchEnd = 'stopped' | 'ended' | 'aborted';

/**
 * Calls `onEvent` for each event of `events` until it returns true (`stopped`), the stream ends (`ended`) or
 * `signal` aborts (`aborted`). An abort ends the wait at once, even if the stream does not react to the signal; the
 * stream is then closed in the background. Errors of the stream after the abort are ignored.
 */
export async function forEachEvent(
  events: AsyncIterable<WatchEvent>,
  signal: AbortSignal,
  onEvent: (ev: WatchEvent) => boolean | void,
): Promise<WatchEnd> {
  if (signal.aborted) return 'aborted';
  const it = events[Symbol.asyncIterator]();
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<'aborted'>((resolve) => {
    onAbort = () => resolve('aborted');
    signal.addEventListener('abort', onAbort, { once: true });
  });
  const close = (): void => {
    void Promise.resolve()
      .then(() => it.return?.())
      .catch(() => undefined);
  };
  try {
    for (;;) {
      const next = it.next();
      let r: IteratorResult<WatchEvent> | 'aborted';
      try {
        r = await Promise.race([next, aborted]);
      } catch (e) {
        if (signal.aborted) return 'aborted';
        throw e;
      }
      if (r === 'aborted') {
        next.catch(() => undefined);
        close();
        return 'aborted';
      }
      if (r.done) return signal.aborted ? 'aborted' : 'ended';
      let stop: boolean | void;
      try {
        stop = onEvent(r.value);
      } catch (e) {
        close();
        throw e;
      }
      if (stop === true) {
        close();
        return 'stopped';
      }
    }
  } finally {
    if (onAbort) signal.removeEventListener('abort', onAbort);
  }
}
