/**
 * Human forms of sizes, speeds and progress exactly as the platform prints them in image status
 * (`"285.9Mi"`, `"2.1Mi/s"`, `"28.2%"`). The byte form follows the platform's humanize rule: IEC units
 * without the trailing B (`Ki`, `Mi`, `Gi`, ...), one decimal rounded half up and dropped when it is zero,
 * plain bytes with a `B` below 1 Ki (`"512B"`); note that rounding can give `"1024Ki"` just below 1 Mi.
 */

const UNITS = ['B', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei'] as const;

/** `"0B"`, `"512B"`, `"2Ki"`, `"285.9Mi"`, `"2.5Gi"`. Fractions are floored; negative and non-finite values give `"0B"`. */
export function formatBytes(bytes: number): string {
  const n = Number.isFinite(bytes) && bytes > 0 ? Math.floor(bytes) : 0;
  if (n < 10) return `${n}B`;
  let e = 0;
  let scale = 1;
  while (e < UNITS.length - 1 && n >= scale * 1024) {
    scale *= 1024;
    e++;
  }
  const val = Math.floor((n / scale) * 10 + 0.5) / 10;
  const unit = UNITS[e]!;
  return Number.isInteger(val) ? `${val}${unit}` : `${val.toFixed(1)}${unit}`;
}

/** `"2.1Mi/s"`: a speed in bytes per second. */
export function formatSpeed(bytesPerSecond: number): string {
  return `${formatBytes(bytesPerSecond)}/s`;
}

/** `"0%"`, `"100%"` without decimals; every other value with one (`"28.2%"`, `"50.0%"`). */
export function formatPercent(value: number): string {
  if (value === 0) return '0%';
  if (value === 100) return '100%';
  return `${value.toFixed(1)}%`;
}

export interface ProgressOptions {
  /** The import is Ready: only then is `"100%"` shown. */
  ready?: boolean;
}

/**
 * Import progress as status shows it: the share of source bytes read, truncated (never rounded up) to one
 * decimal, `"0%"` when nothing is known yet (no total), and at most `"99.9%"` until the image is Ready, so
 * that `"100%"` always means done.
 */
export function formatProgress(done: number, total: number | undefined, opts: ProgressOptions = {}): string {
  if (opts.ready) return '100%';
  if (total === undefined || !(total > 0)) return '0%';
  // While bytes move, always one decimal, as upstream's `get -w` shows: "0.0%" ... "100.0%" (all source
  // bytes read, still pushing or probing); the bare "0%" / "100%" are the before and Ready values.
  const tenths = Math.min(1000, Math.floor((Math.max(0, done) * 1000) / total));
  return `${(tenths / 10).toFixed(1)}%`;
}

/** The number in a status progress string (`"28.2%"` -> 28.2); undefined when it is not one. */
export function parsePercent(s: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*%\s*$/.exec(s);
  if (!m) return undefined;
  const v = Number(m[1]);
  return v <= 100 ? v : undefined;
}
