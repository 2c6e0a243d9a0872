/**
 * `describe`: kubectl-describe-like text for one image. Key/value lines are aligned like kubectl's describer (a
 * tabwriter with padding 2 over `Key:\tvalue` lines; a section header such as `Status:` ends an alignment block).
 *
 * ```
 * Name:         ubuntu-22.04
 * Labels:       <none>
 * Annotations:  <none>
 * API Version:  virtualization.deckhouse.io/v1alpha2
 * Kind:         ClusterVirtualImage
 * Metadata:
 *   Creation Timestamp:  2024-05-01T10:00:00Z
 *   ...
 * Spec:
 *   Data Source:
 *     Type:  HTTP
 *     Http:
 *       URL:  https://...
 * Status:
 *   Phase:     Ready
 *   ...
 * Conditions:
 *   Type             Status  Reason           Message  LastTransitionTime
 *   ----             ------  ------           -------  ------------------
 *   DatasourceReady  True    DatasourceReady           2024-05-01T10:00:01Z
 * ```
 */
import type { Image } from '../../images/index.ts';
import { DESCRIBE_OPTIONS, tabwrite } from './table.ts';

type Line = string[];

/** Words kubectl's describer writes in capitals. */
const ACRONYMS: Record<string, string> = {
  url: 'URL',
  urls: 'URLs',
  uid: 'UID',
  api: 'API',
  http: 'HTTP',
  https: 'HTTPS',
  ca: 'CA',
  id: 'ID',
  md5: 'MD5',
  sha1: 'SHA1',
  sha256: 'SHA256',
  sha512: 'SHA512',
  cdrom: 'CDROM',
  ip: 'IP',
};

/** `imagePullSecret` -> `Image Pull Secret`, `registryURL` -> `Registry URL`, `caBundle` -> `CA Bundle`. */
export function smartLabel(key: string): string {
  const words = key.match(/[A-Z]{2,}s(?=[A-Z]|$)|[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z0-9]+|[A-Z]+/g) ?? [key];
  return words.map((w) => ACRONYMS[w.toLowerCase()] ?? w.charAt(0).toUpperCase() + w.slice(1)).join(' ');
}

function scalar(v: unknown): string {
  if (v === undefined || v === null) return '';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

/** A nested value as `Key:\tvalue` lines and `Key:` section headers, kubectl's generic describer style. */
function describeValue(out: Line[], indent: string, key: string, v: unknown, order: readonly string[] = []): void {
  const label = smartLabel(key);
  if (v === undefined) return;
  if (Array.isArray(v)) {
    if (v.length === 0) {
      out.push([`${indent}${label}:`, '<none>']);
      return;
    }
    out.push([`${indent}${label}:`]);
    for (const item of v) {
      if (typeof item === 'object' && item !== null) describeObject(out, `${indent}  `, item as Record<string, unknown>);
      else out.push([`${indent}  ${scalar(item)}`]);
    }
    return;
  }
  if (typeof v === 'object' && v !== null) {
    out.push([`${indent}${label}:`]);
    describeObject(out, `${indent}  `, v as Record<string, unknown>, order);
    return;
  }
  out.push([`${indent}${label}:`, scalar(v)]);
}

/** Fields in `order` first (those present), then the rest in their own order. */
function describeObject(out: Line[], indent: string, obj: Record<string, unknown>, order: readonly string[] = []): void {
  const keys = [...order.filter((k) => Object.hasOwn(obj, k)), ...Object.keys(obj).filter((k) => !order.includes(k))];
  for (const k of keys) describeValue(out, indent, k, obj[k]);
}

/** `Labels:` / `Annotations:` the kubectl way: `<none>`, or sorted `key=value`, one per line. */
function describeMap(out: Line[], label: string, map: Record<string, string> | undefined): void {
  const keys = Object.keys(map ?? {}).sort();
  if (!map || keys.length === 0) {
    out.push([`${label}:`, '<none>']);
    return;
  }
  keys.forEach((k, i) => out.push([i === 0 ? `${label}:` : '', `${k}=${map[k]}`]));
}

/** The describe text of one image, ending with a newline. */
export function describe(image: Image): string {
  const out: Line[] = [];
  const md = image.metadata;
  out.push(['Name:', md.name]);
  if (image.kind === 'VirtualImage' || md.namespace !== undefined) out.push(['Namespace:', md.namespace ?? '']);
  describeMap(out, 'Labels', md.labels);
  describeMap(out, 'Annotations', md.annotations);
  out.push(['API Version:', image.apiVersion]);
  out.push(['Kind:', image.kind]);

  out.push(['Metadata:']);
  out.push(['  Creation Timestamp:', md.creationTimestamp]);
  if (md.deletionTimestamp) out.push(['  Deletion Timestamp:', md.deletionTimestamp]);
  out.push(['  Generation:', String(md.generation)]);
  out.push(['  UID:', md.uid]);

  out.push(['Spec:']);
  const ds = image.spec.dataSource as unknown as Record<string, unknown>;
  describeValue(out, '  ', 'dataSource', ds, ['type']);
  if (image.spec.storage !== undefined) out.push(['  Storage:', image.spec.storage]);

  const s = image.status;
  out.push(['Status:']);
  out.push(['  Phase:', s.phase]);
  if (s.progress !== undefined) out.push(['  Progress:', s.progress]);
  describeValue(out, '  ', 'downloadSpeed', s.downloadSpeed, ['avg', 'avgBytes', 'current', 'currentBytes']);
  describeValue(out, '  ', 'size', s.size, ['stored', 'storedBytes', 'unpacked', 'unpackedBytes']);
  if (s.format !== undefined) out.push(['  Format:', s.format]);
  if (s.cdrom !== undefined) out.push(['  CDROM:', String(s.cdrom)]);
  describeValue(out, '  ', 'target', s.target);
  describeValue(out, '  ', 'imageUploadURLs', s.imageUploadURLs, ['external', 'inCluster']);
  describeValue(out, '  ', 'checksums', s.checksums);
  if (s.attempts !== undefined) out.push(['  Attempts:', String(s.attempts)]);
  describeValue(out, '  ', 'failure', s.failure, ['reason', 'message', 'retryable']);
  if (s.observedGeneration !== undefined) out.push(['  Observed Generation:', String(s.observedGeneration)]);

  const conditions = s.conditions ?? [];
  if (conditions.length === 0) {
    out.push(['Conditions:', '<none>']);
  } else {
    out.push(['Conditions:']);
    out.push(['  Type', 'Status', 'Reason', 'Message', 'LastTransitionTime']);
    out.push(['  ----', '------', '------', '-------', '------------------']);
    for (const c of conditions) out.push([`  ${c.type}`, c.status, c.reason, c.message, c.lastTransitionTime]);
  }
  return tabwrite(out, DESCRIBE_OPTIONS);
}
