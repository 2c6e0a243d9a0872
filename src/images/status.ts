/**
 * Image status: the type (exactly the contract's fields, plus ours: `checksums`, `attempts`, `failure`,
 * `originalFormat`), its schema, and pure transitions. A transition takes a status and returns the next one; it
 * never mutates its input, and returns the input itself when the event does not apply to the current phase (a late
 * progress report for an image that is already Ready, a failure after deletion started), so writers can skip no-op
 * writes.
 *
 * Phase machine (contract "Lifecycle rules"):
 *
 * ```
 * created -> Pending -> Provisioning -> Ready <-> ImageLost
 *               |  \         |    \
 *               |   `-> WaitForUserUpload (Upload only) ... -> Provisioning
 *               `-----------> Failed  (terminal for this generation; a new attempt may start Provisioning again)
 * any -> Terminating (delete); spec change before Ready -> Pending (onSpecChanged)
 * ```
 *
 * Progress never goes down within a generation (a retry keeps the highest value). Its strings come from
 * src/disk/units.ts, shared with the CLI: `"0%"` when provisioning starts, `"%.1f%%"` of source bytes read
 * (truncated, `"0.0%"` to `"100.0%"`) while bytes move, `"100%"` only once Ready.
 * `observedGeneration` (of the status and of every condition) is stamped by the store on write (see
 * {@link stampGeneration}); transitions do not need to know the generation.
 */
import { z } from 'zod';
import type { DiskFormat } from '../disk/format.ts';
import { formatBytes, formatProgress, formatSpeed, parsePercent } from '../disk/units.ts';

/** Progress of an image that is Ready: the only place `"100%"` appears. */
const PROGRESS_DONE = '100%';
/** Progress when provisioning starts and nothing is known yet. */
const PROGRESS_START = '0%';

export const IMAGE_PHASES = [
  'Pending',
  'WaitForUserUpload',
  'Provisioning',
  'Ready',
  'Failed',
  'Terminating',
  'ImageLost',
] as const;
export type ImagePhase = (typeof IMAGE_PHASES)[number];

/** Disk formats as reported in `status.format` (`vhd` is what qemu calls `vpc`). */
export const IMAGE_FORMATS = ['qcow2', 'raw', 'vmdk', 'vdi', 'vhd', 'vhdx', 'iso'] as const;
export type ImageFormat = (typeof IMAGE_FORMATS)[number];
// status.format is what src/disk detects: the two lists must stay identical (a compile error otherwise).
const _sameFormats: [ImageFormat, DiskFormat] extends [DiskFormat, ImageFormat] ? true : never = true;

export const CONDITION_TYPES = ['DatasourceReady', 'Ready', 'Terminating'] as const;
export type ConditionType = (typeof CONDITION_TYPES)[number];
export type ConditionStatus = 'True' | 'False' | 'Unknown';

/** Reasons of the `Ready` condition (contract). */
export const READY_REASONS = [
  'WaitForUserUpload',
  'WaitForUserUploadTimeout',
  'Provisioning',
  'ProvisioningNotStarted',
  'ProvisioningFailed',
  'ProvisioningFailedTerminally',
  'Ready',
  'ImageLost',
] as const;
export type ReadyReason = (typeof READY_REASONS)[number];

/** Reasons of the `DatasourceReady` condition (upstream's, for the sources we support). */
export const DATASOURCE_READY_REASONS = [
  'DatasourceReady',
  'ContainerRegistrySecretNotFound',
  'ImageNotReady',
  'ClusterImageNotReady',
] as const;
export type DatasourceReadyReason = (typeof DATASOURCE_READY_REASONS)[number];

/** Reason of the `Terminating` condition. */
export const TERMINATING_REASON = 'Terminating';

/** `failure.reason` (and Ready reason) of an upload that did not start in time. */
export const UPLOAD_TIMEOUT_REASON = 'WaitForUserUploadTimeout';

export interface Condition {
  type: ConditionType;
  status: ConditionStatus;
  reason: string;
  message: string;
  /** RFC 3339, second precision; changes only when `status` changes. */
  lastTransitionTime: string;
  observedGeneration?: number;
}

/** Human forms in IEC units per second (`"2.1Mi/s"`), byte forms as decimal strings. */
export interface DownloadSpeed {
  avg?: string;
  avgBytes?: string;
  current?: string;
  currentBytes?: string;
}

/** stored = bytes of the disk file kept in DVCR; unpacked = virtual size (qcow2/vmdk) or byte length (raw/iso). */
export interface ImageSize {
  stored?: string;
  storedBytes?: string;
  unpacked?: string;
  unpackedBytes?: string;
}

export interface ImageUploadURLs {
  external?: string;
  inCluster?: string;
}

/** Ours: why the last attempt failed, in words an operator can act on. */
export interface ImageFailure {
  /** Stable machine reason, e.g. `ChecksumMismatch`, `HTTPNotFound`, `WaitForUserUploadTimeout`. */
  reason: string;
  message: string;
  /** Whether trying again may succeed (transient) or the spec/source must change first (permanent). */
  retryable: boolean;
}

export interface ImageStatus {
  phase: ImagePhase;
  progress?: string;
  downloadSpeed?: DownloadSpeed;
  size?: ImageSize;
  format?: ImageFormat;
  cdrom?: boolean;
  target?: { registryURL?: string };
  imageUploadURLs?: ImageUploadURLs;
  conditions: Condition[];
  observedGeneration?: number;
  /** Ours: digests of the stored disk file. */
  checksums?: { sha256?: string };
  /** Ours: import attempts started for this generation. */
  attempts?: number;
  /** Ours: the last failure; cleared once Ready. */
  failure?: ImageFailure;
  /** Ours: the format the disk arrived in when the importer converted it (`format` is the stored one). */
  originalFormat?: ImageFormat;
}

// ---------------------------------------------------------------------------------------------------------------
// Schema (for reading objects back, API responses and tests): strict, so a field outside the contract is caught.

const byteString = z.string().regex(/^\d+$/, 'must be a decimal byte count');
const rfc3339 = z.string().regex(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/, 'must be RFC 3339');

export const conditionSchema = z.strictObject({
  type: z.enum(CONDITION_TYPES),
  status: z.enum(['True', 'False', 'Unknown']),
  reason: z.string().min(1),
  message: z.string(),
  lastTransitionTime: rfc3339,
  observedGeneration: z.number().int().min(1).optional(),
});

export const imageStatusSchema = z.strictObject({
  phase: z.enum(IMAGE_PHASES),
  progress: z
    .string()
    .regex(/^(0|100|\d{1,3}\.\d)%$/, 'must be "0%", "100%" or "%.1f%%"')
    .optional(),
  downloadSpeed: z
    .strictObject({
      avg: z.string().optional(),
      avgBytes: byteString.optional(),
      current: z.string().optional(),
      currentBytes: byteString.optional(),
    })
    .optional(),
  size: z
    .strictObject({
      stored: z.string().optional(),
      storedBytes: byteString.optional(),
      unpacked: z.string().optional(),
      unpackedBytes: byteString.optional(),
    })
    .optional(),
  format: z.enum(IMAGE_FORMATS).optional(),
  cdrom: z.boolean().optional(),
  target: z.strictObject({ registryURL: z.string().optional() }).optional(),
  imageUploadURLs: z.strictObject({ external: z.string().optional(), inCluster: z.string().optional() }).optional(),
  conditions: z.array(conditionSchema),
  observedGeneration: z.number().int().min(1).optional(),
  checksums: z.strictObject({ sha256: z.string().regex(/^[0-9a-f]{64}$/).optional() }).optional(),
  attempts: z.number().int().min(0).optional(),
  failure: z.strictObject({ reason: z.string().min(1), message: z.string(), retryable: z.boolean() }).optional(),
  originalFormat: z.enum(IMAGE_FORMATS).optional(),
}) satisfies z.ZodType<ImageStatus>;

// ---------------------------------------------------------------------------------------------------------------
// Helpers

export interface TransitionOptions {
  /** Clock for `lastTransitionTime`; default now. */
  now?: Date;
}

/** Kubernetes-style timestamp: RFC 3339 in UTC with second precision (`2024-05-01T10:00:00Z`). */
export function rfc3339Now(now: Date = new Date()): string {
  return now.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

export function getCondition(status: ImageStatus, type: ConditionType): Condition | undefined {
  return status.conditions.find((c) => c.type === type);
}

export interface ConditionInput {
  type: ConditionType;
  status: ConditionStatus;
  reason: string;
  message: string;
}

/**
 * Sets one condition, keeping the others and their order. `lastTransitionTime` moves only when the condition is
 * new or its `status` changes; a changed reason or message keeps the time (Kubernetes semantics).
 */
export function setCondition(conditions: readonly Condition[], input: ConditionInput, now: Date = new Date()): Condition[] {
  const i = conditions.findIndex((c) => c.type === input.type);
  const prev = i >= 0 ? conditions[i] : undefined;
  const next: Condition = {
    type: input.type,
    status: input.status,
    reason: input.reason,
    message: input.message,
    lastTransitionTime: prev && prev.status === input.status ? prev.lastTransitionTime : rfc3339Now(now),
  };
  if (prev?.observedGeneration !== undefined) next.observedGeneration = prev.observedGeneration;
  if (!prev) return [...conditions, next];
  const out = conditions.slice();
  out[i] = next;
  return out;
}

export function removeCondition(conditions: readonly Condition[], type: ConditionType): Condition[] {
  return conditions.filter((c) => c.type !== type);
}

/** What the store does on every status write: the status (and each condition) now describes `generation`. */
export function stampGeneration(status: ImageStatus, generation: number): ImageStatus {
  return {
    ...status,
    conditions: status.conditions.map((c) => ({ ...c, observedGeneration: generation })),
    observedGeneration: generation,
  };
}

function phaseIn(status: ImageStatus, phases: readonly ImagePhase[]): boolean {
  return phases.includes(status.phase);
}

/** Numeric progress of a status (0 when absent). */
export function progressValue(status: ImageStatus): number {
  return status.progress === undefined ? 0 : (parsePercent(status.progress) ?? 0);
}

function speedBytes(bps: number): string {
  return String(Number.isFinite(bps) && bps > 0 ? Math.round(bps) : 0);
}

function avgOnly(speed: DownloadSpeed | undefined): DownloadSpeed | undefined {
  if (!speed || (speed.avg === undefined && speed.avgBytes === undefined)) return undefined;
  const out: DownloadSpeed = {};
  if (speed.avg !== undefined) out.avg = speed.avg;
  if (speed.avgBytes !== undefined) out.avgBytes = speed.avgBytes;
  return out;
}

function without<T extends object, K extends keyof T>(obj: T, ...keys: K[]): Omit<T, K> {
  const out = { ...obj };
  for (const k of keys) delete out[k];
  return out;
}

const MSG_NOT_STARTED = 'Waiting for an import worker to start.';
const MSG_PROVISIONING = 'Import is in the process of provisioning to DVCR.';
const MSG_WAIT_UPLOAD = 'Waiting for the user upload.';

const datasourceReady = { type: 'DatasourceReady', status: 'True', reason: 'DatasourceReady', message: '' } as const;

// ---------------------------------------------------------------------------------------------------------------
// Transitions

/** The status of a new object: Pending, provisioning not started. */
export function onCreated(opts: TransitionOptions = {}): ImageStatus {
  const now = opts.now ?? new Date();
  return {
    phase: 'Pending',
    cdrom: false,
    conditions: setCondition(
      [],
      { type: 'Ready', status: 'False', reason: 'ProvisioningNotStarted', message: MSG_NOT_STARTED },
      now,
    ),
    attempts: 0,
  };
}

/**
 * The spec changed before Ready: everything learnt about the old source goes, the import starts again for the new
 * generation. Conditions other than DatasourceReady are kept (their times move only if their status changes).
 */
export function onSpecChanged(status: ImageStatus, generation: number, opts: TransitionOptions = {}): ImageStatus {
  if (phaseIn(status, ['Ready', 'Terminating'])) return status;
  const now = opts.now ?? new Date();
  const base: ImageStatus = {
    phase: 'Pending',
    cdrom: false,
    conditions: setCondition(
      removeCondition(status.conditions, 'DatasourceReady'),
      {
        type: 'Ready',
        status: 'False',
        reason: 'ProvisioningNotStarted',
        message: `The spec changed (generation ${generation}): the import starts again.`,
      },
      now,
    ),
    attempts: 0,
  };
  if (status.observedGeneration !== undefined) base.observedGeneration = status.observedGeneration;
  return base;
}

/** The source was resolved (HTTP reachable, secret found, referenced image Ready, ...). */
export function onDatasourceReady(status: ImageStatus, opts: TransitionOptions = {}): ImageStatus {
  if (!phaseIn(status, ['Pending', 'WaitForUserUpload', 'Provisioning', 'Failed'])) return status;
  return { ...status, conditions: setCondition(status.conditions, datasourceReady, opts.now) };
}

/** The source cannot be used yet (a referenced image not Ready, a pull secret missing); the image stays Pending. */
export function onDatasourceNotReady(
  status: ImageStatus,
  why: { reason: DatasourceReadyReason | (string & {}); message: string },
  opts: TransitionOptions = {},
): ImageStatus {
  if (!phaseIn(status, ['Pending', 'WaitForUserUpload', 'Provisioning', 'Failed'])) return status;
  return {
    ...status,
    conditions: setCondition(
      status.conditions,
      { type: 'DatasourceReady', status: 'False', reason: why.reason, message: why.message },
      opts.now,
    ),
  };
}

/** Upload sources: the upload endpoint is ready and waits for bytes (also after an interrupted upload). */
export function onWaitForUpload(status: ImageStatus, urls: ImageUploadURLs, opts: TransitionOptions = {}): ImageStatus {
  if (!phaseIn(status, ['Pending', 'WaitForUserUpload', 'Provisioning'])) return status;
  const now = opts.now ?? new Date();
  const conditions = setCondition(
    setCondition(status.conditions, datasourceReady, now),
    { type: 'Ready', status: 'False', reason: 'WaitForUserUpload', message: MSG_WAIT_UPLOAD },
    now,
  );
  const next: ImageStatus = { ...without(status, 'downloadSpeed'), phase: 'WaitForUserUpload', imageUploadURLs: { ...urls }, conditions };
  const avg = avgOnly(status.downloadSpeed);
  if (avg) next.downloadSpeed = avg;
  return next;
}

export interface ProvisioningStart {
  /** The attempt number (1-based) when the caller knows it (BullMQ `attemptsMade + 1`); default: previous + 1. */
  attempt?: number;
  /** The DVCR reference being written, shown as `status.target.registryURL`. */
  registryURL?: string;
}

/** Bytes are about to move: Provisioning, progress `"0%"` unless an earlier attempt got further. */
export function onProvisioningStarted(
  status: ImageStatus,
  start: ProvisioningStart = {},
  opts: TransitionOptions = {},
): ImageStatus {
  if (!phaseIn(status, ['Pending', 'WaitForUserUpload', 'Provisioning', 'Failed'])) return status;
  const now = opts.now ?? new Date();
  const attempts = start.attempt ?? (status.attempts ?? 0) + 1;
  const conditions = setCondition(
    setCondition(status.conditions, datasourceReady, now),
    { type: 'Ready', status: 'False', reason: 'Provisioning', message: MSG_PROVISIONING },
    now,
  );
  const next: ImageStatus = {
    ...status,
    phase: 'Provisioning',
    progress: status.progress ?? PROGRESS_START,
    conditions,
    attempts: Math.max(attempts, status.attempts ?? 0),
  };
  if (start.registryURL !== undefined) next.target = { ...status.target, registryURL: start.registryURL };
  return next;
}

export interface ProgressReport {
  /** Source bytes read so far in this attempt (as delivered, before decompression). */
  bytesDone: number;
  /** Total source bytes when known (Content-Length, upload length, sum of layer sizes). */
  bytesTotal?: number;
  /** Recent throughput, bytes per second. */
  currentBps: number;
  /** Average throughput of this attempt, bytes per second. */
  avgBps: number;
}

/**
 * Bytes moved. Progress is `bytesDone / bytesTotal` as `"%.1f%%"` (at most `"99.9%"`) and never goes below what
 * was shown before (so a retry keeps the highest value); without a total only the speed changes. Reports arriving
 * in Pending or WaitForUserUpload move the image to Provisioning (bytes are moving); in any other phase they are
 * ignored.
 */
export function onProgress(status: ImageStatus, report: ProgressReport, opts: TransitionOptions = {}): ImageStatus {
  if (!phaseIn(status, ['Pending', 'WaitForUserUpload', 'Provisioning'])) return status;
  let next = status;
  if (status.phase !== 'Provisioning') next = onProvisioningStarted(status, {}, opts);
  let progress = next.progress;
  const total = report.bytesTotal;
  if (total !== undefined && total > 0 && Number.isFinite(report.bytesDone)) {
    const candidate = formatProgress(report.bytesDone, total);
    const value = parsePercent(candidate) ?? 0;
    // Higher wins; at an equal value the decimal form replaces the bare start value ("0%" -> "0.0%").
    if (progress === undefined || value > progressValue(next) || (value === progressValue(next) && progress === PROGRESS_START)) {
      progress = candidate;
    }
  }
  const downloadSpeed: DownloadSpeed = {
    avg: formatSpeed(report.avgBps),
    avgBytes: speedBytes(report.avgBps),
    current: formatSpeed(report.currentBps),
    currentBytes: speedBytes(report.currentBps),
  };
  const out: ImageStatus = { ...next, downloadSpeed };
  if (progress !== undefined) out.progress = progress;
  return out;
}

/**
 * One attempt failed and another will follow: the phase stays, `failure` tells why, the Ready message says a retry
 * is coming. Progress is kept (never goes down).
 */
export function onAttemptFailed(
  status: ImageStatus,
  failure: ImageFailure,
  retry: { retryInMs?: number } = {},
  opts: TransitionOptions = {},
): ImageStatus {
  if (!phaseIn(status, ['Pending', 'WaitForUserUpload', 'Provisioning'])) return status;
  const when = retry.retryInMs !== undefined ? ` in ${Math.max(1, Math.round(retry.retryInMs / 1000))}s` : '';
  const attempt = status.attempts ? `Attempt ${status.attempts}` : 'The attempt';
  const reason: ReadyReason = status.phase === 'WaitForUserUpload' ? 'WaitForUserUpload' : 'Provisioning';
  const next: ImageStatus = {
    ...without(status, 'downloadSpeed'),
    failure: { ...failure },
    conditions: setCondition(
      status.conditions,
      { type: 'Ready', status: 'False', reason, message: `${attempt} failed: ${failure.message}; retrying${when}.` },
      opts.now,
    ),
  };
  const avg = avgOnly(status.downloadSpeed);
  if (avg) next.downloadSpeed = avg;
  return next;
}

export interface ReadyResult {
  /** The DVCR reference the image was written to, `dvcr.example/cvi/<name>:<uid>`. */
  registryURL: string;
  format: ImageFormat;
  /** Bytes of the disk file kept in DVCR. */
  storedBytes: number;
  /** Virtual size (qcow2/vmdk/...) or byte length (raw/iso). */
  unpackedBytes: number;
  /** sha256 (hex) of the stored disk file. */
  sha256?: string;
  /** Average throughput of the successful attempt; default: the last reported average. */
  avgBps?: number;
  /** The format the disk arrived in, when it was converted to `format`. */
  originalFormat?: ImageFormat;
}

/** The manifest is in DVCR: Ready, `"100%"`, sizes, format, cdrom (exactly when iso), average speed only. */
export function onReady(status: ImageStatus, result: ReadyResult, opts: TransitionOptions = {}): ImageStatus {
  if (!phaseIn(status, ['Pending', 'WaitForUserUpload', 'Provisioning', 'Failed', 'ImageLost'])) return status;
  const now = opts.now ?? new Date();
  const conditions = setCondition(
    setCondition(status.conditions, datasourceReady, now),
    { type: 'Ready', status: 'True', reason: 'Ready', message: '' },
    now,
  );
  const next: ImageStatus = {
    ...without(status, 'failure', 'imageUploadURLs', 'downloadSpeed', 'originalFormat'),
    phase: 'Ready',
    progress: PROGRESS_DONE,
    size: {
      stored: formatBytes(result.storedBytes),
      storedBytes: String(Math.max(0, Math.floor(result.storedBytes))),
      unpacked: formatBytes(result.unpackedBytes),
      unpackedBytes: String(Math.max(0, Math.floor(result.unpackedBytes))),
    },
    format: result.format,
    cdrom: result.format === 'iso',
    target: { ...status.target, registryURL: result.registryURL },
    conditions,
  };
  const speed =
    result.avgBps !== undefined
      ? { avg: formatSpeed(result.avgBps), avgBytes: speedBytes(result.avgBps) }
      : avgOnly(status.downloadSpeed);
  if (speed) next.downloadSpeed = speed;
  if (result.sha256 !== undefined) next.checksums = { ...status.checksums, sha256: result.sha256.toLowerCase() };
  if (result.originalFormat !== undefined) next.originalFormat = result.originalFormat;
  return next;
}

/** The condition reason a failure shows under. */
export function failureConditionReason(failure: ImageFailure): ReadyReason {
  if (failure.reason === UPLOAD_TIMEOUT_REASON) return 'WaitForUserUploadTimeout';
  return failure.retryable ? 'ProvisioningFailed' : 'ProvisioningFailedTerminally';
}

/**
 * The import gave up: Failed. `retryable: false` (checksum mismatch, 404, missing /disk file, ...) shows as
 * `ProvisioningFailedTerminally`; an exhausted transient failure as `ProvisioningFailed`; an upload that never
 * started as `WaitForUserUploadTimeout`. Progress is kept; upload URLs go.
 */
export function onFailed(status: ImageStatus, failure: ImageFailure, opts: TransitionOptions = {}): ImageStatus {
  if (!phaseIn(status, ['Pending', 'WaitForUserUpload', 'Provisioning', 'Failed'])) return status;
  const next: ImageStatus = {
    ...without(status, 'imageUploadURLs', 'downloadSpeed'),
    phase: 'Failed',
    failure: { ...failure },
    conditions: setCondition(
      status.conditions,
      { type: 'Ready', status: 'False', reason: failureConditionReason(failure), message: failure.message },
      opts.now,
    ),
  };
  const avg = avgOnly(status.downloadSpeed);
  if (avg) next.downloadSpeed = avg;
  return next;
}

/** Delete requested: Terminating (from any phase). Everything else about the status is kept for display. */
export function onTerminating(status: ImageStatus, opts: TransitionOptions = {}): ImageStatus {
  if (status.phase === 'Terminating') return status;
  const next: ImageStatus = {
    ...without(status, 'imageUploadURLs', 'downloadSpeed'),
    phase: 'Terminating',
    conditions: setCondition(
      status.conditions,
      {
        type: 'Terminating',
        status: 'True',
        reason: TERMINATING_REASON,
        message: 'The import is being cancelled and the image removed from DVCR.',
      },
      opts.now,
    ),
  };
  const avg = avgOnly(status.downloadSpeed);
  if (avg) next.downloadSpeed = avg;
  return next;
}

/** A Ready image's manifest is gone from DVCR. */
export function onImageLost(status: ImageStatus, opts: TransitionOptions = {}): ImageStatus {
  if (status.phase !== 'Ready') return status;
  const url = status.target?.registryURL ?? '';
  return {
    ...status,
    phase: 'ImageLost',
    conditions: setCondition(
      status.conditions,
      { type: 'Ready', status: 'False', reason: 'ImageLost', message: `Image "${url}" not found in DVCR.` },
      opts.now,
    ),
  };
}

/** The lost manifest is back: Ready again. */
export function onImageFound(status: ImageStatus, opts: TransitionOptions = {}): ImageStatus {
  if (status.phase !== 'ImageLost') return status;
  return {
    ...status,
    phase: 'Ready',
    conditions: setCondition(status.conditions, { type: 'Ready', status: 'True', reason: 'Ready', message: '' }, opts.now),
  };
}

/** Whether the spec is frozen: Ready phase or Ready condition True (upstream's rule). */
export function isSpecFrozen(status: ImageStatus): boolean {
  return status.phase === 'Ready' || getCondition(status, 'Ready')?.status === 'True';
}
