/**
 * The AGE column: kubectl's `duration.HumanDuration` (k8s.io/apimachinery), what `kubectl get` prints for a
 * creation timestamp: `6s`, `119s`, `2m`, `4m20s`, `23h`, `5h3m`, `2d`, `3d4h`, `400d`, `2y100d`, `9y`.
 */

/** Human form of a duration in milliseconds, exactly as kubectl's `HumanDuration`. */
export function humanDuration(ms: number): string {
  const seconds = Math.trunc(ms / 1000);
  // A little clock skew (up to 2 s in the future) counts as "now".
  if (seconds < -1) return '<invalid>';
  if (seconds < 0) return '0s';
  if (seconds < 60 * 2) return `${seconds}s`;
  const minutes = Math.trunc(seconds / 60);
  if (minutes < 10) {
    const s = seconds % 60;
    return s === 0 ? `${minutes}m` : `${minutes}m${s}s`;
  }
  if (minutes < 60 * 3) return `${minutes}m`;
  const hours = Math.trunc(minutes / 60);
  if (hours < 8) {
    const m = minutes % 60;
    return m === 0 ? `${hours}h` : `${hours}h${m}m`;
  }
  if (hours < 48) return `${hours}h`;
  if (hours < 24 * 8) {
    const h = hours % 24;
    return h === 0 ? `${Math.trunc(hours / 24)}d` : `${Math.trunc(hours / 24)}d${h}h`;
  }
  if (hours < 24 * 365 * 2) return `${Math.trunc(hours / 24)}d`;
  if (hours < 24 * 365 * 8) {
    const days = Math.trunc(hours / 24);
    const dy = days % 365;
    return dy === 0 ? `${Math.trunc(days / 365)}y` : `${Math.trunc(days / 365)}y${dy}d`;
  }
  return `${Math.trunc(hours / 24 / 365)}y`;
}

/** Age of something created at `from` (an RFC 3339 string or a Date) as of `now`; `<unknown>` when unparseable. */
export function age(from: string | Date | undefined, now: Date): string {
  if (from === undefined) return '<unknown>';
  const t = typeof from === 'string' ? Date.parse(from) : from.getTime();
  if (!Number.isFinite(t)) return '<unknown>';
  return humanDuration(now.getTime() - t);
}
