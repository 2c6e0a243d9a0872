/**
 * `WWW-Authenticate` parsing (RFC 7235): one header may carry several challenges; scheme and parameter names
 * are case-insensitive; values are tokens or quoted strings with backslash escapes.
 */

export interface Challenge {
  /** Lowercased scheme: `bearer`, `basic`, ... */
  scheme: string;
  /** Lowercased parameter names. */
  params: Record<string, string>;
}

const TCHAR = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/;

export function parseChallenges(header: string): Challenge[] {
  const out: Challenge[] = [];
  let i = 0;
  const n = header.length;
  const skipWs = () => {
    while (i < n && (header[i] === ' ' || header[i] === '\t')) i++;
  };
  const readToken = (): string => {
    const start = i;
    while (i < n && TCHAR.test(header[i]!)) i++;
    return header.slice(start, i);
  };
  // Unquoted values: be lenient (some servers send URLs unquoted): up to a comma or whitespace.
  const readBare = (): string => {
    const start = i;
    while (i < n && header[i] !== ',' && header[i] !== ' ' && header[i] !== '\t') i++;
    return header.slice(start, i);
  };
  const readQuoted = (): string => {
    // header[i] === '"'
    i++;
    let v = '';
    while (i < n && header[i] !== '"') {
      if (header[i] === '\\' && i + 1 < n) i++;
      v += header[i];
      i++;
    }
    i++; // closing quote (or end)
    return v;
  };
  let current: Challenge | undefined;
  while (i < n) {
    skipWs();
    if (header[i] === ',') {
      i++;
      continue;
    }
    const save = i;
    const tok = readToken();
    if (tok === '') {
      i++; // stray character: skip it
      continue;
    }
    skipWs();
    if (header[i] === '=' && current) {
      // A parameter of the current challenge (or token68 padding, which we do not use).
      i++;
      skipWs();
      const value = header[i] === '"' ? readQuoted() : readBare();
      current.params[tok.toLowerCase()] = value;
      continue;
    }
    if (header[i] === '=' && !current) {
      // A parameter before any scheme: malformed; skip it.
      i = save + tok.length + 1;
      skipWs();
      if (header[i] === '"') readQuoted();
      else readToken();
      continue;
    }
    current = { scheme: tok.toLowerCase(), params: {} };
    out.push(current);
  }
  return out;
}
