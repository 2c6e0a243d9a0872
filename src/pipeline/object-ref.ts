/**
 * Import from another image already in DVCR (`ObjectRef`): the control plane has checked that the source is
 * Ready and hands over its DVCR location and status facts. Here the source's manifest is read (one layer, as
 * every DVCR image has), its config's labels kept, and the layer copied into the new repository with a
 * cross-repository mount: `POST uploads/?mount=<digest>&from=<source repo>` answers 201 and no byte moves. When
 * the registry opens an upload session instead (202: mounting not allowed, the blob not linked there), the
 * blob is streamed from the source repository into the new one, verified against its digest. Then the usual
 * commit writes a fresh config (the source's labels) and manifest under the new repository and tag (uid).
 *
 * Progress: bytes of the layer; a mount jumps straight to the whole layer.
 */
import { isOciError, OciError, parseReference, type ImageReference } from '../oci/index.ts';
import { Labels } from '../dvcr/image.ts';
import type { PipelineContext } from './context.ts';
import type { RunHooks } from './container-image.ts';
import type { StoredDisk } from './store-disk.ts';
import type { ImportSource, ImportTask } from './types.ts';

type ObjectRefSource = Extract<ImportSource, { type: 'ObjectRef' }>;

/** Labels every commit writes itself; the rest of the source's labels are carried over. */
const STANDARD_LABELS = new Set<string>([Labels.size, Labels.virtualSize, Labels.format, Labels.erofs]);

/**
 * Config labels, read defensively (a config of another writer may lack them or hold anything): only string
 * values of a `config.Labels` object (not a list) are kept; never throws.
 */
export function labelsOf(config: Buffer): Record<string, string> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(config.toString('utf8'));
  } catch {
    return {};
  }
  const labels = (parsed as { config?: { Labels?: unknown } } | null)?.config?.Labels;
  if (typeof labels !== 'object' || labels === null || Array.isArray(labels)) return {};
  return Object.fromEntries(Object.entries(labels).filter((e): e is [string, string] => typeof e[1] === 'string'));
}

/** The source config's labels a copy carries over: all but the standard ones, which the commit writes itself. */
export function carriedLabels(config: Buffer): Record<string, string> {
  return Object.fromEntries(Object.entries(labelsOf(config)).filter(([k]) => !STANDARD_LABELS.has(k)));
}

function isNotFound(e: unknown): boolean {
  return isOciError(e) && (e.status === 404 || /_UNKNOWN$/.test(e.reason));
}

export async function importObjectRef(
  task: ImportTask & { source: ObjectRefSource },
  ctx: PipelineContext,
  hooks: RunHooks,
): Promise<{ stored: StoredDisk; sourceBytes: number }> {
  const { source, target } = task;
  const { signal } = hooks;
  hooks.onProgress?.({ stage: 'Resolving', bytesDone: 0 });
  let ref: ImageReference;
  try {
    ref = parseReference(source.registryURL);
  } catch (e) {
    throw new OciError(`${source.ref} has no usable DVCR location "${source.registryURL}": ${(e as Error).message}`, {
      errorClass: 'permanent',
      reason: 'SourceImageInvalid',
    });
  }
  const lost = (e: unknown): OciError =>
    new OciError(
      `${source.ref} is Ready but its image ${source.registryURL} is not in DVCR (${(e as Error).message}); ` +
        'trying again (it may be being replaced or restored)',
      { errorClass: 'transient', reason: 'SourceImageLost', cause: e },
    );
  let manifest;
  try {
    manifest = await ctx.dvcr.getManifest(ref, signal);
  } catch (e) {
    throw isNotFound(e) ? lost(e) : e;
  }
  if (manifest.kind !== 'manifest' || manifest.manifest.layers.length !== 1 || !manifest.manifest.layers[0]) {
    const layers = manifest.kind === 'manifest' ? `${manifest.manifest.layers.length} layers` : 'an index';
    throw new OciError(`${source.ref}: its image ${source.registryURL} has ${layers}; a DVCR image has exactly one layer`, {
      errorClass: 'permanent',
      reason: 'SourceImageInvalid',
    });
  }
  const layer = manifest.manifest.layers[0];
  let extraLabels: Record<string, string>;
  try {
    const config = await ctx.dvcr.getBlobBytes(ref.registry, ref.repository, manifest.manifest.config, undefined, signal);
    extraLabels = carriedLabels(config);
  } catch (e) {
    throw isNotFound(e) ? lost(e) : e;
  }
  if (source.originalFormat && !extraLabels[Labels.originalFormat]) extraLabels[Labels.originalFormat] = source.originalFormat;

  const bytesTotal = layer.size;
  hooks.onProgress?.({ stage: 'Transferring', bytesDone: 0, bytesTotal });
  // Mounting works within one registry only; a source elsewhere (DVCR moved) is streamed across.
  const sameRegistry = ref.registry.toLowerCase() === target.registry.toLowerCase();
  let uploaded;
  try {
    uploaded = await ctx.dvcr.uploadBlob(
      target.registry,
      target.repository,
      () => ctx.dvcr.openBlob(ref.registry, ref.repository, layer, signal ? { signal } : {}),
      {
        digest: layer.digest,
        size: layer.size,
        ...(sameRegistry ? { mountFrom: ref.repository } : {}),
        ...(signal ? { signal } : {}),
        onBytes: (n) => hooks.onProgress?.({ stage: 'Transferring', bytesDone: n, bytesTotal }),
      },
    );
  } catch (e) {
    throw isNotFound(e) ? lost(e) : e;
  }
  hooks.onProgress?.({ stage: 'Transferring', bytesDone: bytesTotal, bytesTotal });
  const from = `${ref.registry}/${ref.repository}`;
  hooks.log?.(
    uploaded.via === 'mount'
      ? `mounted layer ${layer.digest} (${layer.size} bytes) from ${from}: no bytes moved`
      : uploaded.via === 'existing'
        ? `layer ${layer.digest} is already in ${target.repository}`
        : `copied layer ${layer.digest} (${uploaded.size} bytes) from ${from} (the registry did not mount it)`,
  );
  return {
    stored: {
      layer: { digest: layer.digest, size: layer.size },
      // The file name inside the layer is the source's; it is not needed to commit a copy.
      fileName: '',
      format: source.format,
      virtualSize: source.virtualSize,
      storedBytes: source.storedBytes,
      sha256: source.sha256,
      compression: [],
      ...(source.originalFormat ? { originalFormat: source.originalFormat } : {}),
      ...(Object.keys(extraLabels).length ? { extraLabels } : {}),
    },
    sourceBytes: bytesTotal,
  };
}
