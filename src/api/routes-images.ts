/**
 * The image routes of the contract in client-types.ts: apply, list (or watch), get and delete, for
 * ClusterVirtualImage (cluster-scoped) and VirtualImage (namespaced). Handlers only translate HTTP to
 * `ImageService` calls; the rules live there and in the images module, and errors are mapped by the server's
 * error handler (routes-errors.ts).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { API_VERSION, type Image, type ImageKind } from '../images/index.ts';
import { NotFoundError, type ImageService } from './service.ts';
import { PLURAL } from './client-types.ts';
import {
  APPLY_QUERY,
  AUTH_RESPONSES,
  ERROR_RESPONSE,
  LIST_QUERY,
  MANIFEST_BODY,
  NAMESPACED_NAME_PARAMS,
  NAMESPACE_PARAMS,
  NAME_PARAMS,
  REF,
  WATCH_STREAM,
  jsonResponse,
  type ListQuery,
} from './routes-schemas.ts';
import { streamWatch } from './routes-watch.ts';

export const API_PREFIX = '/apis/v1';

export interface ImageRoutesOptions {
  service: ImageService;
  heartbeatMs: number;
  /** Open watches, ended when the server closes. */
  watches: Set<AbortController>;
}

type Params = { name?: string; namespace?: string };

function describeRef(kind: ImageKind, namespace: string | undefined, name: string): string {
  return `${kind} "${namespace ? `${namespace}/` : ''}${name}"`;
}

/** The collection and item paths of each kind (`namespaced`: the namespace is a path segment). */
const COLLECTIONS: ReadonlyArray<{ kind: ImageKind; url: string; item?: string; namespaced: boolean; what: string }> = [
  {
    kind: 'ClusterVirtualImage',
    url: `${API_PREFIX}/${PLURAL.ClusterVirtualImage}`,
    item: `${API_PREFIX}/${PLURAL.ClusterVirtualImage}/:name`,
    namespaced: false,
    what: 'ClusterVirtualImages',
  },
  { kind: 'VirtualImage', url: `${API_PREFIX}/${PLURAL.VirtualImage}`, namespaced: false, what: 'VirtualImages of every namespace' },
  {
    kind: 'VirtualImage',
    url: `${API_PREFIX}/namespaces/:namespace/${PLURAL.VirtualImage}`,
    item: `${API_PREFIX}/namespaces/:namespace/${PLURAL.VirtualImage}/:name`,
    namespaced: true,
    what: 'VirtualImages of one namespace',
  },
];

export function registerImageRoutes(app: FastifyInstance, opts: ImageRoutesOptions): void {
  const { service } = opts;

  app.post(
    `${API_PREFIX}/images`,
    {
      schema: {
        operationId: 'applyImage',
        summary: 'Create or update one image from its manifest',
        description:
          'kubectl-apply semantics: a new object is created (201) and its import enqueued; a changed spec bumps the ' +
          'generation and restarts the import; a Ready image refuses spec changes (409 SpecFrozen).',
        tags: ['images'],
        querystring: APPLY_QUERY,
        requestBody: MANIFEST_BODY,
        response: {
          200: jsonResponse('Configured or unchanged.', REF('ApplyResult')),
          201: jsonResponse('Created.', REF('ApplyResult')),
          400: ERROR_RESPONSE('The body is not JSON, or a query parameter is invalid.'),
          ...AUTH_RESPONSES,
          409: ERROR_RESPONSE('SpecFrozen: the image is Ready or being deleted; Conflict: concurrent writes.'),
          413: ERROR_RESPONSE('The body is larger than 1 MiB.'),
          415: ERROR_RESPONSE('The body is not application/json.'),
          422: ERROR_RESPONSE('Invalid: the manifest has problems, every one listed in issues.'),
        },
      },
    },
    async (request: FastifyRequest<{ Querystring: { namespace?: string } }>, reply) => {
      if (request.body === undefined) {
        return reply.code(400).send({
          error: { code: 'BadRequest', message: 'send one manifest as the JSON body, with "content-type: application/json"' },
        });
      }
      const ns = request.query.namespace;
      const result = await service.apply(request.body, ns ? { defaultNamespace: ns } : {});
      return reply.code(result.created ? 201 : 200).send(result);
    },
  );

  for (const c of COLLECTIONS) {
    app.get(
      c.url,
      {
        schema: {
          operationId: `list${c.kind}${c.namespaced ? 'InNamespace' : ''}`,
          summary: `List or watch ${c.what}`,
          tags: ['images'],
          ...(c.namespaced ? { params: NAMESPACE_PARAMS } : {}),
          querystring: LIST_QUERY,
          response: {
            200: {
              description: `The list (${c.kind}List), or with watch=true an event stream.`,
              content: { 'application/json': { schema: REF('ImageList') }, 'text/event-stream': WATCH_STREAM },
            },
            400: ERROR_RESPONSE('A query or path parameter is invalid.'),
            ...AUTH_RESPONSES,
          },
        },
      },
      async (request: FastifyRequest<{ Params: Params; Querystring: ListQuery }>, reply: FastifyReply) => {
        const namespace = c.namespaced ? request.params.namespace : undefined;
        const q = request.query;
        if (q.watch) {
          const lastEventId = request.headers['last-event-id'];
          const header = typeof lastEventId === 'string' && lastEventId.trim() !== '' ? lastEventId.trim() : undefined;
          if (header !== undefined && !/^\d+(-\d+)?$/.test(header)) {
            return reply.code(400).send({
              error: { code: 'BadRequest', message: 'the Last-Event-ID header is not an event id (<milliseconds>-<sequence>)' },
            });
          }
          await streamWatch(request, reply, {
            source: service,
            kind: c.kind,
            namespace,
            name: q.name,
            sinceId: header ?? q.sinceId,
            heartbeatMs: opts.heartbeatMs,
            open: opts.watches,
          });
          return reply;
        }
        const items = await service.list(c.kind, namespace);
        return { apiVersion: API_VERSION, kind: `${c.kind}List`, items };
      },
    );

    if (!c.item) continue;
    const params = c.namespaced ? NAMESPACED_NAME_PARAMS : NAME_PARAMS;

    app.get(
      c.item,
      {
        schema: {
          operationId: `get${c.kind}`,
          summary: `Read one ${c.kind}`,
          tags: ['images'],
          params,
          response: {
            200: jsonResponse('The object.', REF('Image')),
            400: ERROR_RESPONSE('A path parameter is invalid.'),
            ...AUTH_RESPONSES,
            404: ERROR_RESPONSE('No such object.'),
          },
        },
      },
      async (request: FastifyRequest<{ Params: Params }>) => {
        const { namespace, name = '' } = request.params;
        const image = await service.get(c.kind, namespace, name);
        if (!image) throw new NotFoundError(`${describeRef(c.kind, namespace, name)} not found`);
        return image;
      },
    );

    app.delete(
      c.item,
      {
        schema: {
          operationId: `delete${c.kind}`,
          summary: `Delete one ${c.kind}`,
          description:
            'Marks the object Terminating, cancels its import, removes its DVCR manifest, then the object. Answers the ' +
            'object as marked Terminating: 200 when deletion finished, 202 when DVCR could not be reached (the ' +
            'object stays Terminating and housekeeping finishes the deletion later).',
          tags: ['images'],
          params,
          response: {
            200: jsonResponse('Deleted: the object as it was marked Terminating.', REF('Image')),
            202: jsonResponse('Terminating: deletion finishes later.', REF('Image')),
            400: ERROR_RESPONSE('A path parameter is invalid.'),
            ...AUTH_RESPONSES,
            404: ERROR_RESPONSE('No such object.'),
          },
        },
      },
      async (request: FastifyRequest<{ Params: Params }>, reply: FastifyReply) => {
        const { namespace, name = '' } = request.params;
        try {
          return await service.delete(c.kind, namespace, name);
        } catch (e) {
          if (e instanceof NotFoundError) throw e;
          // Marked Terminating but not finished (DVCR away): the object stays, reconcile() finishes it.
          let still: Image | null = null;
          try {
            still = await service.get(c.kind, namespace, name);
          } catch {
            /* the original error is the one to report */
          }
          if (still?.metadata.deletionTimestamp === undefined) throw e;
          request.log.warn({ err: e, image: describeRef(c.kind, namespace, name) }, 'delete left Terminating; housekeeping will finish it');
          return reply.code(202).send(still);
        }
      },
    );
  }
}
