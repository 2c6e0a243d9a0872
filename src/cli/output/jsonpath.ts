/**
 * A subset of kubectl's JSONPath templates (`-o jsonpath=...`, `wait --for=jsonpath=...`):
 *
 * - literal text between `{...}` actions is printed as is;
 * - `{.a.b}`, `{$.a}`, `{.a[0].b}`, `{.a[-1]}`, `{.a[1:3]}`, `{.items[*].metadata.name}`, `{.a.*}`, `{..name}`,
 *   `{.metadata.labels['app.kubernetes.io/name']}`, `{.status.conditions[?(@.type=="Ready")].status}`
 *   (filters compare with `==`, `!=`, `<`, `<=`, `>`, `>=` against a string, number, true/false/null, or test that a
 *   field exists);
 * - `{"\n"}` string literals (escapes `\n`, `\t`, `\\`, `\"`);
 * - `{range .items[*]}...{end}`: the body once per value, with `.`/`@` meaning that value.
 *
 * Output as kubectl prints it: strings raw, numbers and booleans as text, objects and lists as compact JSON; several
 * values of one action are joined with a space; a missing field prints nothing.
 */

export class JsonPathError extends Error {
  override readonly name = 'JsonPathError';
}

type Segment =
  | { kind: 'field'; name: string }
  | { kind: 'wildcard' }
  | { kind: 'index'; index: number }
  | { kind: 'slice'; start?: number; end?: number; step?: number }
  | { kind: 'recursive'; name: string | '*' }
  | { kind: 'filter'; left: Path; op?: FilterOp; right?: unknown };

type FilterOp = '==' | '!=' | '<' | '<=' | '>' | '>=';

interface Path {
  /** `$`: from the root; otherwise from the current value (`.`/`@`). */
  root: boolean;
  segments: Segment[];
}

type Node =
  | { kind: 'text'; text: string }
  | { kind: 'path'; path: Path }
  | { kind: 'range'; path: Path; body: Node[] };

/** Parses a template into nodes (throws {@link JsonPathError} naming the problem). */
function parseTemplate(template: string): Node[] {
  const stack: Node[][] = [[]];
  const rangeStack: Array<{ path: Path }> = [];
  let i = 0;
  while (i < template.length) {
    const open = template.indexOf('{', i);
    const top = stack[stack.length - 1]!;
    if (open < 0) {
      top.push({ kind: 'text', text: template.slice(i) });
      break;
    }
    if (open > i) top.push({ kind: 'text', text: template.slice(i, open) });
    const close = findClose(template, open);
    if (close < 0) throw new JsonPathError(`unclosed action: "${template.slice(open)}"`);
    const action = template.slice(open + 1, close).trim();
    i = close + 1;
    if (action === 'end') {
      const r = rangeStack.pop();
      const body = stack.pop();
      if (!r || !body) throw new JsonPathError('{end} without {range}');
      stack[stack.length - 1]!.push({ kind: 'range', path: r.path, body });
    } else if (action.startsWith('range ') || action.startsWith('range\t')) {
      rangeStack.push({ path: parsePath(action.slice(6).trim()) });
      stack.push([]);
    } else if (action.startsWith('"') || action.startsWith("'")) {
      top.push({ kind: 'text', text: parseStringLiteral(action) });
    } else if (action === '') {
      throw new JsonPathError('empty action "{}"');
    } else {
      top.push({ kind: 'path', path: parsePath(action) });
    }
  }
  if (rangeStack.length) throw new JsonPathError('{range} without {end}');
  return stack[0]!;
}

/** Index of the `}` closing the action opened at `open`, skipping quoted strings and nested brackets. */
function findClose(s: string, open: number): number {
  let quote: string | undefined;
  for (let i = open + 1; i < s.length; i++) {
    const c = s[i];
    if (quote) {
      if (c === '\\') i++;
      else if (c === quote) quote = undefined;
    } else if (c === '"' || c === "'") quote = c;
    else if (c === '}') return i;
  }
  return -1;
}

function parseStringLiteral(text: string): string {
  const q = text[0];
  if (text.length < 2 || text[text.length - 1] !== q) throw new JsonPathError(`unterminated string ${text}`);
  let out = '';
  for (let i = 1; i < text.length - 1; i++) {
    const c = text[i];
    if (c !== '\\') {
      out += c;
      continue;
    }
    const e = text[++i];
    out += e === 'n' ? '\n' : e === 't' ? '\t' : e === 'r' ? '\r' : (e ?? '');
  }
  return out;
}

const IDENT = /^[^.[\]\s()=!<>'"@$*]+/;

function parsePath(expr: string): Path {
  let s = expr.trim();
  let root = false;
  if (s.startsWith('$')) {
    root = true;
    s = s.slice(1);
  } else if (s.startsWith('@')) {
    s = s.slice(1);
  } else if (!s.startsWith('.') && !s.startsWith('[')) {
    throw new JsonPathError(`unrecognized expression "${expr}": a path starts with "." or "$", e.g. {.metadata.name}`);
  }
  const segments: Segment[] = [];
  let i = 0;
  while (i < s.length) {
    const c = s[i];
    if (c === '.') {
      if (s[i + 1] === '.') {
        i += 2;
        if (s[i] === '*') {
          segments.push({ kind: 'recursive', name: '*' });
          i++;
          continue;
        }
        const m = IDENT.exec(s.slice(i));
        if (!m) throw new JsonPathError(`expected a field name after ".." in "${expr}"`);
        segments.push({ kind: 'recursive', name: m[0] });
        i += m[0].length;
        continue;
      }
      i++;
      if (i >= s.length) break; // `{.}`: the current value
      if (s[i] === '*') {
        segments.push({ kind: 'wildcard' });
        i++;
        continue;
      }
      if (s[i] === '[') continue;
      const m = IDENT.exec(s.slice(i));
      if (!m) throw new JsonPathError(`expected a field name at "${s.slice(i)}" in "${expr}"`);
      segments.push({ kind: 'field', name: m[0] });
      i += m[0].length;
    } else if (c === '[') {
      const end = findBracketEnd(s, i);
      if (end < 0) throw new JsonPathError(`unclosed "[" in "${expr}"`);
      segments.push(parseBracket(s.slice(i + 1, end).trim(), expr));
      i = end + 1;
    } else {
      throw new JsonPathError(`unexpected "${s.slice(i)}" in "${expr}"`);
    }
  }
  return { root, segments };
}

function findBracketEnd(s: string, open: number): number {
  let depth = 0;
  let quote: string | undefined;
  for (let i = open; i < s.length; i++) {
    const c = s[i];
    if (quote) {
      if (c === '\\') i++;
      else if (c === quote) quote = undefined;
    } else if (c === '"' || c === "'") quote = c;
    else if (c === '[') depth++;
    else if (c === ']' && --depth === 0) return i;
  }
  return -1;
}

function parseBracket(inner: string, expr: string): Segment {
  if (inner === '*') return { kind: 'wildcard' };
  if (/^-?\d+$/.test(inner)) return { kind: 'index', index: Number(inner) };
  if (/^(-?\d+)?:(-?\d+)?(:(-?\d+)?)?$/.test(inner)) {
    const [a, b, c] = inner.split(':');
    const seg: Segment = { kind: 'slice' };
    if (a) seg.start = Number(a);
    if (b) seg.end = Number(b);
    if (c) seg.step = Number(c);
    return seg;
  }
  if (inner.startsWith("'") || inner.startsWith('"')) return { kind: 'field', name: parseStringLiteral(inner) };
  if (inner.startsWith('?(') && inner.endsWith(')')) return parseFilter(inner.slice(2, -1).trim(), expr);
  throw new JsonPathError(`unsupported subscript "[${inner}]" in "${expr}"`);
}

function parseFilter(body: string, expr: string): Segment {
  const m = /^(@[^=!<>\s]*)\s*(==|!=|<=|>=|<|>)?\s*(.*)$/.exec(body);
  if (!m?.[1]) throw new JsonPathError(`unsupported filter "[?(${body})]" in "${expr}": use [?(@.field=="value")]`);
  const left = parsePath(m[1]);
  const op = m[2] as FilterOp | undefined;
  if (!op) {
    if (m[3]) throw new JsonPathError(`unsupported filter "[?(${body})]" in "${expr}"`);
    return { kind: 'filter', left };
  }
  const raw = (m[3] ?? '').trim();
  let right: unknown;
  if (raw.startsWith('"') || raw.startsWith("'")) right = parseStringLiteral(raw);
  else if (raw === 'true' || raw === 'false') right = raw === 'true';
  else if (raw === 'null') right = null;
  else if (raw !== '' && Number.isFinite(Number(raw))) right = Number(raw);
  else throw new JsonPathError(`unsupported filter value "${raw}" in "${expr}": use a quoted string or a number`);
  return { kind: 'filter', left, op, right };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function children(v: unknown): unknown[] {
  if (Array.isArray(v)) return v;
  if (isObject(v)) return Object.values(v);
  return [];
}

function descendants(v: unknown, out: unknown[] = []): unknown[] {
  out.push(v);
  for (const c of children(v)) descendants(c, out);
  return out;
}

function compare(a: unknown, op: FilterOp, b: unknown): boolean {
  switch (op) {
    case '==':
      return a === b;
    case '!=':
      return a !== b;
    default: {
      if (!(typeof a === 'number' && typeof b === 'number') && !(typeof a === 'string' && typeof b === 'string')) return false;
      if (op === '<') return a < b;
      if (op === '<=') return a <= b;
      if (op === '>') return a > b;
      return a >= b;
    }
  }
}

function evalPath(path: Path, current: unknown, root: unknown): unknown[] {
  let values: unknown[] = [path.root ? root : current];
  for (const seg of path.segments) {
    const next: unknown[] = [];
    for (const v of values) {
      switch (seg.kind) {
        case 'field':
          if (isObject(v) && Object.hasOwn(v, seg.name)) next.push(v[seg.name]);
          break;
        case 'wildcard':
          next.push(...children(v));
          break;
        case 'index':
          if (Array.isArray(v)) {
            const i = seg.index < 0 ? v.length + seg.index : seg.index;
            if (i >= 0 && i < v.length) next.push(v[i]);
          }
          break;
        case 'slice':
          if (Array.isArray(v)) {
            const step = seg.step ?? 1;
            if (step <= 0) throw new JsonPathError('a slice step must be positive');
            const norm = (x: number) => (x < 0 ? Math.max(0, v.length + x) : Math.min(v.length, x));
            const start = norm(seg.start ?? 0);
            const end = norm(seg.end ?? v.length);
            for (let i = start; i < end; i += step) next.push(v[i]);
          }
          break;
        case 'recursive':
          for (const d of descendants(v)) {
            if (seg.name === '*') next.push(...children(d));
            else if (isObject(d) && Object.hasOwn(d, seg.name)) next.push(d[seg.name]);
          }
          break;
        case 'filter':
          for (const item of Array.isArray(v) ? v : isObject(v) ? Object.values(v) : []) {
            const found = evalPath(seg.left, item, root);
            if (seg.op === undefined ? found.length > 0 && found[0] !== false && found[0] !== null : found.some((x) => compare(x, seg.op!, seg.right))) {
              next.push(item);
            }
          }
          break;
      }
    }
    values = next;
  }
  return values;
}

/** One value as kubectl's JSONPath printer shows it. */
export function formatValue(v: unknown): string {
  if (typeof v === 'string') return v;
  if (v === undefined) return '';
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  return JSON.stringify(v);
}

function render(nodes: readonly Node[], current: unknown, root: unknown): string {
  let out = '';
  for (const node of nodes) {
    if (node.kind === 'text') out += node.text;
    else if (node.kind === 'path') out += evalPath(node.path, current, root).map(formatValue).join(' ');
    else for (const item of evalPath(node.path, current, root)) out += render(node.body, item, root);
  }
  return out;
}

/** Checks a template without evaluating it (throws {@link JsonPathError}). */
export function parseJsonPath(template: string): void {
  parseTemplate(template);
}

/** The values one path expression (`.status.phase`, with or without braces) selects from `obj`. */
export function jsonpathValues(obj: unknown, expr: string): unknown[] {
  const e = expr.trim();
  const inner = e.startsWith('{') && e.endsWith('}') ? e.slice(1, -1) : e;
  return evalPath(parsePath(inner), obj, obj);
}

/**
 * Evaluates a kubectl-style JSONPath template against `obj`: `jsonpath(image, '{.status.imageUploadURLs}')`
 * gives `{"external":"...","inCluster":"..."}`. A template without any `{` that starts with `.` or `$` is taken as
 * one expression (`.status.phase`), as kubectl's relaxed form does.
 */
export function jsonpath(obj: unknown, template: string): string {
  const t = !template.includes('{') && /^\s*[.$]/.test(template) ? `{${template}}` : template;
  return render(parseTemplate(t), obj, obj);
}
