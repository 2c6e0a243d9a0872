/** The image resource: schemas and types, status transitions, DVCR repository naming, and the Redis store. */
export * from './errors.ts';
export * from './repo.ts';
export * from './schema.ts';
export * from './status.ts';
export * from './store.ts';
export * from './stats.ts';
export * from './upload-tokens.ts';
