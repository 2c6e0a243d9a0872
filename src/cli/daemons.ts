/**
 * The long-running halves: `worker` (imports), `serve` (HTTP API + housekeeping) and `up` (both in one process
 * tree, with an embedded Redis and DVCR registry unless REDIS_URL / DVCR_URL say where the real ones are).
 * Each runs until SIGINT/SIGTERM and then stops cleanly: the worker stops taking jobs and lets running ones
 * finish up to a deadline, then hands them back to the queue.
 */
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pino, type Logger } from 'pino';
import { ImportQueue } from '../../queues/imports.ts';
import { createRedis } from '../../queues/connection.ts';
import { startWorker, type RunningImportWorker } from '../../workers/import-worker.ts';
import { startUploadRunner } from '../../workers/upload-runner.ts';
import { UploadTimeouts } from '../../queues/uploads.ts';
import { UploadService } from '../api/uploads.ts';
import { ImageStore, ImportStats, UploadTokens } from '../images/index.ts';
import { dvcrHost, loadConfig, type Config } from '../config.ts';
import { createDvcrClient } from '../pipeline/context.ts';
import { runDemo } from './demo.ts';
import { buildServer } from '../api/server.ts';
import { ImageService } from '../api/service.ts';
import { startRedis, startRegistry, type RedisServer, type RegistryServer } from '../stack/index.ts';

/** How often `serve` finishes stuck deletions and checks that Ready images are still in DVCR. */
const RECONCILE_INTERVAL_MS = 30_000;
/** The embedded registry is on loopback: `up` lets sources reach it unless SOURCE_ALLOW_CIDRS says otherwise. */
const LOOPBACK_CIDRS = '127.0.0.0/8,::1/128';

function makeLogger(config: Config, destination?: string): Logger {
  return pino(
    { level: config.logLevel, base: { pid: process.pid }, redact: ['authorization', 'password', 'token', '*.password', '*.token'] },
    destination ? pino.destination({ dest: destination, mkdir: true, sync: false }) : pino.destination(2),
  );
}

/** Resolves on the first SIGINT/SIGTERM. */
function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolveSignal) => {
    const on = (s: NodeJS.Signals) => {
      process.off('SIGINT', on);
      process.off('SIGTERM', on);
      resolveSignal(s);
    };
    process.on('SIGINT', on);
    process.on('SIGTERM', on);
  });
}

export interface RunningApi {
  url: string;
  service: ImageService;
  close(): Promise<void>;
}

/** Starts the API (and the reconcile loop) for `config`; does not wait for signals. */
export async function startApi(config: Config, logger: Logger): Promise<RunningApi> {
  const redis = createRedis(config.redisUrl, 'producer', { enableOfflineQueue: true });
  const store = new ImageStore({ redis, prefix: `${config.redisPrefix}:images` });
  const queue = new ImportQueue({ redisUrl: config.redisUrl, prefix: config.redisPrefix, attempts: config.importAttempts });
  const host = dvcrHost(config);
  const dvcr = await createDvcrClient(config);
  const stats = new ImportStats(redis, store.prefix);
  // Uploads: tokens and locks next to the images, a timeout job per wait, the bytes moved by a thread pool.
  const timeouts = new UploadTimeouts({ redisUrl: config.redisUrl, prefix: config.redisPrefix });
  const runner = startUploadRunner({ config, logger, store, stats });
  const uploads = new UploadService({
    store,
    tokens: new UploadTokens(redis, store.prefix),
    timeouts,
    runner,
    timeoutMs: config.uploadTimeout,
    publicUrl: config.publicUrl,
    idleTimeoutMs: config.idleTimeout,
    logger,
  });
  const service = new ImageService({ store, queue, dvcr, dvcrHost: host, logger, uploads });
  const server = await buildServer({ service, queue, config, logger, redis, stats, uploads });
  const [h, p] = splitListen(config.listen);
  await server.listen({ host: h, port: p });
  const bound = server.server.address();
  const addr = bound && typeof bound === 'object' ? bound : undefined;
  const url = `http://${addr?.family === 'IPv6' ? `[${addr.address}]` : (addr?.address ?? h)}:${addr?.port ?? p}`;
  uploads.setApiUrl(url);
  timeouts.start(
    (data) => uploads.onTimeout(data),
    (message) => logger.warn({ err: message }, 'upload timeout check failed'),
  );
  const ac = new AbortController();
  const timer = setInterval(() => {
    service.reconcile(ac.signal).catch((e: unknown) => logger.warn({ err: (e as Error).message }, 'reconcile failed'));
  }, RECONCILE_INTERVAL_MS);
  timer.unref();
  return {
    url,
    service,
    async close() {
      ac.abort();
      clearInterval(timer);
      // Watches end cleanly on close; a client still holding a keep-alive connection after 2 s is cut, so
      // `serve` stops within a Kubernetes grace period instead of the 72 s keep-alive timeout.
      const cut = setTimeout(() => server.server.closeAllConnections(), 2000);
      await server.close();
      clearTimeout(cut);
      await timeouts.close();
      await runner.close();
      await queue.close();
      await dvcr.close();
      await redis.quit().catch(() => undefined);
    },
  };
}

export function splitListen(listen: string): [string, number] {
  const i = listen.lastIndexOf(':');
  const host = listen.slice(0, i).replace(/^\[|\]$/g, '');
  return [host, Number(listen.slice(i + 1))];
}

export async function runWorker(): Promise<void> {
  const config = loadConfig();
  const logger = makeLogger(config);
  const worker = startWorker({ config, logger });
  logger.info({ concurrency: config.workerConcurrency }, 'worker started');
  const sig = await untilSignal();
  logger.info({ signal: sig, deadlineMs: config.shutdownDeadline }, 'stopping: no new jobs; running imports get a deadline');
  await worker.close(config.shutdownDeadline);
  logger.info('worker stopped');
}

export async function runServe(opts: { listen?: string } = {}): Promise<void> {
  const config = loadConfig(process.env, { listen: opts.listen });
  const logger = makeLogger(config);
  const api = await startApi(config, logger);
  logger.info({ url: api.url }, 'API listening');
  process.stderr.write(`dvcr-importer API listening on ${api.url}\n`);
  await untilSignal();
  await api.close();
}

export interface UpOptions {
  listen?: string;
  /** Folder for the embedded Redis and DVCR data and the log. Default `.data` in the working directory. */
  dataDir?: string;
  /** Print lines to (default stdout). */
  out?: (line: string) => void;
  /** Resolves to stop (default: SIGINT/SIGTERM). */
  until?: Promise<unknown>;
  /** Also import a demo image built on this machine (offline quick start); data size in bytes. */
  demo?: { dataBytes: number };
}

/**
 * The embedded default: Redis and a DVCR registry of our own (when REDIS_URL / DVCR_URL are not set, data kept
 * under the data folder), a worker and the API, in one process tree.
 */
export async function runUp(opts: UpOptions = {}): Promise<void> {
  const out = opts.out ?? ((l: string) => process.stdout.write(`${l}\n`));
  const dataDir = resolve(opts.dataDir ?? '.data');
  mkdirSync(dataDir, { recursive: true });
  let redis: RedisServer | undefined;
  let registry: RegistryServer | undefined;
  let worker: RunningImportWorker | undefined;
  let api: RunningApi | undefined;
  let shutdownDeadline = 25_000;
  try {
    const overrides: Record<string, unknown> = { listen: opts.listen };
    if (!process.env.REDIS_URL) {
      redis = await startRedis({ dataDir: join(dataDir, 'redis'), appendOnly: true });
      overrides.redisUrl = redis.url;
    }
    if (!process.env.DVCR_URL) {
      registry = await startRegistry({ dataDir: join(dataDir, 'dvcr') });
      overrides.dvcrUrl = registry.url;
      // The demo (and the README's next steps) import from this loopback registry.
      if (!process.env.SOURCE_ALLOW_CIDRS) overrides.sourceAllowCidrs = LOOPBACK_CIDRS;
    }
    const config = loadConfig(process.env, overrides);
    shutdownDeadline = config.shutdownDeadline;
    const logFile = join(dataDir, 'dvcr-importer.log');
    const logger = makeLogger(config, logFile);
    worker = startWorker({ config, logger });
    api = await startApi(config, logger);
    out(`dvcr-importer is up`);
    out(`  API:    ${api.url}   (dvcr-importer get cvi --server ${api.url})`);
    out(`  Redis:  ${config.redisUrl}${redis ? `   (embedded, pid ${redis.pid}, data ${redis.dataDir})` : ''}`);
    out(`  DVCR:   ${config.dvcrUrl}${registry ? `   (embedded, pid ${registry.pid}, data ${registry.dataDir})` : ''}`);
    out(`  Worker: ${config.workerConcurrency} concurrent imports`);
    out(
      `  Sources: ${config.sourceAllowCidrs.length ? `public addresses and ${config.sourceAllowCidrs.join(', ')}` : 'public addresses only'}` +
        (overrides.sourceAllowCidrs ? '   (loopback allowed for the embedded registry; set SOURCE_ALLOW_CIDRS to change)' : ''),
    );
    out(`  Logs:   ${logFile}`);
    const stop = opts.until ?? untilSignal();
    if (opts.demo) {
      const ac = new AbortController();
      void stop.then(() => ac.abort());
      const client = await createDvcrClient(config);
      try {
        const image = await runDemo({
          dataBytes: opts.demo.dataBytes,
          sourceRegistry: dvcrHost(config),
          client,
          service: api.service,
          tmpDir: dataDir,
          log: out,
          signal: ac.signal,
        });
        if (image?.status.phase === 'Ready') {
          out(`demo: ready. Try: npx dvcr-importer describe cvi demo-disk --server ${api.url}`);
        }
      } catch (e) {
        if (!ac.signal.aborted) out(`demo: ${(e as Error).message}`);
      } finally {
        await client.close();
      }
    }
    out('Press Ctrl-C to stop.');
    await stop;
    out('stopping...');
  } finally {
    await api?.close().catch(() => undefined);
    await worker?.close(shutdownDeadline).catch(() => undefined);
    await Promise.all([redis?.stop(), registry?.stop()]);
  }
}
