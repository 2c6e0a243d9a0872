import { describe, expect, it } from 'vitest';
import { errorReply } from '../../src/api/routes-errors.ts';
import { NotFoundError } from '../../src/api/service.ts';
import { buildOpenApi, openApiPath } from '../../src/api/openapi.ts';
import { SpecFrozenError, StoreConflictError, ValidationError, WatchExpiredError } from '../../src/images/index.ts';

describe('errorReply', () => {
  it('maps the images module errors', () => {
    const v = errorReply(new ValidationError([{ path: 'a', message: 'a: bad' }, { path: 'b', message: 'b: bad' }]), 'r1');
    expect(v.status).toBe(422);
    expect(v.body.error.code).toBe('Invalid');
    expect(v.body.error.issues).toEqual([{ path: 'a', message: 'a: bad' }, { path: 'b', message: 'b: bad' }]);
    const msg = 'ClusterVirtualImage is in a Ready state: configuration changes are not available';
    expect(errorReply(new SpecFrozenError(msg, 'Ready'), 'r')).toMatchObject({ status: 409, body: { error: { code: 'SpecFrozen', message: msg } } });
    expect(errorReply(new StoreConflictError('busy'), 'r').status).toBe(409);
    expect(errorReply(new WatchExpiredError('1-0'), 'r').status).toBe(410);
    expect(errorReply(new NotFoundError('x not found'), 'r')).toMatchObject({ status: 404, body: { error: { code: 'NotFound' } } });
  });

  it('hides internal errors behind a safe message', () => {
    const e = new Error('redis://:hunter2@10.0.0.1 exploded');
    const r = errorReply(e, 'req-9');
    expect(r.status).toBe(500);
    expect(r.internal).toBe(true);
    expect(r.body.error.message).toBe('internal error (request req-9); the server log has the details');
    expect(JSON.stringify(r.body)).not.toContain('hunter2');
  });

  it('says 503 when Redis cannot be reached', () => {
    const e = new Error("Stream isn't writeable and enableOfflineQueue options is false");
    expect(errorReply(e, 'r')).toMatchObject({ status: 503, body: { error: { code: 'Unavailable' } } });
  });

  it('maps fastify body and validation errors', () => {
    expect(errorReply({ code: 'FST_ERR_CTP_BODY_TOO_LARGE', statusCode: 413 }, 'r', { bodyLimit: 1024 * 1024 })).toMatchObject({
      status: 413,
      body: { error: { code: 'PayloadTooLarge' } },
    });
    expect(errorReply({ code: 'FST_ERR_CTP_BODY_TOO_LARGE' }, 'r').body.error.message).toContain('1 MiB');
    const v = errorReply(
      { validation: [{ instancePath: '/namespace', keyword: 'pattern', message: 'must match pattern' }], validationContext: 'params' },
      'r',
    );
    expect(v.status).toBe(400);
    expect(v.body.error.issues).toEqual([
      { path: 'params.namespace', message: 'params.namespace: is not a valid namespace: lowercase letters, digits and "-", at most 63 characters' },
    ]);
  });
});

describe('openapi', () => {
  it('converts paths and builds operations from route schemas', () => {
    expect(openApiPath('/a/:ns/b/:name')).toBe('/a/{ns}/b/{name}');
    const doc = buildOpenApi(
      [
        {
          method: 'GET',
          url: '/x/:id',
          public: false,
          schema: {
            operationId: 'getX',
            params: { type: 'object', properties: { id: { type: 'string', description: 'the id' } } },
            querystring: { type: 'object', properties: { q: { type: 'boolean' } }, required: ['q'] },
            response: { 200: { description: 'ok', type: 'object' } },
          },
        },
      ],
      { auth: false },
    ) as { paths: Record<string, Record<string, Record<string, unknown>>> };
    const op = doc.paths['/x/{id}']!.get!;
    expect(op.operationId).toBe('getX');
    expect(op.parameters).toEqual([
      { name: 'id', in: 'path', required: true, description: 'the id', schema: { type: 'string' } },
      { name: 'q', in: 'query', required: true, schema: { type: 'boolean' } },
    ]);
    expect(op.responses).toEqual({ 200: { description: 'ok', content: { 'application/json': { schema: { type: 'object' } } } } });
  });
});
