import { describe, expect, it, inject } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, startRedis, startRegistry } from '../../src/stack/index.ts';

describe('local stack', () => {
  it('global setup provides a registry and a redis that answer', async () => {
    const res = await fetch(`${inject('registryUrl')}/v2/`);
    expect(res.status).toBe(200);
    expect(inject('redisUrl')).toMatch(/^redis:\/\/127\.0\.0\.1:\d+$/);
  });

  it('starts and stops redis and a registry by PID on free ports', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'stack-'));
    try {
      const [redis, reg] = await Promise.all([
        startRedis({ dataDir: join(dir, 'r') }),
        startRegistry({ dataDir: join(dir, 'g') }),
      ]);
      expect(redis.port).not.toBe(reg.port);
      expect(() => process.kill(redis.pid, 0)).not.toThrow();
      expect((await fetch(`${reg.url}/v2/`)).status).toBe(200);
      await Promise.all([redis.stop(), reg.stop()]);
      expect(() => process.kill(redis.pid, 0)).toThrow();
      expect(() => process.kill(reg.pid, 0)).toThrow();
      await expect(fetch(`${reg.url}/v2/`)).rejects.toThrow();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('fails with the service log when the port is taken', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'stack-'));
    const port = await freePort();
    const first = await startRedis({ dataDir: join(dir, 'a'), port });
    try {
      await expect(startRedis({ dataDir: join(dir, 'b'), port })).rejects.toThrow(/redis-server on 127\.0\.0\.1:\d+/);
    } finally {
      await first.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
