/**
 * One import as data: what a worker thread is asked to do, what it reports while doing it, and what it
 * returns. All of it crosses the thread boundary by structured clone: plain values only, no secrets
 * (credentials are referenced by name and resolved inside the thread).
 */
import type { DvcrTarget } from '../dvcr/image.ts';
import type { MessagePort } from 'node:worker_threads';

export type ImportSource =
  | {
      type: 'ContainerImage';
      /** Image reference, tag or digest. */
      image: string;
      /** os/arch[/variant]; default linux/amd64. */
      platform?: string;
      /** Name of a dockerconfigjson pull secret (looked up in PULL_SECRETS_DIR). */
      pullSecret?: { name: string; namespace?: string };
      /** PEM CA bundle for the source registry (not a secret). */
      caBundle?: string;
    }
  | {
      type: 'HTTP';
      url: string;
      /** Base64 of PEM certificates to trust for this URL. */
      caBundle?: string;
      /** Hex digests over the bytes as delivered; every one given must match. */
      checksums?: Partial<Record<'md5' | 'sha1' | 'sha256' | 'sha512', string>>;
    }
  | {
      type: 'Upload';
      /**
       * Where the upload's request body arrives from the API thread (src/sources/upload.ts has the protocol:
       * transferred chunks, acknowledged as they are consumed). Must be in the task's `transferList`.
       */
      body: MessagePort;
      /** Content-Length of the upload, when the client sent one. */
      size?: number;
      /** Hex digests over the bytes as sent (spec.dataSource.upload.checksum); every one given must match. */
      checksums?: Partial<Record<'md5' | 'sha1' | 'sha256' | 'sha512', string>>;
    }
  | {
      /**
       * A copy of another image already in DVCR (resolved Ready by the control plane): the layer is mounted
       * across repositories, config and manifest are written fresh. The facts are the source's status.
       */
      type: 'ObjectRef';
      /** `ClusterVirtualImage "base"` / `VirtualImage "ns/base"`, for messages. */
      ref: string;
      /** The source's `status.target.registryURL`: `host/repo:tag` in DVCR. */
      registryURL: string;
      format: string;
      storedBytes: number;
      virtualSize: number;
      /** The source's `status.checksums.sha256` (empty when it has none). */
      sha256: string;
      /** The source's `status.originalFormat`, when it was converted. */
      originalFormat?: string;
    };

export interface ImportTask {
  /** For logs and error messages: `cvi/ubuntu` or `vi/ns/name`. */
  imageRef: string;
  source: ImportSource;
  target: DvcrTarget;
  /** Ours: convert the disk to this format (spec.conversion.format, else CONVERT_TO); unset = keep it. */
  convertTo?: 'qcow2' | 'raw';
}

export type ImportStage = 'Resolving' | 'Transferring' | 'Probing' | 'Committing';

/** Reported by the pipeline as bytes move (the receiver throttles). */
export interface PipelineProgress {
  stage: ImportStage;
  /** Source bytes read so far (compressed layer bytes for registry sources). */
  bytesDone: number;
  /** Source bytes in all, when known. */
  bytesTotal?: number;
}

export interface ImportOutcome {
  format: string;
  cdrom: boolean;
  /** Bytes of the disk file stored in DVCR. */
  storedBytes: number;
  virtualSize: number;
  /** sha256 of the stored disk file. */
  sha256: string;
  /** Source bytes read, and the compression layers unwrapped from the disk file. */
  sourceBytes: number;
  compression: string[];
  fileName: string;
  layerDigest: string;
  manifestDigest: string;
  /** `host/repo:tag` in DVCR. */
  registryURL: string;
  durationMs: number;
  /** The format the disk arrived in, when it was converted (`format` is the stored one). */
  originalFormat?: string;
}

export type FailureClass = 'transient' | 'rate-limited' | 'permanent' | 'cancelled';

/** An error as it crosses the thread boundary (classes do not survive structured clone). */
export interface ImportFailure {
  errorClass: FailureClass;
  /** Stable reason, e.g. `MANIFEST_UNKNOWN`, `NoDiskFile`, `BackingFile`. */
  reason: string;
  /** What a person can act on; never contains secrets. */
  message: string;
  retryAfterMs?: number;
}

/** Messages on the task's MessagePort. */
export type ThreadMessage =
  | { type: 'progress'; progress: PipelineProgress }
  | { type: 'log'; line: string }
  /** Asks the control plane whether this generation may still write its manifest. */
  | { type: 'commit-request' };

/** Messages from the control plane to the thread. */
export type ControlMessage = { type: 'abort' } | { type: 'commit-reply'; ok: boolean; reason?: string };
