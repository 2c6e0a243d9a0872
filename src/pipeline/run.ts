/** One import, from source to a complete image in DVCR: the entry point the worker thread calls. */
import { commitImage, formatTarget } from '../dvcr/image.ts';
import type { PipelineContext } from './context.ts';
import { importContainerImage, type RunHooks } from './container-image.ts';
import { importHttp } from './http.ts';
import { importObjectRef } from './object-ref.ts';
import { importUpload } from './upload.ts';
import type { ImportOutcome, ImportTask } from './types.ts';

export type { RunHooks } from './container-image.ts';

export async function runImport(task: ImportTask, ctx: PipelineContext, hooks: RunHooks = {}): Promise<ImportOutcome> {
  const started = Date.now();
  const source = task.source;
  let result: Awaited<ReturnType<typeof importContainerImage>>;
  switch (source.type) {
    case 'ContainerImage':
      result = await importContainerImage({ ...task, source }, ctx, hooks);
      break;
    case 'HTTP':
      result = await importHttp({ ...task, source }, ctx, hooks);
      break;
    case 'Upload':
      result = await importUpload({ ...task, source }, ctx, hooks);
      break;
    case 'ObjectRef':
      result = await importObjectRef({ ...task, source }, ctx, hooks);
      break;
    default: {
      const never: never = source;
      throw new Error(`unsupported source ${JSON.stringify(never)}`);
    }
  }
  const { stored, sourceBytes } = result;
  hooks.onProgress?.({ stage: 'Committing', bytesDone: sourceBytes, bytesTotal: sourceBytes });
  // Blobs are in; the manifest goes last so the tag only ever names a complete image.
  await hooks.beforeCommit?.();
  const manifestDigest = await commitImage(
    ctx.dvcr,
    task.target,
    stored.layer,
    {
      storedBytes: stored.storedBytes,
      virtualSize: stored.virtualSize,
      format: stored.format,
      ...(stored.extraLabels ? { extraLabels: stored.extraLabels } : {}),
    },
    hooks.signal,
  );
  hooks.log?.(`committed ${formatTarget(task.target)} (${manifestDigest})`);
  return {
    format: stored.format,
    cdrom: stored.format === 'iso',
    storedBytes: stored.storedBytes,
    virtualSize: stored.virtualSize,
    sha256: stored.sha256,
    sourceBytes,
    compression: stored.compression,
    fileName: stored.fileName,
    layerDigest: stored.layer.digest,
    manifestDigest,
    registryURL: formatTarget(task.target),
    durationMs: Date.now() - started,
    ...(stored.originalFormat ? { originalFormat: stored.originalFormat } : {}),
  };
}
