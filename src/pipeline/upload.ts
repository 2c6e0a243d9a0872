/**
 * Import from a user upload: the request body (a web ReadableStream transferred from the API thread) is counted,
 * hashed and verified as it passes (src/sources/upload.ts), unwrapped and stored in DVCR like any disk file.
 * Progress is raw bytes received against Content-Length; without one (a chunked upload), bytes and speed only.
 */
import { openUploadSource } from '../sources/upload.ts';
import type { PipelineContext } from './context.ts';
import type { RunHooks } from './container-image.ts';
import { storeDisk, storeOptionsFor, type StoredDisk } from './store-disk.ts';
import type { ImportSource, ImportTask } from './types.ts';

export async function importUpload(
  task: ImportTask & { source: Extract<ImportSource, { type: 'Upload' }> },
  ctx: PipelineContext,
  hooks: RunHooks,
): Promise<{ stored: StoredDisk; sourceBytes: number }> {
  const { source } = task;
  hooks.onProgress?.({ stage: 'Transferring', bytesDone: 0, ...(source.size !== undefined ? { bytesTotal: source.size } : {}) });
  const upload = openUploadSource({
    body: source.body,
    size: source.size,
    checksums: source.checksums,
    onBytes: (n, total) =>
      hooks.onProgress?.({ stage: 'Transferring', bytesDone: n, ...(total !== undefined ? { bytesTotal: total } : {}) }),
  });
  hooks.log?.(`receiving an upload of ${source.size ?? 'unknown length'} bytes`);
  try {
    const stored = await storeDisk(
      { name: upload.name, size: upload.size, stream: upload.stream },
      // Conversion applies to uploads too (spec.conversion or CONVERT_TO).
      storeOptionsFor(task, ctx, hooks),
    );
    return { stored, sourceBytes: upload.bytes() };
  } finally {
    upload.stream.destroy();
  }
}
