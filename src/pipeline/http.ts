/**
 * Import from an HTTP(S) URL: one streamed download (Range resume inside the attempt, checksums over the raw
 * bytes verified before the stream ends), unwrapped and stored in DVCR. Progress is raw bytes of the download
 * against Content-Length; without it, bytes and speed only.
 */
import { openHttpSource } from '../sources/http.ts';
import type { PipelineContext } from './context.ts';
import type { RunHooks } from './container-image.ts';
import { storeDisk, storeOptionsFor, type StoredDisk } from './store-disk.ts';
import type { ImportSource, ImportTask } from './types.ts';

export async function importHttp(
  task: ImportTask & { source: Extract<ImportSource, { type: 'HTTP' }> },
  ctx: PipelineContext,
  hooks: RunHooks,
): Promise<{ stored: StoredDisk; sourceBytes: number }> {
  const { source } = task;
  const host = new URL(source.url).host.toLowerCase();
  hooks.onProgress?.({ stage: 'Resolving', bytesDone: 0 });
  let bytesDone = 0;
  const download = await openHttpSource({
    url: source.url,
    ...(source.caBundle ? { caBundle: Buffer.from(source.caBundle, 'base64').toString('utf8') } : {}),
    ...(source.checksums ? { checksums: source.checksums } : {}),
    insecure: ctx.insecureRegistries.includes(host),
    idleTimeoutMs: ctx.idleTimeoutMs,
    addressPolicy: ctx.sourceAddressPolicy,
    ...(hooks.signal ? { signal: hooks.signal } : {}),
    onBytes: (n, total) => {
      bytesDone = n;
      hooks.onProgress?.({ stage: 'Transferring', bytesDone: n, ...(total !== undefined ? { bytesTotal: total } : {}) });
    },
  });
  hooks.log?.(`downloading ${download.url} (${download.size ?? 'unknown'} bytes)`);
  const stored = await storeDisk(
    { name: download.name, size: download.size, stream: download.stream },
    storeOptionsFor(task, ctx, hooks),
  );
  return { stored, sourceBytes: bytesDone };
}
