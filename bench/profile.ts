/**
 * Summarise V8 CPU profiles (`--cpu-prof`, `BENCH_PROFILE=dir`): where the self time went, by package (or
 * our source folder) and by function, so a profile can be read in a terminal and two runs compared.
 *
 *   npx tsx bench/profile.ts /tmp/prof/*.cpuprofile            # each file on its own
 *   PROFILE_TOP=40 npx tsx bench/profile.ts --merge /tmp/prof/*.cpuprofile
 *   PROFILE_UNDER=runImport npx tsx bench/profile.ts FILE   # only samples with runImport on their stack
 *
 * Samples outside any JavaScript stack (GC, idle, the event loop's own work) have no caller: with PROFILE_UNDER
 * they are left out, so the sum is a lower bound of the work under that function.
 */
import { readFileSync } from 'node:fs';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** Where a frame's code lives: a package, a folder of ours, node's own, or V8's pseudo-frames. */
export function placeOf(url: string, functionName: string): string {
  if (!url) return functionName.startsWith('(') ? functionName : '(native)';
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg) return pkg[1]!;
  if (url.startsWith('node:')) return `node:${url.slice(5).split('/')[0]}`;
  const ours = /\/(src\/[^/]+|workers|queues|bench|bin)\//.exec(url);
  if (ours) return ours[1]!;
  return url.replace(/^file:\/\//, '');
}

export interface Summary {
  totalMs: number;
  byPlace: Map<string, number>;
  byFunction: Map<string, number>;
}

export function summarise(profiles: Profile[], under?: string): Summary {
  const byPlace = new Map<string, number>();
  const byFunction = new Map<string, number>();
  let totalMs = 0;
  for (const p of profiles) {
    const nodes = new Map(p.nodes.map((n) => [n.id, n]));
    const parent = new Map<number, number>();
    for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
    const isUnder = (id: number): boolean => {
      for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
        if (nodes.get(at)!.callFrame.functionName === under) return true;
      }
      return false;
    };
    for (let i = 0; i < p.samples.length; i++) {
      const ms = (p.timeDeltas[i] ?? 0) / 1000;
      const f = nodes.get(p.samples[i]!)!.callFrame;
      if (f.functionName === '(idle)') continue;
      if (under && !isUnder(p.samples[i]!)) continue;
      totalMs += ms;
      const place = placeOf(f.url, f.functionName);
      byPlace.set(place, (byPlace.get(place) ?? 0) + ms);
      const fn = `${f.functionName || '(anonymous)'} ${place}:${f.lineNumber + 1}`;
      byFunction.set(fn, (byFunction.get(fn) ?? 0) + ms);
    }
  }
  return { totalMs, byPlace, byFunction };
}

function print(title: string, s: Summary, top: number): void {
  const rows = (m: Map<string, number>) =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([k, v]) => `  ${v.toFixed(0).padStart(7)} ms ${((100 * v) / s.totalMs).toFixed(1).padStart(5)}%  ${k}`)
      .join('\n');
  console.log(`${title}: ${s.totalMs.toFixed(0)} ms busy\n by place:\n${rows(s.byPlace)}\n by function (self):\n${rows(s.byFunction)}\n`);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const args = process.argv.slice(2);
  const merge = args[0] === '--merge';
  const files = merge ? args.slice(1) : args;
  if (files.length === 0) throw new Error('usage: bench/profile.ts [--merge] FILE.cpuprofile...');
  const top = Number(process.env.PROFILE_TOP ?? 25);
  const under = process.env.PROFILE_UNDER;
  const load = (f: string) => JSON.parse(readFileSync(f, 'utf8')) as Profile;
  if (merge) print(`${files.length} profiles`, summarise(files.map(load), under), top);
  else for (const f of files) print(f, summarise([load(f)], under), top);
}
