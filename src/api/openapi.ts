/**
 * The OpenAPI 3.1 document, generated from the routes' own schemas: an `onRoute` hook collects every route as it
 * is registered (method, URL, schema), and {@link buildOpenApi} turns params/querystring into parameters,
 * `requestBody` into the request body and `response` into responses. The extra schema keys (`summary`,
 * `description`, `tags`, `operationId`, `requestBody`, `hide`) are the ones @fastify/swagger reads; we write the
 * few dozen lines ourselves instead of adding that dependency (and its static UI), since the routes are few and
 * their schemas are hand-written JSON Schema already (OpenAPI 3.1 uses JSON Schema 2020-12 as is).
 */
import type { RouteOptions } from 'fastify';
import { COMPONENT_SCHEMAS } from './routes-schemas.ts';

declare module 'fastify' {
  interface FastifySchema {
    summary?: string;
    description?: string;
    tags?: readonly string[];
    operationId?: string;
    /** OpenAPI request body (documentation only: bodies are validated by the handler). */
    requestBody?: unknown;
    /** Leave the route out of the document. */
    hide?: boolean;
  }
}

export interface CollectedRoute {
  method: string;
  url: string;
  schema: Record<string, unknown> | undefined;
  public: boolean;
}

/** Collects routes as fastify registers them: add `collector.onRoute` as an `onRoute` hook before any route. */
export class RouteCollector {
  readonly routes: CollectedRoute[] = [];

  readonly onRoute = (opts: RouteOptions): void => {
    const methods = Array.isArray(opts.method) ? opts.method : [opts.method];
    for (const method of methods) {
      if (method === 'HEAD' || method === 'OPTIONS') continue;
      const schema = opts.schema as Record<string, unknown> | undefined;
      if (schema?.hide === true) continue;
      this.routes.push({ method, url: opts.url, schema, public: opts.config?.public === true });
    }
  };
}

export interface OpenApiOptions {
  title?: string;
  version?: string;
  /** The server requires bearer tokens (documents the security scheme). */
  auth: boolean;
}

type JsonObject = Record<string, unknown>;

/** `/a/:b/c` -> `/a/{b}/c` */
export function openApiPath(url: string): string {
  return url.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
}

function parameters(schema: unknown, where: 'path' | 'query'): JsonObject[] {
  if (!schema || typeof schema !== 'object') return [];
  const s = schema as { properties?: Record<string, JsonObject>; required?: readonly string[] };
  return Object.entries(s.properties ?? {}).map(([name, prop]) => {
    const { description, ...rest } = prop;
    return {
      name,
      in: where,
      required: where === 'path' || (s.required ?? []).includes(name),
      ...(typeof description === 'string' ? { description } : {}),
      schema: rest,
    };
  });
}

function responses(response: unknown): JsonObject {
  const out: JsonObject = {};
  for (const [code, entry] of Object.entries((response ?? {}) as Record<string, JsonObject>)) {
    if (entry && typeof entry === 'object' && 'content' in entry) {
      out[code] = { description: typeof entry.description === 'string' ? entry.description : `HTTP ${code}`, content: entry.content };
    } else {
      const { description, ...schema } = entry ?? {};
      out[code] = {
        description: typeof description === 'string' ? description : `HTTP ${code}`,
        content: { 'application/json': { schema } },
      };
    }
  }
  if (Object.keys(out).length === 0) out.default = { description: 'Response' };
  return out;
}

export function buildOpenApi(routes: readonly CollectedRoute[], opts: OpenApiOptions): JsonObject {
  const paths: Record<string, JsonObject> = {};
  for (const r of [...routes].sort((a, b) => a.url.localeCompare(b.url) || a.method.localeCompare(b.method))) {
    const s = r.schema ?? {};
    const op: JsonObject = {};
    if (typeof s.operationId === 'string') op.operationId = s.operationId;
    if (typeof s.summary === 'string') op.summary = s.summary;
    if (typeof s.description === 'string') op.description = s.description;
    if (Array.isArray(s.tags)) op.tags = s.tags;
    const params = [...parameters(s.params, 'path'), ...parameters(s.querystring, 'query')];
    if (params.length) op.parameters = params;
    if (s.requestBody) op.requestBody = s.requestBody;
    op.responses = responses(s.response);
    if (opts.auth && r.public) op.security = [];
    (paths[openApiPath(r.url)] ??= {})[r.method.toLowerCase()] = op;
  }
  const doc: JsonObject = {
    openapi: '3.1.0',
    info: {
      title: opts.title ?? 'dvcr-importer API',
      version: opts.version ?? 'v1',
      description:
        'Declare ClusterVirtualImage / VirtualImage resources, watch their import into DVCR, and read metrics ' +
        'and health. Errors are `{"error": {"code", "message", "issues"?}}`.',
    },
    paths,
    components: {
      schemas: COMPONENT_SCHEMAS,
      ...(opts.auth ? { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } } : {}),
    },
  };
  if (opts.auth) doc.security = [{ bearer: [] }];
  return doc;
}
