/**
 * The contract between the HTTP API and its clients (the Node `ImageClient`, the CLI, controllers in other
 * languages). Routes (all JSON; errors are `{error: {code, message, issues?}}` with an HTTP status):
 *
 *   POST   /apis/v1/images                         apply one manifest (body: the object; YAML is parsed by callers)
 *   GET    /apis/v1/{plural}                       list           plural: clustervirtualimages | virtualimages
 *   GET    /apis/v1/namespaces/{ns}/virtualimages  list in a namespace
 *   GET    /apis/v1/clustervirtualimages/{name}    get
 *   GET    /apis/v1/namespaces/{ns}/virtualimages/{name}
 *   DELETE (same paths as get)                     delete (answers the object as marked Terminating)
 *   GET    ...?watch=true[&name=][&sinceId=]       server-sent events: `event: ADDED|MODIFIED|DELETED|BOOKMARK`,
 *                                                  `id: <stream id>`, `data: <WatchEvent JSON>`
 *   GET    /openapi.json, /metrics, /healthz, /readyz
 *
 * Auth: `Authorization: Bearer <API_TOKEN>` when the server has a token configured.
 */
import type { ApplyResult, Image, ImageKind, WatchEvent } from '../images/index.ts';

export interface ImageClientApi {
  apply(manifest: unknown, opts?: { namespace?: string }): Promise<ApplyResult>;
  get(kind: ImageKind, name: string, namespace?: string): Promise<Image | null>;
  list(kind: ImageKind, namespace?: string): Promise<Image[]>;
  delete(kind: ImageKind, name: string, namespace?: string): Promise<Image | null>;
  /** Current objects first (ADDED), then live changes; ends when the signal aborts. Reconnects and resumes by id. */
  watch(kind: ImageKind, opts?: { name?: string; namespace?: string; signal?: AbortSignal }): AsyncIterable<WatchEvent>;
}

export interface ApiErrorBody {
  error: { code: string; message: string; issues?: Array<{ path: string; message: string }> };
}

export const PLURAL: Record<ImageKind, string> = {
  ClusterVirtualImage: 'clustervirtualimages',
  VirtualImage: 'virtualimages',
};
