import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  getCondition,
  imageStatusSchema,
  isSpecFrozen,
  onAttemptFailed,
  onCreated,
  onDatasourceNotReady,
  onDatasourceReady,
  onFailed,
  onImageFound,
  onImageLost,
  onProgress,
  onProvisioningStarted,
  onReady,
  onSpecChanged,
  onTerminating,
  onWaitForUpload,
  progressValue,
  setCondition,
  stampGeneration,
  type ImageStatus,
  type ReadyResult,
} from '../../src/images/index.ts';

const T0 = new Date('2024-05-01T10:00:00.123Z');
const T1 = new Date('2024-05-01T10:00:05Z');
const T2 = new Date('2024-05-01T10:00:09Z');
const URL = 'dvcr.example/cvi/ubuntu:6f1c6c1e-0000-4000-8000-000000000001';
const READY: ReadyResult = {
  registryURL: URL,
  format: 'qcow2',
  storedBytes: 299_892_736,
  unpackedBytes: 2_684_354_560,
  sha256: 'A'.repeat(64),
  avgBps: 2_202_009,
};

function valid(s: ImageStatus): ImageStatus {
  expect(imageStatusSchema.safeParse(s).success, JSON.stringify(imageStatusSchema.safeParse(s).error?.issues)).toBe(true);
  return s;
}

function provisioning(): ImageStatus {
  return onProvisioningStarted(onCreated({ now: T0 }), { registryURL: URL }, { now: T1 });
}

describe('conditions', () => {
  it('lastTransitionTime moves only when status changes', () => {
    let c = setCondition([], { type: 'Ready', status: 'False', reason: 'Provisioning', message: 'a' }, T0);
    expect(c).toEqual([{ type: 'Ready', status: 'False', reason: 'Provisioning', message: 'a', lastTransitionTime: '2024-05-01T10:00:00Z' }]);
    c = setCondition(c, { type: 'Ready', status: 'False', reason: 'ProvisioningFailed', message: 'b' }, T1);
    expect(c[0]?.lastTransitionTime).toBe('2024-05-01T10:00:00Z');
    expect(c[0]?.reason).toBe('ProvisioningFailed');
    c = setCondition(c, { type: 'Ready', status: 'True', reason: 'Ready', message: '' }, T2);
    expect(c[0]?.lastTransitionTime).toBe('2024-05-01T10:00:09Z');
  });

  it('keeps order and other conditions', () => {
    let c = setCondition([], { type: 'DatasourceReady', status: 'True', reason: 'DatasourceReady', message: '' }, T0);
    c = setCondition(c, { type: 'Ready', status: 'False', reason: 'Provisioning', message: '' }, T0);
    c = setCondition(c, { type: 'DatasourceReady', status: 'False', reason: 'ImageNotReady', message: 'x' }, T1);
    expect(c.map((x) => `${x.type}=${x.status}/${x.reason}`)).toEqual(['DatasourceReady=False/ImageNotReady', 'Ready=False/Provisioning']);
  });

  it('stampGeneration sets observedGeneration on the status and every condition', () => {
    const s = stampGeneration(provisioning(), 3);
    expect(s.observedGeneration).toBe(3);
    expect(s.conditions.every((c) => c.observedGeneration === 3)).toBe(true);
    valid(s);
  });
});

describe('lifecycle', () => {
  it('created: Pending, not started, cdrom false, no progress (blank in the table)', () => {
    const s = valid(onCreated({ now: T0 }));
    expect(s).toEqual({
      phase: 'Pending',
      cdrom: false,
      conditions: [
        {
          type: 'Ready',
          status: 'False',
          reason: 'ProvisioningNotStarted',
          message: 'Waiting for an import worker to start.',
          lastTransitionTime: '2024-05-01T10:00:00Z',
        },
      ],
      attempts: 0,
    });
  });

  it('HTTP happy path: Pending -> Provisioning "0%", "0.0%" .. "28.2%" .. "100.0%" -> Ready "100%"', () => {
    let s = onCreated({ now: T0 });
    s = valid(onDatasourceReady(s, { now: T0 }));
    s = valid(onProvisioningStarted(s, { registryURL: URL }, { now: T1 }));
    expect(s.phase).toBe('Provisioning');
    expect(s.progress).toBe('0%');
    expect(s.attempts).toBe(1);
    expect(s.target).toEqual({ registryURL: URL });
    expect(getCondition(s, 'Ready')).toMatchObject({ status: 'False', reason: 'Provisioning', message: 'Import is in the process of provisioning to DVCR.' });
    expect(getCondition(s, 'DatasourceReady')).toMatchObject({ status: 'True', reason: 'DatasourceReady' });

    const seen: string[] = [];
    for (const done of [0, 282, 665, 1000, 1000]) {
      s = valid(onProgress(s, { bytesDone: done, bytesTotal: 1000, currentBps: 3_000_000, avgBps: 2_202_009 }, { now: T1 }));
      seen.push(s.progress ?? '');
    }
    expect(seen).toEqual(['0.0%', '28.2%', '66.5%', '100.0%', '100.0%']);
    expect(s.phase).toBe('Provisioning');
    expect(s.downloadSpeed).toEqual({ avg: '2.1Mi/s', avgBytes: '2202009', current: '2.9Mi/s', currentBytes: '3000000' });

    s = valid(onReady(s, READY, { now: T2 }));
    expect(s).toMatchObject({
      phase: 'Ready',
      progress: '100%',
      format: 'qcow2',
      cdrom: false,
      size: { stored: '286Mi', storedBytes: '299892736', unpacked: '2.5Gi', unpackedBytes: '2684354560' },
      target: { registryURL: URL },
      checksums: { sha256: 'a'.repeat(64) },
      downloadSpeed: { avg: '2.1Mi/s', avgBytes: '2202009' },
    });
    expect(s.downloadSpeed).not.toHaveProperty('current');
    expect(getCondition(s, 'Ready')).toEqual({
      type: 'Ready',
      status: 'True',
      reason: 'Ready',
      message: '',
      lastTransitionTime: '2024-05-01T10:00:09Z',
    });
    expect(isSpecFrozen(s)).toBe(true);
  });

  it('cdrom is true exactly for iso', () => {
    expect(onReady(provisioning(), { ...READY, format: 'iso' }).cdrom).toBe(true);
    for (const format of ['raw', 'vmdk', 'vdi', 'vhd', 'vhdx', 'qcow2'] as const) {
      expect(onReady(provisioning(), { ...READY, format }).cdrom).toBe(false);
    }
  });

  it('originalFormat (ours) is set when the disk was converted, and absent otherwise', () => {
    const converted = valid(onReady(provisioning(), { ...READY, format: 'qcow2', originalFormat: 'raw' }));
    expect(converted).toMatchObject({ format: 'qcow2', originalFormat: 'raw' });
    expect(valid(onReady(provisioning(), READY)).originalFormat).toBeUndefined();
  });

  it('Ready keeps the last average speed when the result has none', () => {
    let s = onProgress(provisioning(), { bytesDone: 5, bytesTotal: 10, currentBps: 10, avgBps: 2048 });
    s = onReady(s, { ...READY, avgBps: undefined });
    expect(s.downloadSpeed).toEqual({ avg: '2Ki/s', avgBytes: '2048' });
  });

  it('progress never goes down: a retry keeps the highest value', () => {
    let s = onProgress(provisioning(), { bytesDone: 600, bytesTotal: 1000, currentBps: 1, avgBps: 1 });
    expect(s.progress).toBe('60.0%');
    s = onAttemptFailed(s, { reason: 'ECONNRESET', message: 'connection reset by peer', retryable: true }, { retryInMs: 8000 });
    expect(s.progress).toBe('60.0%');
    expect(getCondition(s, 'Ready')?.message).toBe('Attempt 1 failed: connection reset by peer; retrying in 8s.');
    expect(s.failure).toEqual({ reason: 'ECONNRESET', message: 'connection reset by peer', retryable: true });
    s = onProvisioningStarted(s, { attempt: 2 });
    expect(s.attempts).toBe(2);
    expect(s.progress).toBe('60.0%');
    s = onProgress(s, { bytesDone: 100, bytesTotal: 1000, currentBps: 1, avgBps: 1 });
    expect(s.progress).toBe('60.0%');
    s = onProgress(s, { bytesDone: 700, bytesTotal: 1000, currentBps: 1, avgBps: 1 });
    expect(s.progress).toBe('70.0%');
  });

  it('property: over any sequence of reports progress is monotonic and never "100%" before Ready', () => {
    const report = fc.record({
      bytesDone: fc.integer({ min: 0, max: 2000 }),
      bytesTotal: fc.option(fc.integer({ min: 1, max: 2000 }), { nil: undefined }),
      currentBps: fc.nat(),
      avgBps: fc.nat(),
    });
    fc.assert(
      fc.property(fc.array(fc.oneof(report, fc.constant('retry' as const)), { maxLength: 40 }), (events) => {
        let s = provisioning();
        let last = progressValue(s);
        for (const e of events) {
          s = e === 'retry' ? onProvisioningStarted(onAttemptFailed(s, { reason: 'X', message: 'x', retryable: true })) : onProgress(s, e);
          const v = progressValue(s);
          if (v < last) return false;
          if (s.progress === '100%') return false;
          if (s.progress !== '0%' && !/^\d{1,3}\.\d%$/.test(s.progress ?? '')) return false;
          last = v;
        }
        return onReady(s, READY).progress === '100%';
      }),
    );
  });

  it('without a total only the speed changes', () => {
    const s = onProgress(provisioning(), { bytesDone: 12345, currentBps: 1024, avgBps: 1024 });
    expect(s.progress).toBe('0%');
    expect(s.downloadSpeed?.current).toBe('1Ki/s');
  });

  it('a report in Pending moves to Provisioning; after Ready, Failed or Terminating it is ignored', () => {
    const pending = onCreated({ now: T0 });
    const moved = onProgress(pending, { bytesDone: 1, bytesTotal: 4, currentBps: 1, avgBps: 1 });
    expect(moved.phase).toBe('Provisioning');
    expect(moved.progress).toBe('25.0%');
    const ready = onReady(moved, READY);
    expect(onProgress(ready, { bytesDone: 1, bytesTotal: 4, currentBps: 1, avgBps: 1 })).toBe(ready);
    const failed = onFailed(moved, { reason: 'HTTPNotFound', message: 'HTTP 404', retryable: false });
    expect(onProgress(failed, { bytesDone: 1, bytesTotal: 4, currentBps: 1, avgBps: 1 })).toBe(failed);
    const term = onTerminating(moved);
    expect(onProgress(term, { bytesDone: 1, bytesTotal: 4, currentBps: 1, avgBps: 1 })).toBe(term);
  });

  it('Failed: permanent -> ProvisioningFailedTerminally, transient -> ProvisioningFailed, progress kept', () => {
    const s = onProgress(provisioning(), { bytesDone: 1, bytesTotal: 2, currentBps: 5, avgBps: 4 });
    const perm = valid(
      onFailed(s, { reason: 'ChecksumMismatch', message: 'sha256 of the source is 00ab..., the spec wants 11cd...', retryable: false }, { now: T2 }),
    );
    expect(perm.phase).toBe('Failed');
    expect(perm.progress).toBe('50.0%');
    expect(perm.downloadSpeed).toEqual({ avg: '4B/s', avgBytes: '4' });
    expect(getCondition(perm, 'Ready')).toMatchObject({
      status: 'False',
      reason: 'ProvisioningFailedTerminally',
      message: 'sha256 of the source is 00ab..., the spec wants 11cd...',
    });
    expect(perm.failure).toEqual({ reason: 'ChecksumMismatch', message: 'sha256 of the source is 00ab..., the spec wants 11cd...', retryable: false });
    const transient = onFailed(s, { reason: 'ETIMEDOUT', message: 'connect timed out after 5 attempts', retryable: true });
    expect(getCondition(transient, 'Ready')?.reason).toBe('ProvisioningFailed');
    expect(onFailed(onReady(s, READY), { reason: 'X', message: 'x', retryable: false }).phase).toBe('Ready');
  });

  it('Failed can start again (a new attempt), Ready clears the failure', () => {
    const failed = onFailed(provisioning(), { reason: 'ETIMEDOUT', message: 't', retryable: true });
    const again = onProvisioningStarted(failed, { attempt: 3 });
    expect(again.phase).toBe('Provisioning');
    expect(again.attempts).toBe(3);
    const ready = onReady(again, READY);
    expect(ready).not.toHaveProperty('failure');
  });

  it('Upload: Pending -> WaitForUserUpload (URLs) -> Provisioning -> interrupted -> waiting again -> Ready', () => {
    const urls = { external: 'https://virtualization.example.com/upload/g2Ou', inCluster: 'http://10.222.165.239/upload' };
    let s = valid(onWaitForUpload(onCreated({ now: T0 }), urls, { now: T1 }));
    expect(s.phase).toBe('WaitForUserUpload');
    expect(s.imageUploadURLs).toEqual(urls);
    expect(getCondition(s, 'Ready')).toMatchObject({ status: 'False', reason: 'WaitForUserUpload', message: 'Waiting for the user upload.' });
    s = onProgress(s, { bytesDone: 30, bytesTotal: 100, currentBps: 1, avgBps: 1 });
    expect(s.phase).toBe('Provisioning');
    expect(s.imageUploadURLs).toEqual(urls);
    s = onWaitForUpload(s, urls);
    expect(s.phase).toBe('WaitForUserUpload');
    expect(s.progress).toBe('30.0%');
    s = valid(onReady(onProgress(s, { bytesDone: 100, bytesTotal: 100, currentBps: 1, avgBps: 1 }), READY));
    expect(s.phase).toBe('Ready');
    expect(s).not.toHaveProperty('imageUploadURLs');
  });

  it('Upload timeout: Failed with reason WaitForUserUploadTimeout, URLs gone', () => {
    const waiting = onWaitForUpload(onCreated(), { external: 'https://x/upload/a' });
    const s = valid(onFailed(waiting, { reason: 'WaitForUserUploadTimeout', message: 'No upload started within 10m.', retryable: false }));
    expect(s.phase).toBe('Failed');
    expect(getCondition(s, 'Ready')?.reason).toBe('WaitForUserUploadTimeout');
    expect(s).not.toHaveProperty('imageUploadURLs');
  });

  it('DatasourceReady False keeps the image Pending', () => {
    const s = valid(
      onDatasourceNotReady(onCreated(), { reason: 'ImageNotReady', message: 'VirtualImage "team-a/src" is not Ready yet.' }),
    );
    expect(s.phase).toBe('Pending');
    expect(getCondition(s, 'DatasourceReady')).toMatchObject({ status: 'False', reason: 'ImageNotReady' });
  });

  it('spec change before Ready: back to Pending, everything about the old source gone', () => {
    let s = onProgress(provisioning(), { bytesDone: 9, bytesTotal: 10, currentBps: 1, avgBps: 1 });
    s = stampGeneration(s, 1);
    const reset = valid(onSpecChanged(s, 2, { now: T2 }));
    expect(reset.phase).toBe('Pending');
    expect(reset).not.toHaveProperty('progress');
    expect(reset).not.toHaveProperty('target');
    expect(reset).not.toHaveProperty('downloadSpeed');
    expect(reset.attempts).toBe(0);
    expect(getCondition(reset, 'DatasourceReady')).toBeUndefined();
    expect(getCondition(reset, 'Ready')).toMatchObject({
      status: 'False',
      reason: 'ProvisioningNotStarted',
      message: 'The spec changed (generation 2): the import starts again.',
    });
    const ready = onReady(s, READY);
    expect(onSpecChanged(ready, 2)).toBe(ready);
  });

  it('Terminating from any phase; then nothing but Terminating', () => {
    const s = valid(onTerminating(onProgress(provisioning(), { bytesDone: 1, bytesTotal: 2, currentBps: 3, avgBps: 3 }), { now: T2 }));
    expect(s.phase).toBe('Terminating');
    expect(getCondition(s, 'Terminating')).toMatchObject({ status: 'True', reason: 'Terminating' });
    expect(s.downloadSpeed).toEqual({ avg: '3B/s', avgBytes: '3' });
    expect(onTerminating(s)).toBe(s);
    expect(onReady(s, READY)).toBe(s);
    expect(onFailed(s, { reason: 'X', message: 'x', retryable: false })).toBe(s);
    expect(onProvisioningStarted(s)).toBe(s);
    expect(onWaitForUpload(s, {})).toBe(s);
    expect(onImageLost(s)).toBe(s);
  });

  it('ImageLost and back', () => {
    const ready = onReady(provisioning(), READY, { now: T1 });
    const lost = valid(onImageLost(ready, { now: T2 }));
    expect(lost.phase).toBe('ImageLost');
    expect(getCondition(lost, 'Ready')).toEqual({
      type: 'Ready',
      status: 'False',
      reason: 'ImageLost',
      message: `Image "${URL}" not found in DVCR.`,
      lastTransitionTime: '2024-05-01T10:00:09Z',
    });
    expect(isSpecFrozen(lost)).toBe(false);
    expect(lost.progress).toBe('100%');
    const found = valid(onImageFound(lost));
    expect(found.phase).toBe('Ready');
    expect(getCondition(found, 'Ready')).toMatchObject({ status: 'True', reason: 'Ready' });
    expect(onImageFound(ready)).toBe(ready);
    expect(onImageLost(provisioning()).phase).toBe('Provisioning');
  });

  it('transitions never mutate their input', () => {
    const s = provisioning();
    const before = JSON.stringify(s);
    onProgress(s, { bytesDone: 1, bytesTotal: 2, currentBps: 1, avgBps: 1 });
    onReady(s, READY);
    onFailed(s, { reason: 'X', message: 'x', retryable: false });
    onTerminating(s);
    onWaitForUpload(s, { external: 'x' });
    onSpecChanged(s, 2);
    expect(JSON.stringify(s)).toBe(before);
  });
});

describe('imageStatusSchema', () => {
  it('rejects fields outside the contract', () => {
    expect(imageStatusSchema.safeParse({ ...onCreated(), phaze: 'x' }).success).toBe(false);
    expect(imageStatusSchema.safeParse({ ...onCreated(), progress: '28.25%' }).success).toBe(false);
  });
});
