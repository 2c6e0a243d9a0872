/**
 * Operations routes: `/healthz` (the process answers: always 200, no auth), `/readyz` (200 only when every
 * dependency answers: Redis PING, DVCR `GET /v2/`; 503 naming the one that failed), `/metrics` (Prometheus
 * text) and `/openapi.json`.
 */
import { networkReason } from './network-reason.ts';
import { readFileSync } from 'node:fs';
import type { FastifyInstance } from 'fastify';
import { Agent, request } from 'undici';
import { effectiveInsecureRegistries, type Config } from '../config.ts';
import { collectMetrics, CONTENT_TYPE, type ImporterMetrics, type MetricsSources } from './metrics.ts';
import { buildOpenApi, type RouteCollector } from './openapi.ts';
import { AUTH_RESPONSES, jsonResponse, REF } from './routes-schemas.ts';

/** A readiness check: resolves when the dependency answers, rejects with a short reason when not. */
export type ReadinessCheck = (signal: AbortSignal) => Promise<void>;

export const CHECK_TIMEOUT_MS = 3000;

/** Redis answers PING through the given client. */
export function redisCheck(client: { ping(): Promise<unknown> }): ReadinessCheck {
  return async () => {
    await client.ping();
  };
}

export type DvcrCheckConfig = Pick<Config, 'dvcrUrl' | 'insecureRegistries'> & { dvcrCaFile?: string | undefined };

/**
 * DVCR answers `GET /v2/` with any status below 500 (401 counts: the registry is up and wants credentials).
 * A request of its own each time (no cached discovery), over a dedicated connection pool that trusts
 * DVCR_CA_FILE and skips TLS verification for insecure registries. `close()` releases the pool.
 */
export function dvcrCheck(config: DvcrCheckConfig): ReadinessCheck & { close(): Promise<void> } {
  const base = new URL(config.dvcrUrl);
  const url = new URL('/v2/', base.origin);
  const insecure = effectiveInsecureRegistries({ dvcrUrl: config.dvcrUrl, insecureRegistries: config.insecureRegistries }).includes(
    base.host.toLowerCase(),
  );
  let agent: Agent | undefined;
  const check = async (signal: AbortSignal): Promise<void> => {
    agent ??= new Agent({
      connect: {
        ...(config.dvcrCaFile ? { ca: readFileSync(config.dvcrCaFile, 'utf8') } : {}),
        ...(insecure ? { rejectUnauthorized: false } : {}),
      },
      headersTimeout: CHECK_TIMEOUT_MS,
      bodyTimeout: CHECK_TIMEOUT_MS,
      keepAliveTimeout: 10_000,
    });
    let res: Awaited<ReturnType<typeof request>>;
    try {
      res = await request(url, { method: 'GET', dispatcher: agent, signal });
    } catch (e) {
      throw new Error(`GET ${url.href}: ${networkReason(e)}`);
    }
    await res.body.dump();
    if (res.statusCode >= 500) throw new Error(`GET ${url.href}: HTTP ${res.statusCode}`);
  };
  return Object.assign(check, {
    close: async () => {
      await agent?.close();
      agent = undefined;
    },
  });
}


/** Runs every check in parallel, each bounded by `timeoutMs`. */
export async function runChecks(
  checks: Readonly<Record<string, ReadinessCheck>>,
  timeoutMs = CHECK_TIMEOUT_MS,
): Promise<{ ready: boolean; checks: Record<string, { ok: boolean; error?: string }> }> {
  const entries = Object.entries(checks);
  const results = await Promise.all(
    entries.map(async ([name, check]) => {
      const ac = new AbortController();
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          check(ac.signal),
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => {
              ac.abort();
              reject(new Error(`no answer within ${timeoutMs / 1000} s`));
            }, timeoutMs);
          }),
        ]);
        return [name, { ok: true }] as const;
      } catch (e) {
        const message = e instanceof Error ? e.message : String(e);
        return [name, { ok: false, error: message.split('\n')[0]!.slice(0, 300) }] as const;
      } finally {
        clearTimeout(timer);
      }
    }),
  );
  const out: Record<string, { ok: boolean; error?: string }> = {};
  for (const [name, r] of results) out[name] = r;
  return { ready: results.every(([, r]) => r.ok), checks: out };
}

export interface OpsRoutesOptions {
  checks: Readonly<Record<string, ReadinessCheck>>;
  metricsSources: MetricsSources & { registry: ImporterMetrics };
  collector: RouteCollector;
  auth: boolean;
}

export function registerOpsRoutes(app: FastifyInstance, opts: OpsRoutesOptions): void {
  app.get(
    '/healthz',
    {
      config: { public: true },
      logLevel: 'warn',
      schema: {
        operationId: 'healthz',
        summary: 'Liveness: the process answers (always 200, no token needed)',
        tags: ['operations'],
        response: { 200: jsonResponse('Alive.', { type: 'object', properties: { status: { type: 'string', const: 'ok' } } }) },
      },
    },
    async () => ({ status: 'ok' }),
  );

  app.get(
    '/readyz',
    {
      // Open like /healthz: kubelet probes carry no token, and the answer names no secret.
      config: { public: true },
      logLevel: 'warn',
      schema: {
        operationId: 'readyz',
        summary: 'Readiness: Redis answers PING and DVCR answers GET /v2/ (no token needed)',
        tags: ['operations'],
        response: {
          200: jsonResponse('Every dependency answers.', REF('Readiness')),
          503: jsonResponse('A dependency does not answer: see checks.<name>.error.', REF('Readiness')),
        },
      },
    },
    async (request, reply) => {
      const r = await runChecks(opts.checks);
      if (!r.ready) {
        const failed = Object.entries(r.checks).filter(([, c]) => !c.ok);
        request.log.warn({ failed: Object.fromEntries(failed) }, 'not ready');
      }
      return reply.code(r.ready ? 200 : 503).send({ status: r.ready ? 'ready' : 'not ready', checks: r.checks });
    },
  );

  app.get(
    '/metrics',
    {
      logLevel: 'warn',
      schema: {
        operationId: 'metrics',
        summary: 'Prometheus metrics (text exposition format 0.0.4)',
        tags: ['operations'],
        response: {
          200: { description: 'Metrics.', content: { 'text/plain': { schema: { type: 'string' } } } },
          ...AUTH_RESPONSES,
        },
      },
    },
    async (_request, reply) => {
      const text = await collectMetrics(opts.metricsSources);
      return reply.type(CONTENT_TYPE).send(text);
    },
  );

  let doc: string | undefined;
  app.get(
    '/openapi.json',
    {
      schema: {
        operationId: 'openapi',
        summary: 'This document (OpenAPI 3.1)',
        tags: ['operations'],
        response: { 200: jsonResponse('The OpenAPI document.', { type: 'object' }), ...AUTH_RESPONSES },
      },
    },
    async (_request, reply) => {
      doc ??= JSON.stringify(buildOpenApi(opts.collector.routes, { auth: opts.auth }));
      return reply.type('application/json; charset=utf-8').send(doc);
    },
  );
}
