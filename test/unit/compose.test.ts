/** docker-compose.yml cannot run here (no Docker engine): keep it consistent with the code instead. */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { ENV } from '../../src/config.ts';

const root = new URL('../../', import.meta.url);

describe('docker-compose.yml and Dockerfile', () => {
  const compose = parse(readFileSync(new URL('docker-compose.yml', root), 'utf8')) as {
    services: Record<string, { command?: string[]; environment?: Record<string, string>; build?: string; image?: string }>;
  };

  it('uses only configuration variables the code reads', () => {
    const known = new Set(Object.values(ENV));
    for (const [name, svc] of Object.entries(compose.services)) {
      if (!svc.build) continue;
      for (const key of Object.keys(svc.environment ?? {})) expect(known, `${name}: ${key}`).toContain(key);
    }
  });

  it('runs the worker and the API with commands the CLI has, against Redis with AOF and noeviction', () => {
    expect(compose.services.worker?.command?.[0]).toBe('worker');
    expect(compose.services.api?.command?.slice(0, 2)).toEqual(['serve', '--listen']);
    expect(compose.services.redis?.command).toEqual(expect.arrayContaining(['--appendonly', 'yes', '--maxmemory-policy', 'noeviction']));
    expect(compose.services.dvcr?.image).toMatch(/^registry:2/);
  });

  it('builds an image that holds every source folder the entry point imports', () => {
    const dockerfile = readFileSync(new URL('Dockerfile', root), 'utf8');
    for (const dir of ['bin', 'src', 'queues', 'workers']) expect(dockerfile).toMatch(new RegExp(`COPY ${dir} \\./${dir}`));
    expect(dockerfile).toMatch(/qemu-utils/);
  });
});
