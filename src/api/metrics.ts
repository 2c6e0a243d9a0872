/**
 * Prometheus metrics without a client library: a small registry of counters and histograms that any module of
 * the process records into (the import worker when it runs inside `dvcr-importer up`), and the text exposition
 * format (version 0.0.4) written by hand, with HELP/TYPE lines and escaped label values.
 *
 * Two kinds of series:
 * - recorded: {@link ImporterMetrics} (`metrics`, the process-wide instance) — bytes imported, failures by reason,
 *   import durations. Update them where the thing happens: `metrics.bytesImported.inc(n)`,
 *   `metrics.importFailures.inc({ reason: 'ChecksumMismatch' })`, `metrics.importDuration.observe(seconds)`.
 * - collected at scrape time: {@link collectMetrics} reads job counts from the queue and image phases from the
 *   store (`dvcr_importer_jobs{state}`, `dvcr_importer_images{kind,phase}`).
 *
 * This module imports nothing from fastify or bullmq, so a worker process can use it on its own.
 */
import type { JobCounts } from '../../queues/imports.ts';
import { IMAGE_KINDS, IMAGE_PHASES, type Image, type ImageKind, type StatsSnapshot } from '../images/index.ts';

export const CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** Label values as written inside `"..."`: backslash, double quote and line feed escaped. */
export function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** HELP text: backslash and line feed escaped (quotes are literal there). */
export function escapeHelp(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

/** A sample value as Prometheus parses it (`+Inf`, `-Inf`, `NaN`, Go float syntax). */
export function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

export type LabelSet = Readonly<Record<string, string>>;

function formatLabels(labels: LabelSet | undefined, extra?: [string, string]): string {
  const parts: string[] = [];
  for (const [k, v] of Object.entries(labels ?? {})) parts.push(`${k}="${escapeLabelValue(v)}"`);
  if (extra) parts.push(`${extra[0]}="${escapeLabelValue(extra[1])}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}

function checkNames(name: string, labelNames: readonly string[]): void {
  if (!METRIC_NAME.test(name)) throw new TypeError(`invalid metric name "${name}"`);
  for (const l of labelNames) {
    if (!LABEL_NAME.test(l) || l.startsWith('__') || l === 'le') throw new TypeError(`invalid label name "${l}" on ${name}`);
  }
}

/** One metric family in the exposition: HELP, TYPE, then its samples. */
export function renderFamily(
  name: string,
  help: string,
  type: 'counter' | 'gauge' | 'histogram',
  samples: ReadonlyArray<{ suffix?: string; labels?: LabelSet; le?: string; value: number }>,
): string {
  let out = `# HELP ${name} ${escapeHelp(help)}\n# TYPE ${name} ${type}\n`;
  for (const s of samples) {
    out += `${name}${s.suffix ?? ''}${formatLabels(s.labels, s.le === undefined ? undefined : ['le', s.le])} ${formatValue(s.value)}\n`;
  }
  return out;
}

/** Arguments of `inc`: `(by?)` for a metric without labels, `(labels, by?)` for one with labels. */
type IncArgs<L extends string> = [L] extends [never] ? [by?: number] : [labels: Record<L, string>, by?: number];

interface Collector {
  readonly name: string;
  render(): string;
}

/** Only goes up (resets with the process). */
export class Counter<L extends string = never> implements Collector {
  private readonly values = new Map<string, { labels: LabelSet; value: number }>();

  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly L[] = [],
  ) {
    checkNames(name, labelNames);
  }

  inc(...args: IncArgs<L>): void {
    const [labels, by] = (this.labelNames.length ? args : [{}, args[0]]) as [Record<string, string>, number | undefined];
    const amount = by ?? 1;
    if (!(amount >= 0) || !Number.isFinite(amount)) throw new RangeError(`${this.name}: a counter only goes up (got ${amount})`);
    const key = this.key(labels);
    const cur = this.values.get(key);
    if (cur) cur.value += amount;
    else this.values.set(key, { labels: this.pick(labels), value: amount });
  }

  /** Current value (tests, dashboards). */
  get(...args: [L] extends [never] ? [] : [labels: Record<L, string>]): number {
    const labels = (args[0] ?? {}) as Record<string, string>;
    return this.values.get(this.key(labels))?.value ?? 0;
  }

  private pick(labels: Record<string, string>): LabelSet {
    const out: Record<string, string> = {};
    for (const l of this.labelNames) {
      const v = labels[l];
      if (typeof v !== 'string') throw new TypeError(`${this.name}: label "${l}" is required`);
      out[l] = v;
    }
    return out;
  }

  private key(labels: Record<string, string>): string {
    return JSON.stringify(this.labelNames.map((l) => labels[l] ?? ''));
  }

  render(): string {
    const samples = [...this.values.values()].map((s) => ({ labels: s.labels, value: s.value }));
    if (this.labelNames.length === 0 && samples.length === 0) samples.push({ labels: {}, value: 0 });
    return renderFamily(this.name, this.help, 'counter', samples);
  }
}

/** Observations counted into cumulative buckets (upper bounds, ascending), plus their sum and count. */
export class Histogram implements Collector {
  readonly buckets: readonly number[];
  private readonly counts: number[];
  private sum = 0;
  private count = 0;

  constructor(
    readonly name: string,
    readonly help: string,
    buckets: readonly number[],
  ) {
    checkNames(name, []);
    const sorted = [...new Set(buckets)].filter((b) => Number.isFinite(b)).sort((a, b) => a - b);
    if (sorted.length === 0) throw new TypeError(`${name}: at least one finite bucket is needed`);
    this.buckets = sorted;
    this.counts = sorted.map(() => 0);
  }

  observe(value: number): void {
    if (Number.isNaN(value)) return;
    this.sum += value;
    this.count++;
    // Per-bucket (not cumulative) counts; render() accumulates.
    const i = this.buckets.findIndex((b) => value <= b);
    if (i >= 0) this.counts[i] = (this.counts[i] ?? 0) + 1;
  }

  /** Starts a timer; the returned function observes the seconds elapsed and returns them. */
  startTimer(): () => number {
    const start = process.hrtime.bigint();
    return () => {
      const seconds = Number(process.hrtime.bigint() - start) / 1e9;
      this.observe(seconds);
      return seconds;
    };
  }

  /** Replaces the state with a snapshot (cumulative bucket counts), e.g. one read from shared storage. */
  load(snap: { buckets: ReadonlyArray<readonly [number, number]>; sum: number; count: number }): void {
    let prev = 0;
    this.counts.fill(0);
    for (const [bound, cumulative] of snap.buckets) {
      const i = this.buckets.indexOf(bound);
      if (i >= 0) this.counts[i] = cumulative - prev;
      prev = cumulative;
    }
    this.sum = snap.sum;
    this.count = snap.count;
  }

  snapshot(): { buckets: Array<[number, number]>; sum: number; count: number } {
    let acc = 0;
    return {
      buckets: this.buckets.map((b, i) => [b, (acc += this.counts[i] ?? 0)] as [number, number]),
      sum: this.sum,
      count: this.count,
    };
  }

  render(): string {
    const snap = this.snapshot();
    const samples: Array<{ suffix: string; le?: string; value: number }> = snap.buckets.map(([b, n]) => ({
      suffix: '_bucket',
      le: formatValue(b),
      value: n,
    }));
    samples.push({ suffix: '_bucket', le: '+Inf', value: snap.count });
    samples.push({ suffix: '_sum', value: snap.sum });
    samples.push({ suffix: '_count', value: snap.count });
    return renderFamily(this.name, this.help, 'histogram', samples);
  }
}

export const IMPORT_DURATION_BUCKETS = [1, 5, 15, 60, 300, 900, 3600] as const;

/** The series the importer records. One instance per process: {@link metrics}. */
export class ImporterMetrics {
  /** Bytes written to DVCR by finished imports (the stored disk file). */
  readonly bytesImported = new Counter('dvcr_importer_bytes_imported_total', 'Bytes of disk images stored in DVCR by completed imports.');
  /** Imports that failed for good, by failure reason (`status.failure.reason`). */
  readonly importFailures = new Counter('dvcr_importer_import_failures_total', 'Imports that failed for good, by failure reason.', ['reason']);
  /** Wall-clock seconds of a successful import, from the first attempt's start to Ready. */
  readonly importDuration = new Histogram(
    'dvcr_importer_import_duration_seconds',
    'Duration of successful imports in seconds.',
    IMPORT_DURATION_BUCKETS,
  );

  render(): string {
    return [this.bytesImported, this.importFailures, this.importDuration].map((c) => c.render()).join('');
  }
}

/** The process-wide registry: the API's /metrics renders it when no shared statistics are configured. */
export const metrics = new ImporterMetrics();

/** The importer series from the pool-wide statistics that every worker records in Redis. */
export function importerMetricsFrom(snap: StatsSnapshot): ImporterMetrics {
  const m = new ImporterMetrics();
  m.bytesImported.inc(snap.bytesImported);
  for (const [reason, n] of Object.entries(snap.failures)) m.importFailures.inc({ reason }, n);
  m.importDuration.load(snap.duration);
  return m;
}

export const JOB_STATES = ['waiting', 'active', 'delayed', 'completed', 'failed'] as const;

export interface MetricsSources {
  queue: { counts(): Promise<JobCounts> };
  store: { list(kind: ImageKind): Promise<Image[]> };
  registry?: ImporterMetrics;
  /** Pool-wide statistics (Redis); when set they are rendered instead of `registry`. */
  stats?: { snapshot(): Promise<StatsSnapshot> };
}

/**
 * The whole exposition: collected gauges (jobs, images), then the recorded series. A source that cannot be
 * read (Redis away) leaves its gauge out and sets `dvcr_importer_collector_up{collector}` to 0, so a scrape
 * still answers and says what is missing.
 */
export async function collectMetrics(src: MetricsSources): Promise<string> {
  const [jobs, images, stats] = await Promise.allSettled([
    src.queue.counts(),
    countImages(src.store),
    src.stats ? src.stats.snapshot() : Promise.resolve(undefined),
  ]);
  let out = '';
  if (jobs.status === 'fulfilled') {
    const c = jobs.value;
    // BullMQ keeps prioritized jobs apart from waiting ones; to an operator both are waiting.
    const value: Record<(typeof JOB_STATES)[number], number> = {
      waiting: c.waiting + c.prioritized,
      active: c.active,
      delayed: c.delayed,
      completed: c.completed,
      failed: c.failed,
    };
    out += renderFamily(
      'dvcr_importer_jobs',
      'Import jobs in the queue by state.',
      'gauge',
      JOB_STATES.map((state) => ({ labels: { state }, value: value[state] })),
    );
  }
  if (images.status === 'fulfilled') {
    out += renderFamily(
      'dvcr_importer_images',
      'Image resources by kind and phase.',
      'gauge',
      IMAGE_KINDS.flatMap((kind) =>
        IMAGE_PHASES.map((phase) => ({ labels: { kind, phase }, value: images.value.get(`${kind}/${phase}`) ?? 0 })),
      ),
    );
  }
  out += renderFamily('dvcr_importer_collector_up', 'Whether the last scrape could read this source (1) or not (0).', 'gauge', [
    { labels: { collector: 'jobs' }, value: jobs.status === 'fulfilled' ? 1 : 0 },
    { labels: { collector: 'images' }, value: images.status === 'fulfilled' ? 1 : 0 },
    ...(src.stats ? [{ labels: { collector: 'stats' }, value: stats.status === 'fulfilled' ? 1 : 0 }] : []),
  ]);
  if (src.stats) {
    if (stats.status === 'fulfilled' && stats.value) out += importerMetricsFrom(stats.value).render();
  } else {
    out += (src.registry ?? metrics).render();
  }
  return out;
}

async function countImages(store: MetricsSources['store']): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  for (const kind of IMAGE_KINDS) {
    for (const image of await store.list(kind)) {
      const key = `${kind}/${image.status.phase}`;
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
  }
  return counts;
}
