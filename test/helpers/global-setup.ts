/**
 * vitest global setup: one redis-server and one registry (no auth) on free loopback ports for the whole run,
 * each with its own temp data folder, stopped by PID at the end. Tests read their addresses with
 * `inject('redisUrl')` / `inject('registryUrl')`. Tests that need special servers (auth, faults, restarts)
 * start their own with the same stack module.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { startRedis, startRegistry, type RedisServer, type RegistryServer } from '../../src/stack/index.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    redisUrl: string;
    registryUrl: string;
    registryHostPort: string;
  }
}

let redis: RedisServer | undefined;
let registry: RegistryServer | undefined;
let root: string | undefined;

export async function setup(project: TestProject): Promise<void> {
  root = mkdtempSync(join(tmpdir(), 'dvcr-importer-test-'));
  [redis, registry] = await Promise.all([
    startRedis({ dataDir: join(root, 'redis') }),
    startRegistry({ dataDir: join(root, 'registry') }),
  ]);
  project.provide('redisUrl', redis.url);
  project.provide('registryUrl', registry.url);
  project.provide('registryHostPort', registry.hostPort);
}

export async function teardown(): Promise<void> {
  await Promise.all([redis?.stop(), registry?.stop()]);
  if (root) rmSync(root, { recursive: true, force: true });
}
