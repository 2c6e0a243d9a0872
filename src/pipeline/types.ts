/**
 * One import as data: what a worker thread is asked to do, what it reports while doing it, and what it
 * returns. All of it crosses the thread boundary by structured clone: plain values only, no secrets
 * (credentials are referenced by name and resolved inside the thread).
 */
import type { DvcrTarget } from '../dvcr/image.ts';

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
    };

export interface ImportTask {
  /** For logs and error messages: `cvi/ubuntu` or `vi/ns/name`. */
  imageRef: string;
  source: ImportSource;
  target: DvcrTarget;
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
