/**
 * The HTTP API server: `buildServer(...)` returns a fastify instance with the routes of client-types.ts, not
 * listening (the caller listens: `await app.listen({ host, port })`, and `await app.close()` on shutdown, which
 * ends open watches first).
 *
 * - JSON bodies up to 1 MiB (larger: 413). Errors are `{error: {code, message, issues?}}` (routes-errors.ts):
 *   422 Invalid with every issue, 409 SpecFrozen with upstream's message, 404, 500 with a safe message.
 * - Watch as server-sent events (`?watch=true`, heartbeats, resumable by `Last-Event-ID` or `sinceId`).
 * - Bearer-token auth when `config.apiToken` is set (auth.ts): operator and optional read-only token;
 *   `/healthz` is open.
 * - `/metrics` (metrics.ts), `/healthz`, `/readyz` (Redis PING + DVCR `GET /v2/`), `/openapi.json` generated
 *   from the route schemas (openapi.ts).
 */
import fastify, { type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { ImportQueue } from '../../queues/imports.ts';
import type { Config } from '../config.ts';
import { authHook, tokenVerifier } from './auth.ts';
import { metrics as processMetrics, type ImporterMetrics, type MetricsSources } from './metrics.ts';
import { RouteCollector } from './openapi.ts';
import { errorReply } from './routes-errors.ts';
import { registerImageRoutes } from './routes-images.ts';
import { dvcrCheck, redisCheck, registerOpsRoutes, type ReadinessCheck } from './routes-ops.ts';
import { registerUploadRoutes } from './routes-upload.ts';
import type { ImageService } from './service.ts';
import type { UploadService } from './uploads.ts';

export { dvcrCheck, redisCheck, type ReadinessCheck } from './routes-ops.ts';

export const DEFAULT_BODY_LIMIT = 1024 * 1024;
export const DEFAULT_HEARTBEAT_MS = 15_000;

/** The configuration the server reads. `apiReadToken` (API_READ_TOKEN) is read when the config has it. */
export type ServerConfig = Pick<Config, 'apiToken' | 'dvcrUrl' | 'insecureRegistries'> & {
  dvcrCaFile?: string | undefined;
  apiReadToken?: string | undefined;
};

export interface BuildServerOptions {
  service: ImageService;
  /** Job counts for /metrics. */
  queue: Pick<ImportQueue, 'counts'>;
  /**
   * The Redis connection /readyz PINGs (e.g. the store's client). Without it the `redis` check reads the job
   * counts instead (also a round trip to Redis).
   */
  redis?: { ping(): Promise<unknown> } | undefined;
  config: ServerConfig;
  logger?: Logger | undefined;
  /**
   * Readiness checks by dependency name. Defaults: `redis` (PING through `redis`) and `dvcr`
   * (`GET <dvcrUrl>/v2/`, see {@link dvcrCheck}); an entry here replaces the default of the same name.
   */
  checks?: Readonly<Record<string, ReadinessCheck>>;
  /** Read-only token; default `config.apiReadToken` (API_READ_TOKEN). */
  apiReadToken?: string | undefined;
  /** Recorded series rendered by /metrics; default the process-wide `metrics` of metrics.ts. */
  metrics?: ImporterMetrics;
  /** Pool-wide import statistics (Redis), rendered instead of `metrics` when given. */
  stats?: MetricsSources['stats'];
  /** Heartbeat period of watches. Default 15 s. */
  heartbeatMs?: number;
  /** Largest request body. Default 1 MiB. */
  bodyLimit?: number;
  /** Serves the upload endpoint `/upload/<token>` (routes-upload.ts: open, unbuffered, no body limit). */
  uploads?: UploadService;
}

export function buildServer(opts: BuildServerOptions): FastifyInstance {
  const { service, queue, config } = opts;
  const bodyLimit = opts.bodyLimit ?? DEFAULT_BODY_LIMIT;
  const verifier = tokenVerifier({ token: config.apiToken, readToken: opts.apiReadToken ?? config.apiReadToken });

  const app = (
    opts.logger
      ? fastify({ loggerInstance: opts.logger, bodyLimit, return503OnClosing: true })
      : fastify({ logger: false, bodyLimit, return503OnClosing: true })
  ) as unknown as FastifyInstance;

  // JSON only: a text/plain body would otherwise reach the handler as a string.
  app.removeContentTypeParser('text/plain');
  // Reply schemas document the API (OpenAPI); they must not filter what is sent.
  app.setSerializerCompiler(() => (data) => JSON.stringify(data));

  const collector = new RouteCollector();
  app.addHook('onRoute', collector.onRoute);
  app.addHook('onRequest', authHook(verifier));

  app.setErrorHandler((error, request, reply) => {
    const r = errorReply(error, String(request.id), { bodyLimit });
    if (r.internal) request.log.error({ err: error }, 'request failed');
    else request.log.info({ code: r.body.error.code, status: r.status }, r.body.error.message);
    return reply.code(r.status).send(r.body);
  });

  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split('?')[0] ?? request.url;
    return reply.code(404).send({ error: { code: 'NoRoute', message: `no route ${request.method} ${path}; see /openapi.json` } });
  });

  const watches = new Set<AbortController>();
  app.addHook('preClose', async () => {
    for (const ac of watches) ac.abort();
  });

  const defaultDvcr = dvcrCheck(config);
  app.addHook('onClose', async () => {
    await defaultDvcr.close();
  });
  const checks: Record<string, ReadinessCheck> = {
    redis: opts.redis ? redisCheck(opts.redis) : async () => void (await queue.counts()),
    dvcr: defaultDvcr,
    ...opts.checks,
  };

  registerImageRoutes(app, { service, heartbeatMs: opts.heartbeatMs ?? DEFAULT_HEARTBEAT_MS, watches });
  if (opts.uploads) registerUploadRoutes(app, { uploads: opts.uploads });
  registerOpsRoutes(app, {
    checks,
    metricsSources: {
      queue,
      store: service.store,
      registry: opts.metrics ?? processMetrics,
      ...(opts.stats ? { stats: opts.stats } : {}),
    },
    collector,
    auth: verifier !== undefined,
  });
  return app;
}
