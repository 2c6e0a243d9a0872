/**
 * The contract between the HTTP API and its clients (the Node `ImageClient`, the CLI, controllers in other
 * languages). Routes (all JSON; errors are `{error: {code, message, issues?}}` with an HTTP status):
 *
 *   POST   /apis/v1/images[?namespace=]            apply one manifest (body: the object; YAML is parsed by callers;
 *                                                  at most 1 MiB). 201 created, 200 configured/unchanged:
 *                                                  body {object, created, specChanged, result}.
 *                                                  `namespace`: for a VirtualImage manifest that names none.
 *   GET    /apis/v1/{plural}                       list           plural: clustervirtualimages | virtualimages
 *   GET    /apis/v1/namespaces/{ns}/virtualimages  list in a namespace
 *                                                  body {apiVersion, kind: "<Kind>List", items: [...]}
 *   GET    /apis/v1/clustervirtualimages/{name}    get
 *   GET    /apis/v1/namespaces/{ns}/virtualimages/{name}
 *   DELETE (same paths as get)                     delete (answers the object as marked Terminating; 200 when the
 *                                                  deletion finished, 202 when it finishes later because DVCR
 *                                                  could not be reached)
 *   GET    <list path>?watch=true[&name=][&sinceId=]
 *                                                  server-sent events: `event: ADDED|MODIFIED|DELETED|BOOKMARK`,
 *                                                  `id: <stream id>` (absent on the initial ADDED events),
 *                                                  `data: <WatchEvent JSON>`; `: heartbeat` comments every 15 s;
 *                                                  `event: ERROR` + `data: <ApiErrorBody>` before the server ends a
 *                                                  watch that cannot go on (code Expired: the resume position was
 *                                                  trimmed; watch again without it). Resume with the
 *                                                  `Last-Event-ID` header (wins) or `sinceId`.
 *   GET    /openapi.json, /metrics, /healthz, /readyz
 *
 * Error codes and statuses: BadRequest 400, Unauthorized 401, Forbidden 403, NotFound 404 (no such object),
 * NoRoute 404 (no such route), SpecFrozen 409 (upstream's message verbatim), Conflict 409, Expired 410,
 * PayloadTooLarge 413, UnsupportedMediaType 415, Invalid 422 (with every issue), Internal 500, Unavailable 503.
 *
 * Auth: `Authorization: Bearer <API_TOKEN>` when the server has a token configured (operator: every route);
 * `Bearer <API_READ_TOKEN>` allows GET/HEAD only (403 on writes). `/healthz` needs no token.
 */
import type { ApplyResult, Image, ImageKind, WatchEvent } from '../images/index.ts';

export interface WatchClientOptions {
  /** Only this object. */
  name?: string;
  /** VirtualImage only: one namespace (all namespaces without it). */
  namespace?: string;
  /** Resume after this event id (no initial objects); an expired id fails with code Expired (410). */
  sinceId?: string;
  signal?: AbortSignal;
}

export interface ImageClientApi {
  apply(manifest: unknown, opts?: { namespace?: string }): Promise<ApplyResult>;
  get(kind: ImageKind, name: string, namespace?: string): Promise<Image | null>;
  list(kind: ImageKind, namespace?: string): Promise<Image[]>;
  delete(kind: ImageKind, name: string, namespace?: string): Promise<Image | null>;
  /** Current objects first (ADDED), then live changes; ends when the signal aborts. Reconnects and resumes by id. */
  watch(kind: ImageKind, opts?: WatchClientOptions): AsyncIterable<WatchEvent>;
}

export interface ApiErrorBody {
  error: { code: string; message: string; issues?: Array<{ path: string; message: string }> };
}

export const PLURAL: Record<ImageKind, string> = {
  ClusterVirtualImage: 'clustervirtualimages',
  VirtualImage: 'virtualimages',
};
