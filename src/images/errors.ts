/**
 * Errors of the image resource. Each carries a stable `code` the HTTP API maps to a status
 * (Invalid -> 422, SpecFrozen -> 409, StaleWrite -> 409, Expired -> 410, Conflict -> 409).
 */

/** One problem in a manifest: the field path (`spec.dataSource.http.url`) and a complete sentence naming it. */
export interface ValidationIssue {
  /** Dot path of the field, `""` for the whole manifest. */
  readonly path: string;
  /** The line to show a person, already prefixed with the path, e.g. `spec.dataSource.http.url: is required`. */
  readonly message: string;
}

/** A manifest that cannot be accepted; `issues` lists every problem found, in document order. */
export class ValidationError extends Error {
  override readonly name = 'ValidationError';
  readonly code = 'Invalid' as const;
  readonly issues: readonly ValidationIssue[];

  constructor(issues: readonly ValidationIssue[], subject?: string) {
    const head = subject ? `${subject} is invalid` : 'the manifest is invalid';
    const first = issues[0];
    super(
      issues.length === 1 && first
        ? `${head}: ${first.message}`
        : `${head}: ${issues.length} problems:\n${issues.map((i) => `  - ${i.message}`).join('\n')}`,
    );
    this.issues = issues;
  }
}

/** A spec change refused because the image is Ready (frozen) or being deleted. */
export class SpecFrozenError extends Error {
  override readonly name = 'SpecFrozenError';
  readonly code = 'SpecFrozen' as const;
  constructor(
    message: string,
    readonly reason: 'Ready' | 'Terminating',
  ) {
    super(message);
  }
}

export type StaleWriteReason = 'NotFound' | 'UidMismatch' | 'GenerationMismatch' | 'Terminating';

/**
 * A status write refused because the writer works for an object that no longer exists as it knew it: deleted,
 * re-created under a new uid, its spec changed (new generation), or being deleted. The writer should stop.
 */
export class StaleWriteError extends Error {
  override readonly name = 'StaleWriteError';
  readonly code = 'StaleWrite' as const;
  constructor(
    message: string,
    readonly reason: StaleWriteReason,
  ) {
    super(message);
  }
}

/** Too many concurrent writers on one object: the optimistic write did not get through after several tries. */
export class StoreConflictError extends Error {
  override readonly name = 'StoreConflictError';
  readonly code = 'Conflict' as const;
}

/** A watch resumed from a stream id whose later events were already trimmed: list again (like HTTP 410 Gone). */
export class WatchExpiredError extends Error {
  override readonly name = 'WatchExpiredError';
  readonly code = 'Expired' as const;
  constructor(readonly sinceId: string) {
    super(`watch position ${sinceId} is too old: events after it were trimmed; start a new watch without sinceId`);
  }
}
