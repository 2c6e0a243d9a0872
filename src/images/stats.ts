/**
 * Import statistics shared by every worker process: bytes stored, failures by reason, and a histogram of
 * import durations, kept in Redis (one hash under the store's prefix, so one hash tag) so that any API
 * instance's /metrics reports the whole pool, not just its own process.
 */
import type { Redis, Cluster } from 'ioredis';

export const DURATION_BUCKETS = [1, 5, 15, 60, 300, 900, 3600] as const;

export interface StatsSnapshot {
  bytesImported: number;
  importsSucceeded: number;
  failures: Record<string, number>;
  /** Cumulative counts per upper bound, as Prometheus wants them. */
  duration: { buckets: Array<[number, number]>; sum: number; count: number };
}

export class ImportStats {
  private readonly key: string;
  constructor(
    private readonly redis: Redis | Cluster,
    prefix = '{dvcr}:images',
  ) {
    this.key = `${prefix}:stats`;
  }

  /** One import reached Ready: `bytes` stored in `seconds`. */
  async recordSuccess(bytes: number, seconds: number): Promise<void> {
    const bucket = DURATION_BUCKETS.find((b) => seconds <= b);
    const m = this.redis.multi();
    m.hincrby(this.key, 'bytes', Math.max(0, Math.round(bytes)));
    m.hincrby(this.key, 'succeeded', 1);
    m.hincrbyfloat(this.key, 'duration:sum', seconds);
    m.hincrby(this.key, `duration:le:${bucket ?? 'inf'}`, 1);
    await m.exec();
  }

  /** One import failed for good with `reason` (status.failure.reason). */
  async recordFailure(reason: string): Promise<void> {
    await this.redis.hincrby(this.key, `failed:${reason}`, 1);
  }

  async snapshot(): Promise<StatsSnapshot> {
    const h = await this.redis.hgetall(this.key);
    const num = (k: string) => Number(h[k] ?? 0);
    const failures: Record<string, number> = {};
    for (const [k, v] of Object.entries(h)) if (k.startsWith('failed:')) failures[k.slice(7)] = Number(v);
    let acc = 0;
    const buckets = DURATION_BUCKETS.map((b) => [b, (acc += num(`duration:le:${b}`))] as [number, number]);
    return {
      bytesImported: num('bytes'),
      importsSucceeded: num('succeeded'),
      failures,
      duration: { buckets, sum: num('duration:sum'), count: acc + num('duration:le:inf') },
    };
  }
}
