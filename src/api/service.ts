/**
 * `ImageService`: the rules every entry point shares (HTTP API, the in-process client, the CLI through the
 * API): validate, store, enqueue the import of a new generation (cancelling the previous one), delete through
 * Terminating (cancel, remove the DVCR tag, then the object), and the periodic check that turns a Ready image
 * whose manifest vanished into ImageLost (and back).
 */
import type { Logger } from 'pino';
import type { ImportQueue} from '../../queues/imports.ts';
import { importJobId } from '../../queues/imports.ts';
import { imagePresent, removeImage, type DvcrTarget } from '../dvcr/image.ts';
import type {
  ImageStore} from '../images/index.ts';
import {
  dvcrRepository,
  onImageFound,
  onImageLost,
  parseImageManifest,
  refOf,
  StaleWriteError,
  type ApplyResult,
  type Image,
  type ImageKind,
  type ImageRef,
  type WatchEvent,
  type WatchOptions,
} from '../images/index.ts';
import type { RegistryClient } from '../oci/index.ts';

export interface ImageServiceOptions {
  store: ImageStore;
  queue: ImportQueue;
  dvcr: RegistryClient;
  /** `host:port` of DVCR. */
  dvcrHost: string;
  logger?: Logger;
  /**
   * The lifecycle of `Upload` images (src/api/uploads.ts): without it they stay Pending until an API process that
   * has one picks them up in its reconcile pass. Upload images are never queued: their bytes come to the API.
   */
  uploads?: UploadLifecycle;
}

/** What ImageService asks of the upload side (implemented by UploadService in uploads.ts). */
export interface UploadLifecycle {
  /** A new generation of an Upload image: issue its token and move it to WaitForUserUpload; returns it then. */
  start(image: Image): Promise<Image | undefined>;
  /** The image's generation is over (spec change, delete): its upload URL stops working. */
  revoke(uid: string): Promise<void>;
  /** Housekeeping for one Upload image; returns what it did, if anything (for logs and tests). */
  reconcile(image: Image): Promise<string | undefined>;
}

export class NotFoundError extends Error {
  override readonly name = 'NotFoundError';
}

export class ImageService {
  readonly store: ImageStore;
  private readonly queue: ImportQueue;
  private readonly dvcr: RegistryClient;
  private readonly dvcrHost: string;
  private readonly logger: Logger | undefined;
  private readonly uploads: UploadLifecycle | undefined;

  constructor(opts: ImageServiceOptions) {
    this.store = opts.store;
    this.queue = opts.queue;
    this.dvcr = opts.dvcr;
    this.dvcrHost = opts.dvcrHost;
    this.logger = opts.logger;
    this.uploads = opts.uploads;
  }

  targetOf(image: Image): DvcrTarget {
    return {
      registry: this.dvcrHost,
      repository: dvcrRepository(this.dvcrHost, refOf(image)),
      tag: image.metadata.uid,
    };
  }

  /** Creates or updates one image from a manifest (already parsed from YAML/JSON). */
  async apply(manifest: unknown, opts: { defaultNamespace?: string } = {}): Promise<ApplyResult> {
    const input = parseImageManifest(manifest, opts);
    const result = await this.store.apply(input);
    const image = result.object;
    if (result.created || result.specChanged) {
      const { uid, generation } = image.metadata;
      if (result.specChanged && generation > 1) {
        // The previous generation's import stops; its status writes are refused from now on anyway.
        await this.queue.cancel(importJobId({ uid, generation: generation - 1 })).catch(() => undefined);
        await this.uploads?.revoke(uid).catch(() => undefined);
      }
      if (image.spec.dataSource.type === 'Upload') {
        // No job: the API serves the upload URL. A failure here leaves the image Pending for reconcile.
        const waiting = await this.uploads?.start(image).catch((e: unknown) => {
          this.logger?.warn({ image: `${image.kind}/${image.metadata.name}`, err: (e as Error).message }, 'upload URL not issued yet');
          return undefined;
        });
        return waiting ? { ...result, object: waiting } : result;
      }
      await this.queue.enqueue({
        kind: image.kind,
        ...(image.metadata.namespace ? { namespace: image.metadata.namespace } : {}),
        name: image.metadata.name,
        uid,
        generation,
      });
      this.logger?.info({ image: `${image.kind}/${image.metadata.name}`, generation, result: result.result }, 'import enqueued');
    }
    return result;
  }

  get(kind: ImageKind, namespace: string | undefined, name: string): Promise<Image | null> {
    return this.store.get(kind, namespace, name);
  }

  list(kind: ImageKind, namespace?: string): Promise<Image[]> {
    return this.store.list(kind, namespace);
  }

  watch(kind: ImageKind, opts: WatchOptions = {}): AsyncGenerator<WatchEvent, void, undefined> {
    return this.store.watch(kind, opts);
  }

  /**
   * Deletes an image: Terminating, cancel its import, remove its DVCR manifest, then the object.
   * If DVCR cannot be reached the object stays Terminating and `reconcile` finishes the job later.
   */
  async delete(kind: ImageKind, namespace: string | undefined, name: string): Promise<Image> {
    const ref: ImageRef = { kind, name, ...(namespace ? { namespace } : {}) };
    const marked = await this.store.markDeleting(ref);
    if (!marked) throw new NotFoundError(`${kind} "${namespace ? `${namespace}/` : ''}${name}" not found`);
    await this.finishDelete(marked);
    return marked;
  }

  private async finishDelete(image: Image): Promise<void> {
    const { uid, generation } = image.metadata;
    await this.queue.cancel(importJobId({ uid, generation })).catch(() => undefined);
    await this.uploads?.revoke(uid);
    await removeImage(this.dvcr, this.targetOf(image));
    await this.store.remove(refOf(image), { uid });
    this.logger?.info({ image: `${image.kind}/${image.metadata.name}` }, 'image deleted');
  }

  /**
   * One pass of housekeeping: finish deletions left Terminating, and check that every Ready (or ImageLost)
   * image still has its manifest in DVCR. Returns what changed, for logs and tests.
   */
  async reconcile(signal?: AbortSignal): Promise<{ lost: string[]; found: string[]; deleted: string[] }> {
    const out = { lost: [] as string[], found: [] as string[], deleted: [] as string[] };
    for (const kind of ['ClusterVirtualImage', 'VirtualImage'] as const) {
      for (const image of await this.store.list(kind)) {
        signal?.throwIfAborted();
        const label = `${kind}/${image.metadata.namespace ? `${image.metadata.namespace}/` : ''}${image.metadata.name}`;
        try {
          if (image.metadata.deletionTimestamp) {
            await this.finishDelete(image);
            out.deleted.push(label);
            continue;
          }
          if (this.uploads && image.spec.dataSource.type === 'Upload') {
            const did = await this.uploads.reconcile(image);
            if (did) this.logger?.info({ image: label, action: did }, 'upload housekeeping');
          }
          const phase = image.status.phase;
          if (phase !== 'Ready' && phase !== 'ImageLost') continue;
          const present = (await imagePresent(this.dvcr, this.targetOf(image), signal)) !== undefined;
          if (phase === 'Ready' && !present) {
            await this.store.updateStatus(refOf(image), image.metadata.uid, image.metadata.generation, (s) => onImageLost(s));
            out.lost.push(label);
          } else if (phase === 'ImageLost' && present) {
            await this.store.updateStatus(refOf(image), image.metadata.uid, image.metadata.generation, (s) => onImageFound(s));
            out.found.push(label);
          }
        } catch (e) {
          if (e instanceof StaleWriteError) continue;
          this.logger?.warn({ image: label, err: (e as Error).message }, 'reconcile failed for image');
        }
      }
    }
    return out;
  }
}
