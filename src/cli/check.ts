/**
 * `dvcr-importer check`: compares the image store in Redis with DVCR (src/images/consistency.ts), with the import
 * queue's view of each image's job, using the same environment as `worker` (REDIS_URL, REDIS_PREFIX, DVCR_URL,
 * DVCR credentials). Prints one line per inconsistency; exit code 0 when there are none, 1 otherwise.
 */
import { ImportQueue, importJobId } from '../../queues/imports.ts';
import { createRedis } from '../../queues/connection.ts';
import { dvcrHost, loadConfig } from '../config.ts';
import { checkConsistency, type Inconsistency } from '../images/consistency.ts';
import { ImageStore, type Image } from '../images/index.ts';
import type { RegistryClient } from '../oci/index.ts';
import { createDvcrClient } from '../pipeline/context.ts';

export interface StoreCheckOptions {
  store: ImageStore;
  queue: ImportQueue;
  dvcr: RegistryClient;
  /** `host:port` of DVCR. */
  registry: string;
  verifyDisk?: boolean;
  terminatingGraceMs?: number;
  signal?: AbortSignal;
}

/** {@link checkConsistency} with the queue's job states and committed manifest digests. */
export function checkStore(opts: StoreCheckOptions): Promise<Inconsistency[]> {
  const jobId = (image: Image) => importJobId({ uid: image.metadata.uid, generation: image.metadata.generation });
  return checkConsistency({
    store: opts.store,
    dvcr: opts.dvcr,
    registry: opts.registry,
    jobState: (image) => opts.queue.state(jobId(image)),
    committedDigest: async (image) => {
      const r = await opts.queue.result(jobId(image));
      return r?.outcome === 'imported' ? r.manifestDigest : undefined;
    },
    ...(opts.verifyDisk !== undefined ? { verifyDisk: opts.verifyDisk } : {}),
    ...(opts.terminatingGraceMs !== undefined ? { terminatingGraceMs: opts.terminatingGraceMs } : {}),
    ...(opts.signal ? { signal: opts.signal } : {}),
  });
}

export function formatInconsistency(i: Inconsistency): string {
  const where = i.image ?? `${i.repository}${i.tag ? `:${i.tag}` : ''}`;
  return `${i.kind}\t${where}\t${i.message}`;
}

/** Runs the check against the configured Redis and DVCR; returns the exit code. */
export async function runCheck(opts: { verifyDisk: boolean; out: (s: string) => void }): Promise<number> {
  const config = loadConfig();
  const redis = createRedis(config.redisUrl, 'producer', { enableOfflineQueue: true });
  const store = new ImageStore({ redis, prefix: `${config.redisPrefix}:images` });
  const queue = new ImportQueue({ redisUrl: config.redisUrl, prefix: config.redisPrefix }, redis);
  const dvcr = await createDvcrClient(config);
  try {
    const found = await checkStore({ store, queue, dvcr, registry: dvcrHost(config), verifyDisk: opts.verifyDisk });
    for (const i of found) opts.out(`${formatInconsistency(i)}\n`);
    opts.out(found.length === 0 ? 'consistent: every image in Redis agrees with DVCR\n' : `${found.length} inconsistencies\n`);
    return found.length === 0 ? 0 : 1;
  } finally {
    await queue.close();
    await dvcr.close();
    await redis.quit().catch(() => undefined);
  }
}
