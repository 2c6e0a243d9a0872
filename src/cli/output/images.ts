/**
 * How images look on the command line: resource names as kubectl spells them, `get` table rows (normal and wide),
 * and the JSON / YAML / name forms.
 */
import { stringify as toYamlText } from 'yaml';
import type { Image, ImageKind } from '../../images/index.ts';
import { age } from './age.ts';

export const API_GROUP = 'virtualization.deckhouse.io';

export interface ResourceInfo {
  kind: ImageKind;
  /** `clustervirtualimage` */
  singular: string;
  /** `clustervirtualimages` */
  plural: string;
  /** `cvi` */
  short: string;
  namespaced: boolean;
}

export const RESOURCES: Record<ImageKind, ResourceInfo> = {
  ClusterVirtualImage: {
    kind: 'ClusterVirtualImage',
    singular: 'clustervirtualimage',
    plural: 'clustervirtualimages',
    short: 'cvi',
    namespaced: false,
  },
  VirtualImage: {
    kind: 'VirtualImage',
    singular: 'virtualimage',
    plural: 'virtualimages',
    short: 'vi',
    namespaced: true,
  },
};

/**
 * The kind a resource word names, as kubectl resolves it: short name, singular, plural, kind, each optionally with
 * the API group (`cvi`, `clustervirtualimage`, `ClusterVirtualImages`, `clustervirtualimage.virtualization.deckhouse.io`).
 * Undefined when it names none of ours.
 */
export function resolveResource(word: string): ResourceInfo | undefined {
  let w = word.toLowerCase();
  const groupSuffix = `.${API_GROUP}`;
  if (w.endsWith(groupSuffix)) w = w.slice(0, -groupSuffix.length);
  for (const info of Object.values(RESOURCES)) {
    if (w === info.short || w === info.singular || w === info.plural) return info;
  }
  return undefined;
}

/** `clustervirtualimage.virtualization.deckhouse.io` */
export function qualifiedName(kind: ImageKind): string {
  return `${RESOURCES[kind].singular}.${API_GROUP}`;
}

/** `-o name`: `clustervirtualimage.virtualization.deckhouse.io/ubuntu`. */
export function objectName(image: Pick<Image, 'kind' | 'metadata'>): string {
  return `${qualifiedName(image.kind)}/${image.metadata.name}`;
}

export interface RowOptions {
  /** `-o wide`: STOREDSIZE, UNPACKEDSIZE and REGISTRY URL before AGE (the CRD's priority-1 columns). */
  wide?: boolean;
  /** `-A`: a NAMESPACE column first. */
  withNamespace?: boolean;
}

/** The header row of a `get` table. */
export function tableHeader(opts: RowOptions = {}): string[] {
  const cols = ['NAME', 'PHASE', 'CDROM', 'PROGRESS'];
  if (opts.wide) cols.push('STOREDSIZE', 'UNPACKEDSIZE', 'REGISTRY URL');
  cols.push('AGE');
  return opts.withNamespace ? ['NAMESPACE', ...cols] : cols;
}

/** One `get` row: unknown values are empty cells (PROGRESS before provisioning starts, sizes before Ready). */
export function tableRow(image: Image, now: Date, opts: RowOptions = {}): string[] {
  const s = image.status;
  const row = [image.metadata.name, s.phase ?? '', s.cdrom === undefined ? '' : String(s.cdrom), s.progress ?? ''];
  if (opts.wide) row.push(s.size?.stored ?? '', s.size?.unpacked ?? '', s.target?.registryURL ?? '');
  row.push(age(image.metadata.creationTimestamp, now));
  return opts.withNamespace ? [image.metadata.namespace ?? '', ...row] : row;
}

/** kubectl's list wrapper for `-o json|yaml` of several objects. */
export interface ListObject {
  apiVersion: 'v1';
  kind: 'List';
  items: Image[];
}

export function listOf(items: Image[]): ListObject {
  return { apiVersion: 'v1', kind: 'List', items };
}

/** `-o json`: 4-space indentation like kubectl, ending with a newline. */
export function toJson(value: unknown): string {
  return `${JSON.stringify(value, null, 4)}\n`;
}

/** `-o yaml`: kubectl's style (2 spaces, list items not indented under their key), ending with a newline. */
export function toYaml(value: unknown): string {
  return toYamlText(value, { indentSeq: false, lineWidth: 0 });
}

/** Images in kubectl's list order: namespace, then name. */
export function sortImages(images: readonly Image[]): Image[] {
  return images.slice().sort((a, b) => {
    const na = a.metadata.namespace ?? '';
    const nb = b.metadata.namespace ?? '';
    if (na !== nb) return na < nb ? -1 : 1;
    return a.metadata.name < b.metadata.name ? -1 : a.metadata.name > b.metadata.name ? 1 : 0;
  });
}
