/**
 * The control plane's half of an `ObjectRef` import: find the referenced image in the store (the data plane
 * has no store) and decide.
 *
 * - Ready (with a DVCR location): the thread's task gets the source's `status.target.registryURL` and its status
 *   facts (format, sizes, sha256, original format), which the new image's status copies.
 * - Not Ready yet (Pending, Provisioning, ImageLost, being deleted, ...): the image stays as it is (Pending) with
 *   `DatasourceReady=False`, reason `ClusterImageNotReady` / `ImageNotReady` (upstream's), and the job is put
 *   back as delayed for SOURCE_WAIT_INTERVAL without spending an attempt (the queue's `rate-limited` class). It
 *   simply looks again; no index of waiters has to be kept consistent, and a source that never becomes Ready
 *   costs one store read per interval. A spec change or a delete of the waiting image ends the wait as for any
 *   job (superseded / removed).
 * - Missing: Failed at once with `ClusterVirtualImage "x" not found` (reason `ClusterImageNotFound` /
 *   `ImageNotFound`, not retryable); applying the source later does not revive it.
 */
import type { Logger } from 'pino';
import type { ImportJobResult } from '../queues/imports.ts';
import { JobFailure } from '../queues/imports.ts';
import {
  formatRef,
  getCondition,
  IMAGE_FORMATS,
  onDatasourceNotReady,
  onFailed,
  StaleWriteError,
  type Image,
  type ImageFormat,
  type ImageRef,
  type ImageStatus,
  type ImageStore,
  type ImportStats,
} from '../src/images/index.ts';
import type { ImportSource } from '../src/pipeline/types.ts';

export type ObjectRefTaskSource = Extract<ImportSource, { type: 'ObjectRef' }>;

export interface ResolveObjectRefOptions {
  store: ImageStore;
  /** The image being imported (its spec has an ObjectRef data source). */
  image: Image;
  /** Writes this generation's status (throws StaleWriteError when superseded). */
  write: (mutate: (s: ImageStatus) => ImageStatus) => Promise<unknown>;
  stats?: ImportStats;
  log?: Logger;
  /** How long the job waits before looking again at a source that is not Ready. */
  waitMs: number;
}

/** The referenced image: a VirtualImage without namespace means one in the referring image's namespace. */
export function sourceRefOf(image: Image): ImageRef {
  const ds = image.spec.dataSource;
  if (ds.type !== 'ObjectRef') throw new Error(`${formatRef({ kind: image.kind, name: image.metadata.name })} has no ObjectRef source`);
  const r = ds.objectRef;
  if (r.kind === 'ClusterVirtualImage') return { kind: r.kind, name: r.name };
  const namespace = r.namespace ?? image.metadata.namespace;
  return { kind: r.kind, name: r.name, ...(namespace ? { namespace } : {}) };
}

function isFormat(f: string | undefined): f is ImageFormat {
  return f !== undefined && (IMAGE_FORMATS as readonly string[]).includes(f);
}

/**
 * Resolves the source, or writes why not and throws the `JobFailure` that tells the queue what to do (delayed
 * retry without an attempt, or a final failure). A write refused as stale means a newer generation took over:
 * the job ends as superseded.
 */
export async function resolveObjectRef(opts: ResolveObjectRefOptions): Promise<ObjectRefTaskSource | ImportJobResult> {
  const { store, image, write } = opts;
  const ref = sourceRefOf(image);
  const label = formatRef(ref);
  const cluster = ref.kind === 'ClusterVirtualImage';
  try {
    const src = await store.get(ref.kind, ref.namespace, ref.name);
    if (!src) {
      const reason = cluster ? 'ClusterImageNotFound' : 'ImageNotFound';
      const failure = { reason, message: `${label} not found`, retryable: false };
      await write((s) => onFailed(onDatasourceNotReady(s, { reason, message: failure.message }), failure));
      await opts.stats?.recordFailure(reason).catch(() => undefined);
      opts.log?.warn({ reason, source: label }, failure.message);
      throw new JobFailure(failure.message, 'permanent');
    }
    const st = src.status;
    const registryURL = st.target?.registryURL;
    if (st.phase !== 'Ready' || !registryURL || src.metadata.deletionTimestamp || !isFormat(st.format)) {
      const reason = cluster ? 'ClusterImageNotReady' : 'ImageNotReady';
      const phase = src.metadata.deletionTimestamp ? 'Terminating' : st.phase;
      const message = `${label} is not ready yet (phase ${phase}); the import starts once it is Ready`;
      const cur = getCondition(image.status, 'DatasourceReady');
      if (cur?.status !== 'False' || cur.reason !== reason || cur.message !== message) {
        await write((s) => onDatasourceNotReady(s, { reason, message }));
      }
      opts.log?.info({ source: label, phase, retryInMs: opts.waitMs }, 'waiting for the source image to be Ready');
      throw new JobFailure(message, 'rate-limited', opts.waitMs);
    }
    return {
      type: 'ObjectRef',
      ref: label,
      registryURL,
      format: st.format,
      storedBytes: Number(st.size?.storedBytes ?? 0),
      virtualSize: Number(st.size?.unpackedBytes ?? 0),
      sha256: st.checksums?.sha256 ?? '',
      ...(st.originalFormat ? { originalFormat: st.originalFormat } : {}),
    };
  } catch (e) {
    if (e instanceof StaleWriteError) return { outcome: 'superseded' };
    throw e;
  }
}
