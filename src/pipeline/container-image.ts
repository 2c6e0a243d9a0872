/**
 * Import from a container registry (the containerDisk convention): resolve the reference (index -> platform),
 * read the layers top-down and stream the one disk file under /disk/ into DVCR. Every source blob is verified
 * against its digest while it streams; progress counts compressed layer bytes read.
 */
import { extractContainerDisk, type LayerSource } from '../sources/container-disk.ts';
import { formatReference, parsePlatform, parseReference } from '../oci/index.ts';
import type { PipelineContext } from './context.ts';
import { storeDisk, storeOptionsFor, type StoredDisk } from './store-disk.ts';
import type { ImportSource, ImportTask, PipelineProgress } from './types.ts';

export interface RunHooks {
  signal?: AbortSignal;
  onProgress?: (p: PipelineProgress) => void;
  log?: (line: string) => void;
  /**
   * Called right before the manifest is written; throws when this import must not commit (a newer generation
   * or a delete took over). The manifest is what makes the image visible, so this is the last gate.
   */
  beforeCommit?: () => Promise<void>;
}

export async function importContainerImage(
  task: ImportTask & { source: Extract<ImportSource, { type: 'ContainerImage' }> },
  ctx: PipelineContext,
  hooks: RunHooks,
): Promise<{ stored: StoredDisk; sourceBytes: number }> {
  const { signal } = hooks;
  const ref = parseReference(task.source.image);
  const platform = parsePlatform(task.source.platform ?? 'linux/amd64');
  hooks.onProgress?.({ stage: 'Resolving', bytesDone: 0 });
  const { client, release } = await ctx.sourceClient({
    registry: ref.registry,
    pullSecret: task.source.pullSecret,
    caBundle: task.source.caBundle,
  });
  try {
    const resolved = await client.resolveImage(ref, { platform, signal });
    const layers = resolved.manifest.layers;
    const bytesTotal = layers.reduce((n, l) => n + l.size, 0);
    hooks.log?.(`resolved ${formatReference(ref)} to ${resolved.digest} (${layers.length} layers, ${bytesTotal} bytes)`);
    let bytesDone = 0;
    hooks.onProgress?.({ stage: 'Transferring', bytesDone, bytesTotal });
    const sources: LayerSource[] = layers.map((l) => ({
      digest: l.digest,
      size: l.size,
      open: (s: AbortSignal) => client.openBlob(ref.registry, ref.repository, l, { signal: s }),
    }));
    const { result } = await extractContainerDisk(
      sources,
      (entry, entrySignal) =>
        storeDisk(
          { name: entry.name, size: entry.size, stream: entry.stream },
          // entrySignal fires when the extraction fails after the disk started streaming (a second disk file below).
          storeOptionsFor(task, ctx, { signal: entrySignal, log: hooks.log }),
        ),
      {
        signal,
        onLayerBytes: (n) => {
          bytesDone = n;
          hooks.onProgress?.({ stage: 'Transferring', bytesDone, bytesTotal });
        },
      },
    );
    return { stored: result, sourceBytes: bytesDone };
  } finally {
    await release();
  }
}
