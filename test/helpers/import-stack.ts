/**
 * The import path wired as in production, for integration tests: the shared Redis and registry from the global
 * setup (the registry is both the source and DVCR), a unique key prefix per test file, a real worker (BullMQ +
 * piscina threads) and the ImageService that the API uses.
 */
import { inject } from 'vitest';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { loadConfig, type Config } from '../../src/config.ts';
import { ImageStore, type Image, type ImageKind } from '../../src/images/index.ts';
import { ImageService } from '../../src/api/service.ts';
import { createDvcrClient } from '../../src/pipeline/context.ts';
import { ImportQueue } from '../../queues/imports.ts';
import { createRedis } from '../../queues/connection.ts';
import { startWorker, type RunningImportWorker } from '../../workers/import-worker.ts';
import type { RegistryClient } from '../../src/oci/index.ts';
import type { Redis } from 'ioredis';

/** Open upload sessions of a repository in a registry's storage folder (distribution 2.8 filesystem layout). */
export function uploadSessions(registry: { dataDir: string }, repository: string): string[] {
  const dir = join(registry.dataDir, 'storage', 'docker', 'registry', 'v2', 'repositories', repository, '_uploads');
  return existsSync(dir) ? readdirSync(dir) : [];
}

/** SOURCE_ALLOW_CIDRS for tests whose sources are on loopback. */
export const LOOPBACK_CIDRS = '127.0.0.0/8,::1/128';

export interface ImportStack {
  config: Config;
  service: ImageService;
  store: ImageStore;
  queue: ImportQueue;
  dvcr: RegistryClient;
  /** The producer connection the store uses. */
  redis: Redis;
  registryHostPort: string;
  startWorker(opts?: { threads?: number }): RunningImportWorker;
  /**
   * The environment of a `dvcr-importer worker` process on this stack (Redis, prefix, DVCR, loopback sources
   * allowed), plus `extra`; `insecureHosts` are added to INSECURE_REGISTRIES.
   */
  workerEnv(extra?: Record<string, string>, insecureHosts?: string[]): NodeJS.ProcessEnv;
  /** Waits until the image reaches one of `phases`; returns it. Fails with the last status on timeout. */
  waitFor(kind: ImageKind, name: string, phases: string[], timeoutMs?: number, namespace?: string): Promise<Image>;
  close(): Promise<void>;
}

/**
 * `overrides.dvcrUrl` points the stack at a DVCR of the test's own (then `registryHostPort` is that registry's);
 * without it the shared registry serves as DVCR.
 */
export async function startImportStack(overrides: Partial<Record<keyof Config, unknown>> = {}): Promise<ImportStack> {
  const registryHostPort = typeof overrides.dvcrUrl === 'string' ? new URL(overrides.dvcrUrl).host : inject('registryHostPort');
  const config = loadConfig(
    {},
    {
      redisUrl: inject('redisUrl'),
      redisPrefix: `{t${randomBytes(4).toString('hex')}}`,
      dvcrUrl: inject('registryUrl'),
      insecureRegistries: registryHostPort,
      // The test servers are on loopback, which sources may not reach by default (SSRF guard).
      sourceAllowCidrs: LOOPBACK_CIDRS,
      logLevel: process.env.TEST_LOG_LEVEL ?? 'silent',
      ...overrides,
    },
  );
  const redis = createRedis(config.redisUrl, 'producer', { enableOfflineQueue: true });
  const store = new ImageStore({ redis, prefix: `${config.redisPrefix}:images` });
  const queue = new ImportQueue({ redisUrl: config.redisUrl, prefix: config.redisPrefix, attempts: config.importAttempts });
  const dvcr = await createDvcrClient(config);
  const logger = pino({ level: config.logLevel });
  const service = new ImageService({ store, queue, dvcr, dvcrHost: registryHostPort, logger });
  const workers: RunningImportWorker[] = [];
  return {
    config,
    service,
    store,
    queue,
    dvcr,
    redis,
    registryHostPort,
    workerEnv(extra = {}, insecureHosts = []) {
      return {
        ...process.env,
        REDIS_URL: config.redisUrl,
        REDIS_PREFIX: config.redisPrefix,
        DVCR_URL: config.dvcrUrl,
        INSECURE_REGISTRIES: [registryHostPort, ...insecureHosts].join(','),
        SOURCE_ALLOW_CIDRS: LOOPBACK_CIDRS,
        ...extra,
      };
    },
    startWorker(opts = {}) {
      const w = startWorker({ config, logger, ...opts });
      workers.push(w);
      return w;
    },
    async waitFor(kind, name, phases, timeoutMs = 60_000, namespace) {
      const ac = new AbortController();
      const timer = setTimeout(() => ac.abort(), timeoutMs);
      let last: Image | undefined;
      try {
        for await (const ev of store.watch(kind, { name, ...(namespace ? { namespace } : {}), signal: ac.signal, blockMs: 500 })) {
          if (ev.type === 'BOOKMARK') continue;
          last = ev.object;
          if (phases.includes(ev.object.status.phase)) return ev.object;
        }
      } catch (e) {
        if (!ac.signal.aborted) throw e;
      } finally {
        clearTimeout(timer);
        ac.abort();
      }
      throw new Error(`${kind}/${name} did not reach ${phases.join('|')} in ${timeoutMs} ms; last status: ${JSON.stringify(last?.status)}`);
    },
    async close() {
      await Promise.all(workers.map((w) => w.close(5000)));
      await queue.close();
      await dvcr.close();
      await redis.quit().catch(() => undefined);
    },
  };
}
