/**
 * JSON schemas of the routes: path and query parameters (validated by fastify), and the bodies and responses
 * (documentation only: the manifest is validated by the images module, which names every problem, and replies
 * are serialised with plain JSON.stringify). `openapi.ts` turns the routes' schemas into the OpenAPI document;
 * `#/components/schemas/*` references resolve against {@link COMPONENT_SCHEMAS} there.
 */
import { z } from 'zod';
import { API_VERSION, CONVERSION_FORMATS, DATA_SOURCE_TYPES, IMAGE_KINDS, imageSchema } from '../images/index.ts';

// Parameters --------------------------------------------------------------------------------------------------

export const NAME_SCHEMA = {
  type: 'string',
  description: 'Image name (DNS-1123 subdomain).',
  minLength: 1,
  maxLength: 253,
  pattern: '^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$',
} as const;

export const NAMESPACE_SCHEMA = {
  type: 'string',
  description: 'Namespace of a VirtualImage (DNS-1123 label).',
  minLength: 1,
  maxLength: 63,
  pattern: '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$',
} as const;

export const STREAM_ID_PATTERN = '^\\d+(-\\d+)?$';

export const NAME_PARAMS = {
  type: 'object',
  properties: { name: NAME_SCHEMA },
  required: ['name'],
} as const;

export const NAMESPACE_PARAMS = {
  type: 'object',
  properties: { namespace: NAMESPACE_SCHEMA },
  required: ['namespace'],
} as const;

export const NAMESPACED_NAME_PARAMS = {
  type: 'object',
  properties: { namespace: NAMESPACE_SCHEMA, name: NAME_SCHEMA },
  required: ['namespace', 'name'],
} as const;

export const LIST_QUERY = {
  type: 'object',
  properties: {
    watch: {
      type: 'boolean',
      default: false,
      description:
        'Stream changes as server-sent events instead of answering a list: current objects first (ADDED), a ' +
        'BOOKMARK, then live ADDED/MODIFIED/DELETED events, and an ERROR event before the server ends the stream.',
    },
    name: { ...NAME_SCHEMA, description: 'With watch: only this object.' },
    sinceId: {
      type: 'string',
      pattern: STREAM_ID_PATTERN,
      description:
        'With watch: resume after this event id (no initial objects). The Last-Event-ID header, when sent, wins. ' +
        'A position whose later events were trimmed ends the stream with an ERROR event of code Expired: watch ' +
        'again without it.',
    },
  },
} as const;

export interface ListQuery {
  watch?: boolean;
  name?: string;
  sinceId?: string;
}

export const APPLY_QUERY = {
  type: 'object',
  properties: {
    namespace: { ...NAMESPACE_SCHEMA, description: 'Namespace for a VirtualImage manifest that names none.' },
  },
} as const;

// Bodies and responses ----------------------------------------------------------------------------------------

export type ComponentName = 'Image' | 'Manifest' | 'ApplyResult' | 'ImageList' | 'WatchEvent' | 'Error' | 'Readiness';

const ref = (name: ComponentName): { $ref: string } => ({ $ref: `#/components/schemas/${name}` });

export function jsonResponse(description: string, schema: object) {
  return { description, content: { 'application/json': { schema } } };
}

export const ERROR_RESPONSE = (description: string) => jsonResponse(description, ref('Error'));

/** Responses every protected route may give. */
export const AUTH_RESPONSES = {
  401: ERROR_RESPONSE('No token, or a token the server does not know (when the server requires one).'),
  403: ERROR_RESPONSE('A read-only token used for a write.'),
} as const;

export const MANIFEST_BODY = {
  required: true,
  description:
    'One ClusterVirtualImage or VirtualImage manifest as JSON (convert YAML on the client). Fields a server ' +
    'fills (metadata.uid, status, ...) are ignored, so a fetched object can be applied again. At most 1 MiB.',
  content: { 'application/json': { schema: ref('Manifest') } },
} as const;

export const WATCH_STREAM = {
  description:
    'With watch=true: `text/event-stream`. Each event is `event: ADDED|MODIFIED|DELETED|BOOKMARK|ERROR`, ' +
    '`id: <stream id>` (absent on the initial ADDED events), `data: <WatchEvent JSON>` (ERROR: an Error body). ' +
    'Comment lines every 15 s keep the connection alive.',
  schema: ref('WatchEvent'),
};

/** Components of the OpenAPI document. */
export const COMPONENT_SCHEMAS: Record<ComponentName, object> = {
  Image: imageJsonSchema(),
  Manifest: {
    type: 'object',
    description: 'What a user writes (reference/dvcr-contract.md). Every problem is reported at once, with its field path.',
    required: ['apiVersion', 'kind', 'metadata', 'spec'],
    properties: {
      apiVersion: { type: 'string', const: API_VERSION },
      kind: { type: 'string', enum: [...IMAGE_KINDS] },
      metadata: {
        type: 'object',
        required: ['name'],
        properties: {
          name: NAME_SCHEMA,
          namespace: NAMESPACE_SCHEMA,
          labels: { type: 'object', additionalProperties: { type: 'string' } },
          annotations: { type: 'object', additionalProperties: { type: 'string' } },
        },
      },
      spec: {
        type: 'object',
        required: ['dataSource'],
        properties: {
          dataSource: {
            type: 'object',
            required: ['type'],
            description: 'Exactly the sub-object matching type.',
            properties: {
              type: { type: 'string', enum: [...DATA_SOURCE_TYPES] },
              http: { type: 'object' },
              containerImage: { type: 'object' },
              objectRef: { type: 'object' },
              upload: { type: 'object' },
            },
          },
          conversion: {
            type: 'object',
            required: ['format'],
            description: 'Ours: store the disk in this format (qemu-img convert); default the worker CONVERT_TO. Not for ObjectRef.',
            properties: { format: { type: 'string', enum: [...CONVERSION_FORMATS] } },
          },
          storage: { type: 'string', const: 'ContainerRegistry' },
        },
      },
    },
  },
  ApplyResult: {
    type: 'object',
    required: ['object', 'created', 'specChanged', 'result'],
    properties: {
      object: ref('Image'),
      created: { type: 'boolean', description: 'A new object: its import was enqueued.' },
      specChanged: { type: 'boolean', description: 'The spec changed: the import restarts for the new generation.' },
      result: { type: 'string', enum: ['created', 'configured', 'unchanged'] },
    },
  },
  ImageList: {
    type: 'object',
    required: ['apiVersion', 'kind', 'items'],
    properties: {
      apiVersion: { type: 'string', const: API_VERSION },
      kind: { type: 'string', enum: IMAGE_KINDS.map((k) => `${k}List`) },
      items: { type: 'array', items: ref('Image') },
    },
  },
  WatchEvent: {
    type: 'object',
    required: ['type'],
    properties: {
      type: { type: 'string', enum: ['ADDED', 'MODIFIED', 'DELETED', 'BOOKMARK'] },
      object: ref('Image'),
      id: { type: 'string', pattern: STREAM_ID_PATTERN, description: 'Resume position (absent on the initial ADDED events).' },
    },
  },
  Error: {
    type: 'object',
    required: ['error'],
    properties: {
      error: {
        type: 'object',
        required: ['code', 'message'],
        properties: {
          code: {
            type: 'string',
            description:
              'Invalid (422), BadRequest (400), Unauthorized (401), Forbidden (403), NotFound / NoRoute (404), ' +
              'SpecFrozen / Conflict (409), Expired (410), PayloadTooLarge (413), UnsupportedMediaType (415), ' +
              'Internal (500), Unavailable (503).',
          },
          message: { type: 'string' },
          issues: {
            type: 'array',
            items: {
              type: 'object',
              required: ['path', 'message'],
              properties: { path: { type: 'string' }, message: { type: 'string' } },
            },
          },
        },
      },
    },
  },
  Readiness: {
    type: 'object',
    required: ['status', 'checks'],
    properties: {
      status: { type: 'string', enum: ['ready', 'not ready'] },
      checks: {
        type: 'object',
        additionalProperties: {
          type: 'object',
          required: ['ok'],
          properties: { ok: { type: 'boolean' }, error: { type: 'string' } },
        },
      },
    },
  },
};

function imageJsonSchema(): Record<string, unknown> {
  const schema = z.toJSONSchema(imageSchema, { unrepresentable: 'any', io: 'output' }) as Record<string, unknown>;
  delete schema.$schema;
  return schema;
}

export const REF = ref;
