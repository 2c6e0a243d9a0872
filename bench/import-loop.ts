/**
 * One import, again and again, in this process: the data plane alone (runImport, as a worker thread runs it; no
 * queue, no Redis), with the CPU of this process and of DVCR per import. For A/B runs of a change to the byte
 * path, and for CPU profiles of it (`--cpu-prof`, which does not reach piscina threads in the full bench):
 *
 *   npx tsx --cpu-prof --cpu-prof-dir=/tmp/prof bench/import-loop.ts
 *   IMPORT_LOOP_SOURCE=registry IMPORT_LOOP_RUNS=3 npx tsx bench/import-loop.ts
 *
 * Uses the fixtures `npm run bench` builds in bench/work (run it once first): the 1 GiB-data qcow2 served over
 * HTTP by a file server of its own (`http`, the default), or its gzip-layer containerDisk pushed with skopeo
 * into the same registry that plays DVCR (`registry`).
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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

if (SOURCE !== 'http' && SOURCE !== 'registry') throw new Error(`IMPORT_LOOP_SOURCE must be http or registry, not ${SOURCE}`);
for (const need of [DISK, ...(SOURCE === 'registry' ? [LAYOUT] : [])]) {
  if (!existsSync(need)) throw new Error(`${need} is missing: run \`npm run bench\` once to build the fixtures`);
}

const dataDir = mkdtempSync(join(tmpdir(), 'import-loop-'));
const dvcr = await startRegistry({ dataDir });
const server = spawn(process.execPath, ['-e', FILE_SERVER, DISK], { stdio: ['ignore', 'pipe', 'inherit'] });
process.on('exit', () => server.kill());
try {
  const port = await new Promise<number>((resolve) => server.stdout!.once('data', (d) => resolve(Number(String(d).trim()))));
  let source: ImportSource = { type: 'HTTP', url: `http://127.0.0.1:${port}/disk.qcow2` };
  if (SOURCE === 'registry') {
    execFileSync('skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${LAYOUT}`, `docker://${dvcr.hostPort}/source/disk:v1`]);
    source = { type: 'ContainerImage', image: `${dvcr.hostPort}/source/disk:v1` };
  }
  const ctx = await createPipelineContext(loadConfig({}, { dvcrUrl: dvcr.url, sourceAllowCidrs: '127.0.0.0/8' }));
  try {
    for (let i = 0; i < RUNS; i++) {
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
  rmSync(dataDir, { recursive: true, force: true });
}
