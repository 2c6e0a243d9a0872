/**
 * What the contract's work for one small image costs on this machine, each part alone, in this process's CPU:
 * a floor under any importer written for Node.js here. `npm run bench` measures it in its many-small scenario;
 * alone (it starts a Redis and a registry of its own):
 *
 *   npx tsx bench/floor-small.ts
 *
 * Parts: three sha256 passes over 1 MiB (the source blob's digest, the disk's checksum, the layer's digest),
 * gunzip of a 1 MiB layer (whole-buffer, the cheapest way), one Redis round trip (a worker makes about 6 per
 * image) and one HTTP request to a registry (an import makes 7: 2 to the source, 5 to DVCR). The requests here
 * carry no body, so the bytes an import moves through sockets come on top.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { Redis } from 'ioredis';
import { request } from 'undici';
import { startRedis } from '../src/stack/redis.ts';
import { startRegistry } from '../src/stack/registry.ts';

/** Redis round trips and registry requests a worker makes per small image (see bench/results.md). */
export const REDIS_ROUND_TRIPS_PER_IMAGE = 6;
export const REQUESTS_PER_IMAGE = 7;

export interface SmallFloor {
  /** CPU ms per call of each part. */
  sha256x3: number;
  gunzip: number;
  redisRoundTrip: number;
  request: number;
  /** All of it for one image. */
  perImage: number;
}

/** CPU ms (user + system) of this process per call of `fn`, over `runs` calls after a tenth as many to warm up. */
async function cpuPer(runs: number, fn: () => unknown): Promise<number> {
  for (let i = 0; i < runs / 10; i++) await fn();
  const before = process.cpuUsage();
  for (let i = 0; i < runs; i++) await fn();
  const used = process.cpuUsage(before);
  return (used.user + used.system) / 1000 / runs;
}

/** Measures the parts against a running Redis and registry (their URLs). */
export async function measureSmallFloor(redisUrl: string, registryUrl: string, runs = 1000): Promise<SmallFloor> {
  const disk = randomBytes(1 << 20);
  const layer = gzipSync(disk);
  const client = new Redis(redisUrl);
  try {
    const sha256x3 = await cpuPer(runs, () => {
      for (let k = 0; k < 3; k++) createHash('sha256').update(disk).digest();
    });
    const gunzip = await cpuPer(runs, () => gunzipSync(layer));
    const redisRoundTrip = await cpuPer(runs, () => client.hset('bench:floor-small', 'k', 'v'));
    const req = await cpuPer(runs, async () => {
      const res = await request(`${registryUrl}/v2/`);
      await res.body.dump();
    });
    await client.del('bench:floor-small');
    const perImage = sha256x3 + gunzip + REDIS_ROUND_TRIPS_PER_IMAGE * redisRoundTrip + REQUESTS_PER_IMAGE * req;
    return { sha256x3, gunzip, redisRoundTrip, request: req, perImage };
  } finally {
    client.disconnect();
  }
}

export function describeSmallFloor(f: SmallFloor): string {
  return (
    `3 sha256 of 1 MiB ${f.sha256x3.toFixed(1)} ms, a gunzip ${f.gunzip.toFixed(1)} ms, ${REDIS_ROUND_TRIPS_PER_IMAGE} Redis round trips ` +
    `${(REDIS_ROUND_TRIPS_PER_IMAGE * f.redisRoundTrip).toFixed(1)} ms, ${REQUESTS_PER_IMAGE} requests ${(REQUESTS_PER_IMAGE * f.request).toFixed(1)} ms`
  );
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const dir = mkdtempSync(join(tmpdir(), 'floor-small-'));
  const redis = await startRedis({ dataDir: join(dir, 'redis') });
  const registry = await startRegistry({ dataDir: join(dir, 'registry') });
  try {
    const f = await measureSmallFloor(redis.url, registry.url, Number(process.env.FLOOR_RUNS ?? 2000));
    console.log(`one small image: ${f.perImage.toFixed(2)} ms of CPU (${describeSmallFloor(f)})`);
  } finally {
    await registry.stop();
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
