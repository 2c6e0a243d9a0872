import { describe, expect, it } from 'vitest';
import {
  collectMetrics,
  Counter,
  escapeHelp,
  escapeLabelValue,
  formatValue,
  Histogram,
  ImporterMetrics,
  IMPORT_DURATION_BUCKETS,
  metrics,
  renderFamily,
} from '../../src/api/metrics.ts';
import type { JobCounts } from '../../queues/imports.ts';
import type { Image } from '../../src/images/index.ts';

/** Parses exposition lines `name{labels} value` into [series, value] (enough for our own output). */
function samples(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), line.slice(i + 1));
  }
  return out;
}

describe('exposition format', () => {
  it('escapes label values and help text', () => {
    expect(escapeLabelValue('a\\b"c\nd')).toBe('a\\\\b\\"c\\nd');
    expect(escapeHelp('line1\nback\\slash "quoted"')).toBe('line1\\nback\\\\slash "quoted"');
  });

  it('formats special values', () => {
    expect(formatValue(Infinity)).toBe('+Inf');
    expect(formatValue(-Infinity)).toBe('-Inf');
    expect(formatValue(NaN)).toBe('NaN');
    expect(formatValue(0.5)).toBe('0.5');
    expect(formatValue(12)).toBe('12');
  });

  it('writes HELP and TYPE before the samples', () => {
    const text = renderFamily('x_total', 'Some "help"\nmore', 'counter', [{ labels: { a: 'q"' }, value: 3 }]);
    expect(text).toBe('# HELP x_total Some "help"\\nmore\n# TYPE x_total counter\nx_total{a="q\\""} 3\n');
  });
});

describe('Counter', () => {
  it('adds up per label set and only goes up', () => {
    const c = new Counter('fails_total', 'Failures.', ['reason']);
    c.inc({ reason: 'a' });
    c.inc({ reason: 'a' }, 2);
    c.inc({ reason: 'b\n' });
    expect(c.get({ reason: 'a' })).toBe(3);
    expect(() => c.inc({ reason: 'a' }, -1)).toThrow(RangeError);
    const s = samples(c.render());
    expect(s.get('fails_total{reason="a"}')).toBe('3');
    expect(s.get('fails_total{reason="b\\n"}')).toBe('1');
  });

  it('renders 0 before the first increment when it has no labels', () => {
    const c = new Counter('bytes_total', 'Bytes.');
    expect(c.render()).toContain('\nbytes_total 0\n');
    c.inc(10);
    c.inc();
    expect(c.get()).toBe(11);
  });

  it('rejects invalid names', () => {
    expect(() => new Counter('bad-name', 'x')).toThrow(TypeError);
    expect(() => new Counter('ok_total', 'x', ['le'])).toThrow(TypeError);
    expect(() => new Counter('ok_total', 'x', ['__x'])).toThrow(TypeError);
  });
});

describe('Histogram', () => {
  it('renders cumulative buckets, +Inf, sum and count', () => {
    const h = new Histogram('d_seconds', 'Durations.', IMPORT_DURATION_BUCKETS);
    for (const v of [0.5, 1, 3, 61, 5000]) h.observe(v);
    const s = samples(h.render());
    expect(s.get('d_seconds_bucket{le="1"}')).toBe('2');
    expect(s.get('d_seconds_bucket{le="5"}')).toBe('3');
    expect(s.get('d_seconds_bucket{le="15"}')).toBe('3');
    expect(s.get('d_seconds_bucket{le="60"}')).toBe('3');
    expect(s.get('d_seconds_bucket{le="300"}')).toBe('4');
    expect(s.get('d_seconds_bucket{le="3600"}')).toBe('4');
    expect(s.get('d_seconds_bucket{le="+Inf"}')).toBe('5');
    expect(s.get('d_seconds_sum')).toBe(String(0.5 + 1 + 3 + 61 + 5000));
    expect(s.get('d_seconds_count')).toBe('5');
    expect(h.render()).toContain('# TYPE d_seconds histogram\n');
  });

  it('times with startTimer', () => {
    const h = new Histogram('t_seconds', 'T.', [1]);
    const stop = h.startTimer();
    expect(stop()).toBeLessThan(1);
    expect(h.snapshot().count).toBe(1);
  });
});

describe('collectMetrics', () => {
  const counts: JobCounts = { waiting: 2, active: 1, delayed: 0, completed: 5, failed: 1, prioritized: 1 };
  const image = (kind: Image['kind'], phase: Image['status']['phase']) => ({ kind, status: { phase } }) as Image;

  it('reports job states, image phases (zeros included) and the recorded series', async () => {
    const registry = new ImporterMetrics();
    registry.bytesImported.inc(100);
    const text = await collectMetrics({
      queue: { counts: async () => counts },
      store: {
        list: async (kind) =>
          kind === 'ClusterVirtualImage' ? [image(kind, 'Ready'), image(kind, 'Ready'), image(kind, 'Failed')] : [image(kind, 'Pending')],
      },
      registry,
    });
    const s = samples(text);
    expect(s.get('dvcr_importer_jobs{state="waiting"}')).toBe('3');
    expect(s.get('dvcr_importer_jobs{state="completed"}')).toBe('5');
    expect(s.get('dvcr_importer_images{kind="ClusterVirtualImage",phase="Ready"}')).toBe('2');
    expect(s.get('dvcr_importer_images{kind="ClusterVirtualImage",phase="Failed"}')).toBe('1');
    expect(s.get('dvcr_importer_images{kind="ClusterVirtualImage",phase="Pending"}')).toBe('0');
    expect(s.get('dvcr_importer_images{kind="VirtualImage",phase="Pending"}')).toBe('1');
    expect(s.get('dvcr_importer_bytes_imported_total')).toBe('100');
    expect(s.get('dvcr_importer_import_duration_seconds_count')).toBe('0');
    // Every family has exactly one HELP and one TYPE line.
    const types = text.split('\n').filter((l) => l.startsWith('# TYPE '));
    expect(new Set(types).size).toBe(types.length);
  });

  it('still answers when a source fails, and says which', async () => {
    const text = await collectMetrics({
      queue: { counts: async () => Promise.reject(new Error('redis down')) },
      store: { list: async () => [] },
      registry: new ImporterMetrics(),
    });
    expect(text).not.toContain('dvcr_importer_jobs{');
    expect(text).toContain('dvcr_importer_collector_up{collector="jobs"} 0');
    expect(text).toContain('dvcr_importer_collector_up{collector="images"} 1');
  });

  it('uses the process-wide registry by default', async () => {
    expect(metrics).toBeInstanceOf(ImporterMetrics);
    const text = await collectMetrics({ queue: { counts: async () => counts }, store: { list: async () => [] } });
    expect(text).toContain('# TYPE dvcr_importer_import_failures_total counter');
  });
});
