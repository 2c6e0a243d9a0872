/**
 * The upload endpoint, `/upload/<token>` (the URLs of `status.imageUploadURLs`). Open without the API's bearer
 * token: holding the URL is the permission, as upstream.
 *
 * - `GET`: 200 while the image waits for its upload, 404 for an unknown (or expired) token, 409 when the image
 *   does not wait (being uploaded, Ready, Failed).
 * - `PUT` or `POST` with the raw disk file as the body: what `curl -T disk.img <url>` sends (PUT, often with
 *   `Expect: 100-continue`, which is answered only once the upload is accepted, so a refused upload does not send
 *   its body). The body is never parsed or buffered here: no body limit, and it streams to the data plane with
 *   backpressure. 200 once the image is Ready (the answer carries format, size and checksum); 422 when the image
 *   failed for good (checksum mismatch, not a disk image); 503 when another upload of the image is running, or
 *   the upload failed in a way a new upload may fix (the image waits again); 409 when a spec change or delete
 *   took over.
 *
 * The token is part of the path: request logs of these routes show `/upload/<redacted>` instead.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ERROR_RESPONSE, jsonResponse } from './routes-schemas.ts';
import { imageLabel, type UploadRefusal, type UploadService } from './uploads.ts';

export const UPLOAD_PATH = '/upload';

/** `/upload/<token>...` with the token hidden (for logs). */
export function redactUploadUrl(url: string): string {
  return url.replace(/^(\/upload\/)[^/?#]*/, '$1<redacted>');
}

const TOKEN_PARAMS = {
  type: 'object',
  properties: { token: { type: 'string', description: 'The upload token (from status.imageUploadURLs).' } },
  required: ['token'],
} as const;

const UPLOAD_RESULT = {
  type: 'object',
  description: 'The image once Ready.',
  properties: {
    image: { type: 'string' },
    phase: { type: 'string' },
    format: { type: 'string' },
    size: { type: 'object' },
    checksums: { type: 'object' },
    target: { type: 'object' },
  },
} as const;

const WAITING = {
  type: 'object',
  properties: { image: { type: 'string' }, phase: { type: 'string', const: 'WaitForUserUpload' }, message: { type: 'string' } },
} as const;

type TokenRequest = FastifyRequest<{ Params: { token: string } }>;

function refuse(reply: FastifyReply, r: { status: UploadRefusal['status'] | 400 | 422; code: string; message: string }, close: boolean): FastifyReply {
  // An upload refused (or failed) before its body was read to the end: close the connection rather than drain a
  // disk image.
  if (close) void reply.header('connection', 'close');
  if (r.status === 503) void reply.header('retry-after', '5');
  return reply.code(r.status).send({ error: { code: r.code, message: r.message } });
}

/** Content-Length as a number; undefined without one (chunked); NaN when malformed. */
function contentLength(req: IncomingMessage): number | undefined {
  if (req.headers['transfer-encoding'] !== undefined) return undefined;
  const v = req.headers['content-length'];
  if (v === undefined) return undefined;
  return /^\d+$/.test(v) ? Number(v) : Number.NaN;
}

function expectsContinue(req: IncomingMessage): boolean {
  return /100-continue/i.test(req.headers.expect ?? '');
}

export interface UploadRoutesOptions {
  uploads: UploadService;
}

export function registerUploadRoutes(app: FastifyInstance, opts: UploadRoutesOptions): void {
  const { uploads } = opts;

  // Node answers `Expect: 100-continue` by itself unless someone listens: answer it ourselves, at once for every
  // other route, and for uploads only once the upload is accepted (see the PUT handler).
  app.server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    if (!(req.url ?? '').startsWith(`${UPLOAD_PATH}/`)) res.writeContinue();
    app.server.emit('request', req, res);
  });
  // Uploads running when the server closes are ended (their images wait for a new upload).
  app.addHook('preClose', async () => {
    uploads.abortAll();
  });

  void app.register(async (sub) => {
    // The body is the disk file: no parser reads it; the handler streams `request.raw` itself.
    sub.removeAllContentTypeParsers();
    sub.addContentTypeParser('*', (_request, _payload, done) => done(null));

    const shared = {
      config: { public: true },
      logSerializers: {
        req: (req: FastifyRequest) => ({ method: req.method, url: redactUploadUrl(req.url), remoteAddress: req.ip }),
      },
    };

    sub.get(
      `${UPLOAD_PATH}/:token`,
      {
        ...shared,
        schema: {
          operationId: 'checkUpload',
          summary: 'Whether the image of an upload URL waits for its upload',
          tags: ['upload'],
          params: TOKEN_PARAMS,
          response: {
            200: jsonResponse('The image waits for its upload.', WAITING),
            404: ERROR_RESPONSE('Unknown or expired upload URL.'),
            409: ERROR_RESPONSE('The image does not wait for an upload (being uploaded, Ready, Failed).'),
          },
        },
      },
      async (request: TokenRequest, reply) => {
        const r = await uploads.check(request.params.token);
        if (!('metadata' in r)) return refuse(reply, r, false);
        return reply.send({
          image: imageLabel(r),
          phase: r.status.phase,
          message: 'ready for the upload: PUT or POST the disk file as the request body (curl -T FILE URL)',
        });
      },
    );

    sub.route({
      method: ['PUT', 'POST'],
      url: `${UPLOAD_PATH}/:token`,
      ...shared,
      bodyLimit: Number.MAX_SAFE_INTEGER,
      schema: {
        operationId: 'upload',
        summary: 'Upload the disk file of an image (the raw file as the body)',
        description:
          'curl -T disk.img <url>. Any content type; no size limit. The answer comes once the image is Ready (200) or ' +
          'the upload failed.',
        tags: ['upload'],
        params: TOKEN_PARAMS,
        requestBody: { required: true, content: { 'application/octet-stream': { schema: { type: 'string', format: 'binary' } } } },
        response: {
          200: jsonResponse('The image is Ready.', UPLOAD_RESULT),
          400: ERROR_RESPONSE('An empty body or a malformed Content-Length.'),
          404: ERROR_RESPONSE('Unknown or expired upload URL.'),
          409: ERROR_RESPONSE('The image does not wait for an upload, or a spec change or delete took over.'),
          422: ERROR_RESPONSE('The file cannot become this image (checksum mismatch, not a disk image): the image Failed.'),
          503: ERROR_RESPONSE('Another upload of the image is running, or this upload failed and the image waits for a new one.'),
        },
      },
      handler: async (request: TokenRequest, reply) => {
        const size = contentLength(request.raw);
        if (size !== undefined && !Number.isFinite(size)) {
          return refuse(reply, { status: 400, code: 'BadRequest', message: 'malformed Content-Length' }, true);
        }
        if (size === 0) {
          return refuse(reply, { status: 400, code: 'EmptyUpload', message: 'the body is empty: send the disk file (curl -T FILE URL)' }, true);
        }
        const begun = await uploads.begin(request.params.token);
        if ('status' in begun) return refuse(reply, begun, true);
        if (expectsContinue(request.raw)) reply.raw.writeContinue();
        const result = await uploads.receive(begun, request.raw, size);
        if (request.raw.socket?.destroyed) {
          // The client went away: nobody to answer.
          reply.hijack();
          return;
        }
        switch (result.outcome) {
          case 'ready': {
            const { status } = result.image;
            return reply.send({
              image: imageLabel(result.image),
              phase: status.phase,
              format: status.format,
              size: status.size,
              checksums: status.checksums,
              target: status.target,
            });
          }
          case 'failed':
            return refuse(reply, { status: 422, code: result.failure.reason, message: result.failure.message }, true);
          case 'waiting':
            return refuse(
              reply,
              { status: 503, code: result.failure.reason, message: `${result.failure.message}; the image waits for a new upload` },
              true,
            );
          case 'superseded':
            return refuse(reply, { status: 409, code: 'Superseded', message: result.message }, true);
        }
      },
    });

    const notAllowed = async (request: FastifyRequest, reply: FastifyReply) =>
      reply
        .code(405)
        .header('allow', 'GET, HEAD, PUT, POST')
        .send({ error: { code: 'MethodNotAllowed', message: `${request.method} is not allowed here: GET to check, PUT or POST to upload` } });
    sub.route({ method: ['DELETE', 'PATCH', 'OPTIONS'], url: `${UPLOAD_PATH}/:token`, ...shared, schema: { hide: true }, handler: notAllowed });
    // Deeper paths: not an upload URL (answered here so the token in the path stays out of the logs).
    sub.all(`${UPLOAD_PATH}/*`, { ...shared, schema: { hide: true } }, async (_request, reply) =>
      reply.code(404).send({ error: { code: 'NotFound', message: 'no upload is expected at this URL' } }),
    );
  });
}
