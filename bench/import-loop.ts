/**
 * One import, again and again, in this process: the data plane alone (runImport, as a worker thread runs it; no
 * queue, no Redis), with the CPU of this process and of DVCR per import. For A/B runs of a change to the byte
 * path, and for CPU profiles of it (`--cpu-prof`, which does not reach piscina threads in the full bench):
 *
 *   npx tsx --cpu-prof --cpu-prof-dir=/tmp/prof bench/import-loop.ts
 *   IMPORT_LOOP_SOURCE=registry IMPORT_LOOP_RUNS=3 npx tsx bench/import-loop.ts
 *
 *   IMPORT_LOOP_SOURCE=small IMPORT_LOOP_RUNS=300 npx tsx --initial-old-space-size=128 bench/import-loop.ts
 *
 * For `small`, --initial-old-space-size: in this loop (the main thread, tsx loaded) V8 ran a full mark-compact
 * every 2-3 imports, about 6 ms of GC per import, which a worker's piscina threads do not (with --trace-gc: 10
 * in a whole bench worker process); without it that GC hides the change being measured.
 *
 * Uses the fixtures `npm run bench` builds in bench/work (run it once first): the 1 GiB-data qcow2 served over
 * HTTP by a file server of its own (`http`, the default), or its gzip-layer containerDisk pushed with skopeo
 * into the same registry that plays DVCR (`registry`), or the many-small scenario's 1 MiB images, each a
 * different one, pushed into a source registry of their own (`small`: the per-image cost of the data plane,
 * with the source registry's CPU too).
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { loadConfig } from '../src/config.ts';
import { createPipelineContext } from '../src/pipeline/context.ts';
import type { ImportSource } from '../src/pipeline/types.ts';
import { runImport } from '../src/pipeline/run.ts';
import { startRegistry } from '../src/stack/registry.ts';
import { FILE_SERVER } from './file-server.ts';

const WORK = new URL('./work/', import.meta.url).pathname;
const DISK = join(WORK, 'disk-1073741824.qcow2');
const LAYOUT = `${DISK}.gzip.layout`;
const RUNS = Number(process.env.IMPORT_LOOP_RUNS ?? 5);
const SOURCE = process.env.IMPORT_LOOP_SOURCE ?? 'http';


/** CPU seconds (user + system) a process has used so far. */
function cpuOf(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

if (!['http', 'registry', 'small'].includes(SOURCE)) throw new Error(`IMPORT_LOOP_SOURCE must be http, registry or small, not ${SOURCE}`);
const smallLayout = (i: number) => join(WORK, 'small', `small-${i}.img.gzip.layout`);
const needs = SOURCE === 'small' ? Array.from({ length: RUNS }, (_, i) => smallLayout(i)) : [DISK, ...(SOURCE === 'registry' ? [LAYOUT] : [])];
for (const need of needs) {
  if (!existsSync(need)) throw new Error(`${need} is missing: run \`npm run bench\` once to build the fixtures`);
}

const dataDir = mkdtempSync(join(tmpdir(), 'import-loop-'));
const dvcr = await startRegistry({ dataDir: join(dataDir, 'dvcr') });
const sourceRegistry = SOURCE === 'small' ? await startRegistry({ dataDir: join(dataDir, 'source') }) : undefined;
// The file server serves the large disk (it is needed, and started, for the http source only).
const server = spawn(process.execPath, ['-e', FILE_SERVER, SOURCE === 'http' ? DISK : '/dev/null'], { stdio: ['ignore', 'pipe', 'inherit'] });
process.on('exit', () => server.kill());
try {
  const port = await new Promise<number>((resolve) => server.stdout!.once('data', (d) => resolve(Number(String(d).trim()))));
  let source: ImportSource = { type: 'HTTP', url: `http://127.0.0.1:${port}/disk.qcow2` };
  const sources: ImportSource[] = [];
  if (sourceRegistry) {
    // Asynchronously, 4 at a time: a profile of this process then shows the imports, not the waits for skopeo.
    const push = promisify(execFile);
    for (let i = 0; i < RUNS; i += 4) {
      await Promise.all(
        Array.from({ length: Math.min(4, RUNS - i) }, (_, k) =>
          push('skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${smallLayout(i + k)}`, `docker://${sourceRegistry.hostPort}/small/img${i + k}:v1`]),
        ),
      );
    }
    for (let i = 0; i < RUNS; i++) sources.push({ type: 'ContainerImage', image: `${sourceRegistry.hostPort}/small/img${i}:v1` });
  }
  if (SOURCE === 'registry') {
    execFileSync('skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${LAYOUT}`, `docker://${dvcr.hostPort}/source/disk:v1`]);
    source = { type: 'ContainerImage', image: `${dvcr.hostPort}/source/disk:v1` };
  }
  const ctx = await createPipelineContext(loadConfig({}, { dvcrUrl: dvcr.url, sourceAllowCidrs: '127.0.0.0/8', ...(sourceRegistry ? { insecureRegistries: sourceRegistry.hostPort } : {}) }));
  try {
    if (sourceRegistry) {
      const before = { ours: process.cpuUsage(), dvcr: cpuOf(dvcr.pid), source: cpuOf(sourceRegistry.pid), at: performance.now() };
      for (let i = 0; i < RUNS; i++) {
        await runImport({ imageRef: `loop/${i}`, source: sources[i]!, target: { registry: dvcr.hostPort, repository: `loop/small${i}`, tag: 't' } }, ctx);
      }
      const per = (s: number) => `${((1000 * s) / RUNS).toFixed(1)} ms`;
      const ours = process.cpuUsage(before.ours);
      console.log(
        `${RUNS} small imports, one at a time, per import: wall ${per((performance.now() - before.at) / 1000)}; CPU: ours ` +
          `${per(ours.user / 1e6)} user + ${per(ours.system / 1e6)} sys, source registry ${per(cpuOf(sourceRegistry.pid) - before.source)}, ` +
          `DVCR ${per(cpuOf(dvcr.pid) - before.dvcr)}`,
      );
    }
    for (let i = 0; i < (sourceRegistry ? 0 : RUNS); i++) {
      const before = { ours: process.cpuUsage(), dvcr: cpuOf(dvcr.pid), server: cpuOf(server.pid!), at: performance.now() };
      const out = await runImport({ imageRef: `loop/${i}`, source, target: { registry: dvcr.hostPort, repository: 'loop/disk', tag: `t${i}` } }, ctx);
      const wall = (performance.now() - before.at) / 1000;
      const ours = process.cpuUsage(before.ours);
      console.log(
        `import ${i + 1}: ${out.storedBytes} bytes in ${wall.toFixed(2)} s; CPU: ours ${(ours.user / 1e6).toFixed(2)} s user + ` +
          `${(ours.system / 1e6).toFixed(2)} s sys, DVCR ${(cpuOf(dvcr.pid) - before.dvcr).toFixed(2)} s` +
          (SOURCE === 'http' ? `, file server ${(cpuOf(server.pid!) - before.server).toFixed(2)} s` : ''),
      );
    }
  } finally {
    await ctx.close();
  }
} finally {
  server.kill();
  await dvcr.stop();
  await sourceRegistry?.stop();
  rmSync(dataDir, { recursive: true, force: true });
}
