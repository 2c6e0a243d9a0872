/**
 * A source registry answering 429 with a Retry-After longer than a request may wait by itself
 * (RATE_LIMIT_WAIT): the import is delayed through the queue without spending an attempt. With
 * IMPORT_ATTEMPTS=1 a spent attempt would fail the image; it ends Ready after the 429s stop.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildImageLayout, makeDataDisk } from '../helpers/fixtures.ts';
import { skopeoCopy } from '../helpers/skopeo.ts';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.ts';
import { startImportStack, type ImportStack } from '../helpers/import-stack.ts';

describe('rate limits through the worker', () => {
  let stack: ImportStack;
  let proxy: FaultProxy;
  let work: string;

  beforeAll(async () => {
    stack = await startImportStack({ importAttempts: 1, rateLimitWait: '200ms' });
    proxy = await startFaultProxy(`http://${stack.registryHostPort}`);
    stack.config.insecureRegistries.push(proxy.hostPort);
    work = mkdtempSync(join(tmpdir(), 'ratelimit-'));
    stack.startWorker({ threads: 1 });
  });
  afterAll(async () => {
    await stack?.close();
    await proxy?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('429s past the in-request budget delay the job without spending its only attempt; it ends Ready', async () => {
    const disk = makeDataDisk(work, 'rl', 1, 'raw');
    const layout = await buildImageLayout(join(work, 'layout'), { layers: [{ files: [{ path: 'disk/d.img', fromFile: disk }] }] });
    await skopeoCopy(layout.ref, `docker://${stack.registryHostPort}/src/ratelimited:v1`);
    const throttle = proxy.addFault({ method: 'GET', path: /\/v2\/src\/ratelimited\/manifests\//, status: 429, retryAfter: '1', times: 2 });
    await stack.service.apply({
      apiVersion: 'virtualization.deckhouse.io/v1alpha2',
      kind: 'ClusterVirtualImage',
      metadata: { name: 'ratelimited' },
      spec: { dataSource: { type: 'ContainerImage', containerImage: { image: `${proxy.hostPort}/src/ratelimited:v1` } } },
    });
    const img = await stack.waitFor('ClusterVirtualImage', 'ratelimited', ['Ready', 'Failed'], 60_000);
    expect(throttle.hits).toBe(2);
    expect(img.status.phase).toBe('Ready');
    expect(img.status.attempts).toBe(1);
  });
});
