/**
 * The layer overlay rules of a containerDisk image, for a walk that goes top-down (last manifest layer first):
 * which entry paths are safe, what a whiteout or an opaque marker removes, and whether a `disk/<name>` met in a
 * lower layer is still visible through the layers above it. Only the paths that can hide a disk file are kept
 * (`/`, `disk` and `disk/<name>`), so the state stays small however many files the layers hold.
 *
 * Rules (OCI image spec, "Whiteouts"): `.wh.<name>` hides `<name>` of lower layers; `.wh..wh..opq` in a
 * directory hides all of that directory's lower-layer contents; whiteouts and opaque markers never apply to
 * their own layer. An entry shadows the same path of lower layers, and a non-directory shadows the subtree
 * below its path; an entry also makes its parent directories exist in its layer (so `disk/a/x` in an upper
 * layer hides a lower regular file `disk/a`), while directories merge with lower directories.
 */

/** Kinds of tar entries, as tar-stream names them; `null` for a type it does not know. */
export type EntryKind =
  | 'file'
  | 'link'
  | 'symlink'
  | 'character-device'
  | 'block-device'
  | 'directory'
  | 'fifo'
  | 'contiguous-file'
  | null;

/** Entry types that are a regular file (GNU tar extracts a contiguous file as a regular one). */
export function isRegular(kind: EntryKind): boolean {
  return kind === 'file' || kind === 'contiguous-file';
}

const OPAQUE = '.wh..wh..opq';
const WHITEOUT_PREFIX = '.wh.';
/** `.wh..wh.*` other than the opaque marker is aufs bookkeeping (e.g. `.wh..wh.plnk`), not a whiteout. */
const AUFS_META_PREFIX = '.wh..wh.';
const DISK_DIR = 'disk';

/**
 * `disk/x`, `./disk/x`, `/disk/x`, `disk//x/` -> `disk/x`; the root itself -> ''; any `..` component -> null
 * (such an entry could point outside the image root and is ignored).
 */
export function normaliseEntryPath(name: string): string | null {
  const parts: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') return null;
    parts.push(part);
  }
  return parts.join('/');
}

/** What a normalised path means for the overlay. */
export type PathRole =
  | { role: 'whiteout'; target: string }
  | { role: 'opaque'; dir: string }
  /** aufs metadata (`.wh..wh.plnk` and the like): neither a file nor a whiteout. */
  | { role: 'meta' }
  | { role: 'entry' };

export function pathRole(path: string): PathRole {
  const slash = path.lastIndexOf('/');
  const dir = slash < 0 ? '' : path.slice(0, slash);
  const base = path.slice(slash + 1);
  if (!base.startsWith(WHITEOUT_PREFIX)) return { role: 'entry' };
  if (base === OPAQUE) return { role: 'opaque', dir };
  if (base.startsWith(AUFS_META_PREFIX)) return { role: 'meta' };
  const name = base.slice(WHITEOUT_PREFIX.length);
  return { role: 'whiteout', target: dir === '' ? name : `${dir}/${name}` };
}

/** The file name when `path` is a direct child of `disk/` (a disk file candidate), else null. */
export function diskFileName(path: string): string | null {
  if (!path.startsWith(`${DISK_DIR}/`)) return null;
  const name = path.slice(DISK_DIR.length + 1);
  return name === '' || name.includes('/') ? null : name;
}

/** Paths whose entries, whiteouts or opaque markers can hide a disk file: `disk` and `disk/<name>`. */
function isRelevant(path: string): boolean {
  return path === DISK_DIR || diskFileName(path) !== null;
}

interface EntryRecord {
  layer: number;
  kind: EntryKind;
}

/** What one layer says about the relevant paths; applied to the layers below it once it is fully read. */
export class LayerMask {
  readonly entries = new Map<string, EntryRecord>();
  readonly whiteouts = new Set<string>();
  readonly opaques = new Set<string>();

  constructor(readonly layer: number) {}

  /** A non-whiteout entry at `path` (normalised, not the root). */
  addEntry(path: string, kind: EntryKind): void {
    this.#addAncestors(path);
    if (isRelevant(path)) this.#set(path, kind);
  }

  addWhiteout(entryPath: string, target: string): void {
    this.#addAncestors(entryPath);
    if (isRelevant(target)) this.whiteouts.add(target);
  }

  addOpaque(entryPath: string, dir: string): void {
    this.#addAncestors(entryPath);
    if (dir === '' || dir === DISK_DIR) this.opaques.add(dir);
  }

  /** Parent directories exist in this layer even without entries of their own. */
  #addAncestors(path: string): void {
    let end = path.indexOf('/');
    while (end >= 0) {
      const ancestor = path.slice(0, end);
      if (ancestor !== DISK_DIR && diskFileName(ancestor) === null) return;
      this.#set(ancestor, 'directory', true);
      end = path.indexOf('/', end + 1);
    }
  }

  #set(path: string, kind: EntryKind, implicit = false): void {
    const had = this.entries.get(path);
    // An explicit entry replaces an implied directory; otherwise the first entry of the layer is kept (a
    // repeated path within one layer is handled by the caller).
    if (had === undefined || (had.kind === 'directory' && !implicit)) this.entries.set(path, { layer: this.layer, kind });
  }
}

/** The accumulated masks of all layers above the one being read; each record is the nearest such layer. */
export class Overlay {
  readonly #entries = new Map<string, EntryRecord>();
  /** Non-directories at `disk` (they hide the whole lower `disk/` subtree). */
  readonly #nonDirs = new Map<string, EntryRecord>();
  readonly #whiteouts = new Map<string, number>();
  readonly #opaques = new Map<string, number>();

  /** Applies a fully read layer to the layers below it. */
  push(mask: LayerMask): void {
    for (const [path, rec] of mask.entries) {
      this.#entries.set(path, rec);
      if (rec.kind !== 'directory') this.#nonDirs.set(path, rec);
    }
    for (const target of mask.whiteouts) this.#whiteouts.set(target, mask.layer);
    for (const dir of mask.opaques) this.#opaques.set(dir, mask.layer);
  }

  /**
   * Why `disk/<name>` of a lower layer is not visible, or null when it is. The reason names the nearest layer
   * that hides it (1-based, base layer = 1), e.g. `was removed by a whiteout in layer 2`.
   */
  hiddenBy(path: string): Hidden | null {
    const causes: Array<[layer: number | undefined, text: string, byRegularFile: boolean]> = [];
    const own = this.#entries.get(path);
    if (own) {
      const regular = isRegular(own.kind);
      causes.push([own.layer, regular ? `is shadowed by another ${path}` : `was replaced by ${describeKind(own.kind)}`, regular]);
    }
    const diskNonDir = this.#nonDirs.get(DISK_DIR);
    causes.push(
      [this.#whiteouts.get(path), 'was removed by a whiteout', false],
      [this.#whiteouts.get(DISK_DIR), 'was removed by a whiteout of /disk', false],
      [this.#opaques.get(DISK_DIR), 'was hidden by an opaque /disk/ (.wh..wh..opq)', false],
      [this.#opaques.get(''), 'was hidden by an opaque root directory (.wh..wh..opq)', false],
      [diskNonDir?.layer, `was hidden because /disk is ${describeKind(diskNonDir?.kind ?? null)}`, false],
    );
    let best: Hidden | null = null;
    for (const [layer, text, byRegularFile] of causes) {
      if (layer === undefined || (best !== null && best.layer <= layer)) continue;
      best = { layer, text: `${text} in layer ${layer + 1}`, byRegularFile };
    }
    return best;
  }
}

/** Why a lower-layer path is not visible: the nearest hiding layer (0-based) and a phrase naming it. */
export interface Hidden {
  layer: number;
  /** e.g. `was removed by a whiteout in layer 2` (1-based layer numbers, base layer = 1). */
  text: string;
  /** Shadowed by a regular file of the same path (which is itself the candidate; no note needed). */
  byRegularFile: boolean;
}

/** `a symlink`, `a hard link`, ... for messages. */
export function describeKind(kind: EntryKind): string {
  switch (kind) {
    case 'file':
    case 'contiguous-file':
      return 'a regular file';
    case 'link':
      return 'a hard link';
    case 'symlink':
      return 'a symlink';
    case 'character-device':
      return 'a character device';
    case 'block-device':
      return 'a block device';
    case 'directory':
      return 'a directory';
    case 'fifo':
      return 'a fifo';
    case null:
      return 'an entry of an unsupported tar type';
  }
}
