/**
 * Redis connections for BullMQ and the image store. Two roles:
 * - `worker`: blocking commands and lock renewal; retries forever (`maxRetriesPerRequest: null`), as BullMQ
 *   requires for Workers and QueueEvents.
 * - `producer`: request handlers and the CLI; fail fast when Redis is away instead of queueing commands.
 */
import { Redis, type RedisOptions } from 'ioredis';

export type ConnectionRole = 'worker' | 'producer';

export function createRedis(url: string, role: ConnectionRole, extra: RedisOptions = {}): Redis {
  const common: RedisOptions = {
    lazyConnect: false,
    connectionName: `dvcr-importer-${role}`,
    // Keep reconnecting with a capped backoff: workers must survive a Redis restart.
    retryStrategy: (times) => Math.min(200 * 2 ** Math.min(times, 6), 5000),
  };
  const redis =
    role === 'worker'
      ? new Redis(url, { ...common, ...extra, maxRetriesPerRequest: null })
      : new Redis(url, { ...common, maxRetriesPerRequest: 2, enableOfflineQueue: false, ...extra });
  // While Redis is away every reconnect attempt emits 'error'; without a listener ioredis prints each one with
  // a stack ("Unhandled error event"). The failures that matter reach the callers as failed commands.
  redis.on('error', () => undefined);
  return redis;
}

/** Waits until a connection is ready (for startup checks), or fails with a clear message. */
export async function waitReady(redis: Redis, timeoutMs = 10_000): Promise<void> {
  if (redis.status === 'ready') return;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`Redis did not answer within ${timeoutMs} ms (REDIS_URL)`));
    }, timeoutMs);
    const onReady = () => {
      cleanup();
      resolve();
    };
    const cleanup = () => {
      clearTimeout(timer);
      redis.off('ready', onReady);
    };
    redis.on('ready', onReady);
  });
}
