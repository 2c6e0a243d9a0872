/**
 * `npm run bench`: our importer against what users would otherwise run, measured in the same run on the same
 * machine, reported as ratios. Builds its own fixtures (cached in bench/work/), starts its own Redis and two
 * registries (source and DVCR) on loopback, and writes bench/results.md.
 *
 *   BENCH_SIZE=1Gi       size of the large disk (data in the qcow2)
 *   BENCH_SMALL=500      number of 1 MiB images (each its own random disk) in the many-small scenario
 *   BENCH_SMALL_THREADS=2  import threads of each of its 2 worker processes (WORKER_CONCURRENCY; 2 is its default)
 *   BENCH_MEMORY_SIZES=1Gi,10Gi  sizes for the memory scenario (building the 10Gi fixture takes about 3 minutes
 *                        the first time; fixtures are cached in bench/work, about 12 GiB with it)
 *   BENCH_MEMORY_THREADS=2  import threads of the worker in the memory scenario (WORKER_CONCURRENCY's default)
 *   BENCH_ONLY=registry,http,memory,small,scaling   scenarios to run
 *   BENCH_REPEAT=3       alternating runs of ours and the peer in the registry and HTTP scenarios (medians shown)
 *   BENCH_PROFILE=dir    write V8 CPU profiles of the worker processes (and their threads) into dir
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { loadConfig, type Config } from '../src/config.ts';
import { ImageStore, type Image } from '../src/images/index.ts';
import { ImageService } from '../src/api/service.ts';
import { createDvcrClient } from '../src/pipeline/context.ts';
import { ImportQueue } from '../queues/imports.ts';
import { createRedis } from '../queues/connection.ts';
import { startRedis, startRegistry, type RedisServer, type RegistryServer } from '../src/stack/index.ts';
import { buildImageLayout } from '../test/helpers/fixtures.ts';
import { FILE_SERVER } from './file-server.ts';
import { describeSmallFloor, measureSmallFloor } from './floor-small.ts';

const run = promisify(execFile);
const ROOT = new URL('..', import.meta.url).pathname;
const WORK = join(ROOT, 'bench', 'work');
const BIN = join(ROOT, 'bin', 'dvcr-importer.js');

function parseSize(s: string): number {
  const m = /^(\d+(?:\.\d+)?)(Mi|Gi)$/.exec(s.trim());
  if (!m) throw new Error(`size "${s}": use e.g. 512Mi or 1Gi`);
  return Math.round(Number(m[1]) * (m[2] === 'Gi' ? 2 ** 30 : 2 ** 20));
}
const env = process.env;
const SIZE = parseSize(env.BENCH_SIZE ?? '1Gi');
const SMALL = Number(env.BENCH_SMALL ?? 500);
const SMALL_THREADS = Number(env.BENCH_SMALL_THREADS ?? 2);
const MEMORY_SIZES = (env.BENCH_MEMORY_SIZES ?? '1Gi,10Gi').split(',').map(parseSize);
const MEMORY_THREADS = Number(env.BENCH_MEMORY_THREADS ?? 2);
const REPEAT = Math.max(1, Number(env.BENCH_REPEAT ?? 3));
const ONLY = new Set((env.BENCH_ONLY ?? 'registry,http,memory,small,scaling').split(','));
const human = (n: number) => (n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(1)} GiB` : `${Math.round(n / 2 ** 20)} MiB`);
const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

interface Row {
  scenario: string;
  ours: string;
  peer: string;
  ratio: string;
  target: string;
  met: boolean | undefined;
  note?: string;
}
const rows: Row[] = [];
/** "Where the CPU went" lines, one per measured window, printed under the table. */
const cpuNotes: string[] = [];

/** `timed`, also recording the CPU of the stack's processes (and the given workers) in `cpuNotes`. */
async function timedCpu<T>(
  label: string,
  stack: Stack,
  workers: Array<{ child: ChildProcess }>,
  fn: () => Promise<T>,
  others: Record<string, number | undefined> = {},
): Promise<{ ms: number; value: T; cpu: Record<string, number> }> {
  const window = cpuWindow({
    bench: process.pid,
    ...Object.fromEntries(workers.map((w, i) => [`worker ${i + 1}`, w.child.pid])),
    ...others,
    'source registry': stack.source.pid,
    DVCR: stack.dvcr.pid,
    redis: stack.redis.pid,
  });
  const r = await timed(fn);
  const { line, cpu } = window.stop(r.ms);
  cpuNotes.push(`- ${label}: ${line}`);
  return { ...r, cpu };
}

/** A disk of realistic content: a third random (compressed code and data), a third text-like, a third zeros. */
async function realisticRaw(path: string, bytes: number): Promise<void> {
  const fh = await open(path, 'w');
  const block = 1 << 20;
  const lines = Array.from({ length: 20_000 }, (_, i) => `line ${i}: the quick brown fox jumps over the lazy dog ${i * 7919}\n`);
  const text = Buffer.from(lines.join('')).subarray(0, block);
  try {
    for (let off = 0, i = 0; off < bytes; off += block, i++) {
      const kind = i % 3;
      if (kind === 0) await fh.write(randomBytes(block), 0, block, off);
      else if (kind === 1) await fh.write(text, 0, block, off);
    }
    await fh.truncate(bytes);
  } finally {
    await fh.close();
  }
}

async function qcow2Fixture(bytes: number): Promise<string> {
  const out = join(WORK, `disk-${bytes}.qcow2`);
  if (existsSync(out)) return out;
  const raw = join(WORK, `disk-${bytes}.raw`);
  await realisticRaw(raw, bytes);
  await run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, out]);
  rmSync(raw);
  return out;
}

/**
 * An OCI layout of a containerDisk holding `disk` as `disk/<name>` (cached). Scenarios that push the same disk
 * uncompressed into DVCR use different names: skopeo remembers where it pushed a blob (its blob-info cache) and
 * would mount an identical layer instead of pushing it, which is not the work being measured.
 */
async function layoutFixture(disk: string, compression: 'gzip' | 'none', name = 'disk.qcow2'): Promise<string> {
  const dir = `${disk}.${compression}${name === 'disk.qcow2' ? '' : `.${name}`}.layout`;
  if (existsSync(join(dir, 'index.json'))) return `oci:${dir}:latest`;
  rmSync(dir, { recursive: true, force: true });
  const l = await buildImageLayout(dir, { layers: [{ files: [{ path: `disk/${name}`, fromFile: disk, uid: 107, gid: 107 }], compression }] });
  return l.ref;
}

async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const t = performance.now();
  const value = await fn();
  return { ms: performance.now() - t, value };
}

/** CPU seconds a process has used: itself (all threads) and its reaped children (qemu-img, skopeo, xz...). */
function cpuOf(pid: number): { self: number; children: number } {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
    const hz = 100; // USER_HZ on Linux
    return { self: (f[11]! + f[12]!) / hz, children: (f[13]! + f[14]!) / hz };
  } catch {
    return { self: 0, children: 0 };
  }
}

/**
 * Where the CPU went during a timed window: CPU seconds of each named process (and of its reaped children)
 * between `start()` and `stop()`, as one line for the notes under the table.
 */
function cpuWindow(procs: Record<string, number | undefined>): { stop(wallMs: number): { line: string; cpu: Record<string, number> } } {
  const before = Object.fromEntries(Object.entries(procs).map(([k, pid]) => [k, pid ? cpuOf(pid) : undefined]));
  return {
    stop(wallMs) {
      const parts: string[] = [];
      const cpu: Record<string, number> = {};
      let sum = 0;
      for (const [name, pid] of Object.entries(procs)) {
        const b = before[name];
        if (!pid || !b) continue;
        const a = cpuOf(pid);
        const self = a.self - b.self;
        const kids = a.children - b.children;
        sum += self + kids;
        cpu[name] = self + kids;
        parts.push(`${name} ${self.toFixed(1)} s${kids >= 0.05 ? ` (+ children ${kids.toFixed(1)} s)` : ''}`);
      }
      const line = `CPU over ${secs(wallMs)} wall: ${parts.join(', ')}; total ${sum.toFixed(1)} s of ${((cpus().length * wallMs) / 1000).toFixed(1)} s available on ${cpus().length} cores`;
      return { line, cpu };
    },
  };
}

async function skopeo(args: string[]): Promise<void> {
  await run('skopeo', ['--insecure-policy', ...args], { maxBuffer: 1 << 24 });
}

interface Stack {
  redis: RedisServer;
  source: RegistryServer;
  dvcr: RegistryServer;
  config: Config;
  service: ImageService;
  store: ImageStore;
  close(): Promise<void>;
}

async function startStack(): Promise<Stack> {
  const base = join(WORK, 'stack');
  rmSync(base, { recursive: true, force: true });
  const [redis, source, dvcr] = await Promise.all([
    startRedis({ dataDir: join(base, 'redis') }),
    startRegistry({ dataDir: join(base, 'source') }),
    startRegistry({ dataDir: join(base, 'dvcr') }),
  ]);
  const config = loadConfig({}, {
    redisUrl: redis.url,
    redisPrefix: '{bench}',
    dvcrUrl: dvcr.url,
    insecureRegistries: `${source.hostPort},${dvcr.hostPort}`,
    sourceAllowCidrs: '127.0.0.0/8,::1/128',
    logLevel: 'warn',
  });
  const conn = createRedis(config.redisUrl, 'producer', { enableOfflineQueue: true });
  const store = new ImageStore({ redis: conn, prefix: `${config.redisPrefix}:images` });
  const queue = new ImportQueue({ redisUrl: config.redisUrl, prefix: config.redisPrefix, attempts: 2 });
  const dvcrClient = await createDvcrClient(config);
  const service = new ImageService({ store, queue, dvcr: dvcrClient, dvcrHost: dvcr.hostPort, logger: pino({ level: 'warn' }) });
  return {
    redis,
    source,
    dvcr,
    config,
    service,
    store,
    async close() {
      await queue.close();
      await dvcrClient.close();
      await conn.quit();
      await Promise.all([redis.stop(), source.stop(), dvcr.stop()]);
      // The registries' data (tens of GiB after the memory scenario); the fixtures stay cached in bench/work.
      rmSync(base, { recursive: true, force: true });
    },
  };
}

/** A worker process (as deployed), with its peak RSS read from /proc when it exits. */
function workerProcess(stack: Stack, concurrency: number): { child: ChildProcess; peakRss(): number } {
  const c = stack.config;
  const profile = env.BENCH_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${env.BENCH_PROFILE}`] : [];
  const child = spawn(process.execPath, [...profile, BIN, 'worker'], {
    env: {
      ...env,
      REDIS_URL: c.redisUrl,
      REDIS_PREFIX: c.redisPrefix,
      DVCR_URL: c.dvcrUrl,
      INSECURE_REGISTRIES: c.insecureRegistries.join(','),
      SOURCE_ALLOW_CIDRS: '127.0.0.0/8,::1/128',
      WORKER_CONCURRENCY: String(concurrency),
      LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  let peak = 0;
  const timer = setInterval(() => {
    try {
      const status = readFileSync(`/proc/${child.pid}/status`, 'utf8');
      const hwm = /VmHWM:\s+(\d+) kB/.exec(status);
      if (hwm) peak = Math.max(peak, Number(hwm[1]) * 1024);
    } catch {
      /* exited */
    }
  }, 200);
  child.once('exit', () => clearInterval(timer));
  return { child, peakRss: () => peak };
}

async function stopWorker(w: { child: ChildProcess }): Promise<void> {
  if (w.child.exitCode !== null) return;
  w.child.kill('SIGTERM');
  await new Promise((r) => w.child.once('exit', r));
}

function cvi(name: string, dataSource: Record<string, unknown>) {
  return { apiVersion: 'virtualization.deckhouse.io/v1alpha2', kind: 'ClusterVirtualImage', metadata: { name }, spec: { dataSource } };
}

/** Applies the images and waits until every one is Ready (fails on Failed). */
async function importAll(stack: Stack, manifests: Array<ReturnType<typeof cvi>>): Promise<Image[]> {
  const names = new Set(manifests.map((m) => m.metadata.name));
  const done = new Map<string, Image>();
  const ac = new AbortController();
  const watching = (async () => {
    for await (const ev of stack.store.watch('ClusterVirtualImage', { signal: ac.signal, blockMs: 1000 })) {
      if (ev.type === 'BOOKMARK' || !names.has(ev.object.metadata.name)) continue;
      const phase = ev.object.status.phase;
      if (phase === 'Failed') throw new Error(`${ev.object.metadata.name} failed: ${ev.object.status.failure?.message}`);
      if (phase === 'Ready') done.set(ev.object.metadata.name, ev.object);
      if (done.size === names.size) return;
    }
  })();
  for (const m of manifests) await stack.service.apply(m);
  try {
    await watching;
  } finally {
    ac.abort();
  }
  return [...done.values()];
}

let seq = 0;
const uniq = (p: string) => `${p}-${++seq}`;

let warmSource: string | undefined;
/**
 * Starts worker processes and waits until each has run one tiny import, so process start, TypeScript loading and
 * thread start-up are not counted as import time (a deployed worker is long-running).
 */
async function warmWorkers(stack: Stack, count: number, concurrency: number): Promise<Array<ReturnType<typeof workerProcess>>> {
  if (!warmSource) {
    const dir = join(WORK, 'warm');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'warm.img'), randomBytes(64 * 1024));
    const layout = await layoutFixture(join(dir, 'warm.img'), 'none');
    warmSource = `${stack.source.hostPort}/bench/warm:v1`;
    await skopeo(['copy', '--dest-tls-verify=false', layout, `docker://${warmSource}`]);
  }
  const workers = Array.from({ length: count }, () => workerProcess(stack, concurrency));
  // Enough warm-up imports that every thread of every worker is likely to have run one.
  await importAll(stack, Array.from({ length: count * concurrency }, () => cvi(uniq('warm'), { type: 'ContainerImage', containerImage: { image: warmSource } })));
  return workers;
}

/** The largest blob of an OCI layout (`oci:<dir>:latest`): its one layer. */
function largestBlob(layoutRef: string): { path: string; digest: string } {
  const dir = join(layoutRef.replace(/^oci:/, '').replace(/:latest$/, ''), 'blobs', 'sha256');
  const [name] = readdirSync(dir).sort((a, b) => statSync(join(dir, b)).size - statSync(join(dir, a)).size);
  return { path: join(dir, name!), digest: `sha256:${name}` };
}

/** A bare blob upload by curl (POST, one PATCH of the file, PUT with the digest): what moving the bytes costs. */
async function curlUpload(registryUrl: string, repository: string, blob: { path: string; digest: string }): Promise<void> {
  const location = async (args: string[]): Promise<string> => {
    const { stdout } = await run('curl', ['-sS', '--fail', '-D', '-', '-o', '/dev/null', ...args]);
    const loc = /^location: (\S+)/im.exec(stdout)?.[1];
    if (!loc) throw new Error(`curl ${args[1]}: no Location in ${stdout}`);
    return new URL(loc, registryUrl).href;
  };
  const session = await location(['-X', 'POST', `${registryUrl}/v2/${repository}/blobs/uploads/`]);
  // -T streams the file (--data-binary @file would read it all into memory first); no Expect: 100-continue.
  const patched = await location(['-X', 'PATCH', '-H', 'Content-Type: application/octet-stream', '-H', 'Expect:', '-T', blob.path, session]);
  const put = new URL(patched);
  put.searchParams.set('digest', blob.digest);
  await run('curl', ['-sS', '--fail', '-X', 'PUT', '-o', '/dev/null', put.href]);
}

/** skopeo's blob-info cache (root's): where it remembers pushing blobs, so that it mounts them next time. */
const SKOPEO_BLOB_CACHE = '/var/lib/containers/cache/blob-info-cache-v1.boltdb';

/**
 * A measured skopeo run starts with no memory of earlier pushes: with it, a repeated copy of the same image into
 * the same DVCR becomes a mount of blobs already there, which is not the copy being measured.
 */
async function skopeoCold(args: string[]): Promise<void> {
  rmSync(SKOPEO_BLOB_CACHE, { force: true });
  await skopeo(args);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;
const runsOf = (xs: number[]) => xs.map((x) => (x / 1000).toFixed(1)).join(', ');

async function registryScenario(stack: Stack): Promise<void> {
  const disk = await qcow2Fixture(SIZE);
  const layout = await layoutFixture(disk, 'gzip');
  const src = `${stack.source.hostPort}/bench/disk:gzip`;
  await skopeo(['copy', '--dest-tls-verify=false', layout, `docker://${src}`]);
  // The layer DVCR must end up with (the disk uncompressed in a tar), as a file for the floor's upload.
  const plainLayer = largestBlob(await layoutFixture(disk, 'none'));
  const [w] = await warmWorkers(stack, 1, 1);
  const peer: number[] = [];
  const floor: number[] = [];
  const ours: number[] = [];
  try {
    // Alternating runs, medians reported: the machine is shared, and DVCR's cost for the same bytes moves with the
    // page cache.
    for (let r = 1; r <= REPEAT; r++) {
      // Peer: skopeo copying the same image between the same two registries (it moves blobs, does no more).
      peer.push((await timedCpu(`Registry -> DVCR, skopeo copy (run ${r})`, stack, [], () =>
        skopeoCold(['copy', '--src-tls-verify=false', '--dest-tls-verify=false', `docker://${src}`, `docker://${stack.dvcr.hostPort}/peer/disk-${seq++}:v1`]))).ms);
      // The floor DVCR itself sets: curl uploading the uncompressed layer DVCR must store, from a file, nothing
      // else. (skopeo cannot measure it: it gzips every uncompressed layer it pushes to a registry.)
      floor.push((await timedCpu(`Registry -> DVCR floor, curl upload of the uncompressed layer (run ${r})`, stack, [], () =>
        curlUpload(stack.dvcr.url, `peer/floor-${seq++}`, plainLayer))).ms);
      ours.push((await timedCpu(`Registry -> DVCR, ours (run ${r})`, stack, [w!], () =>
        importAll(stack, [cvi(uniq('reg'), { type: 'ContainerImage', containerImage: { image: src } })]))).ms);
    }
  } finally {
    await stopWorker(w!);
  }
  const ratio = median(ours) / median(peer);
  rows.push({
    scenario: `Registry -> DVCR floor: the same disk's uncompressed layer uploaded from a file`,
    ours: secs(median(ours)),
    peer: `curl upload ${secs(median(floor))}`,
    ratio: `${(median(ours) / median(floor)).toFixed(2)}x`,
    target: 'report',
    met: undefined,
    note: `DVCR must receive the uncompressed layer (the contract): POST, one PATCH of ${human(statSync(plainLayer.path).size)}, PUT by curl is the cost of moving those bytes alone; runs: ${runsOf(floor)} s`,
  });
  rows.push({
    scenario: `Registry -> DVCR, ${human(statSync(disk).size)} qcow2 in a gzip layer`,
    ours: secs(median(ours)),
    peer: `skopeo copy ${secs(median(peer))}`,
    ratio: `${ratio.toFixed(2)}x`,
    target: '<= 1.5x',
    met: ratio <= 1.5,
    note: `median of ${REPEAT} alternating runs, ours ${runsOf(ours)} s, skopeo ${runsOf(peer)} s; ours also gunzips, extracts /disk/, hashes, probes with qemu-img and writes an uncompressed layer`,
  });
}

async function httpScenario(stack: Stack): Promise<void> {
  const disk = await qcow2Fixture(SIZE);
  const size = statSync(disk).size;
  // The file server is a process of its own (as a real one would be), so that it neither slows nor is slowed by
  // the bench's own event loop.
  const server = spawn(process.execPath, ['-e', FILE_SERVER, disk], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    server.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
    server.once('exit', (code) => reject(new Error(`the bench's file server exited (${code})`)));
  });
  const url = `http://127.0.0.1:${port}/disk.qcow2`;
  const layout = await layoutFixture(disk, 'none', 'http.qcow2');
  const download = join(WORK, 'download.qcow2');
  const curl: number[] = [];
  const push: number[] = [];
  const ours: number[] = [];
  const [w] = await warmWorkers(stack, 1, 1);
  try {
    for (let r = 1; r <= REPEAT; r++) {
      curl.push((await timedCpu(`HTTP -> DVCR, curl download (run ${r})`, stack, [], () => run('curl', ['-sS', '--fail', '-o', download, url]), { 'file server': server.pid })).ms);
      push.push((await timedCpu(`HTTP -> DVCR, skopeo push (run ${r})`, stack, [], () =>
        skopeoCold(['copy', '--dest-tls-verify=false', layout, `docker://${stack.dvcr.hostPort}/peer/http-${seq++}:v1`]))).ms);
      rmSync(download, { force: true });
      ours.push((await timedCpu(`HTTP -> DVCR, ours (run ${r})`, stack, [w!], () => importAll(stack, [cvi(uniq('http'), { type: 'HTTP', http: { url } })]), { 'file server': server.pid })).ms);
    }
  } finally {
    await stopWorker(w!);
    server.kill();
  }
  const peerRuns = curl.map((c, i) => c + push[i]!);
  const ratio = median(ours) / median(peerRuns);
  rows.push({
    scenario: `HTTP -> DVCR, ${human(size)} qcow2`,
    ours: secs(median(ours)),
    peer: `curl ${secs(median(curl))} + skopeo push ${secs(median(push))}`,
    ratio: `${ratio.toFixed(2)}x`,
    target: '<= 0.8x',
    met: ratio <= 0.8,
    note: `median of ${REPEAT} alternating runs, ours ${runsOf(ours)} s, curl + skopeo ${runsOf(peerRuns)} s`,
  });
}

async function memoryScenario(stack: Stack): Promise<void> {
  const peaks: Array<[number, number]> = [];
  for (const bytes of MEMORY_SIZES) {
    const disk = await qcow2Fixture(bytes);
    const layout = await layoutFixture(disk, 'gzip');
    const tag = `mem-${bytes}`;
    await skopeo(['copy', '--dest-tls-verify=false', layout, `docker://${stack.source.hostPort}/bench/disk:${tag}`]);
    const w = workerProcess(stack, MEMORY_THREADS);
    try {
      await importAll(stack, [cvi(uniq('mem'), { type: 'ContainerImage', containerImage: { image: `${stack.source.hostPort}/bench/disk:${tag}` } })]);
      peaks.push([bytes, w.peakRss()]);
    } finally {
      await stopWorker(w);
    }
  }
  const max = Math.max(...peaks.map(([, p]) => p));
  const growth = peaks.length > 1 ? peaks.at(-1)![1] - peaks[0]![1] : 0;
  rows.push({
    scenario: `Memory: worker peak RSS importing ${peaks.map(([b]) => human(b)).join(' / ')} (${MEMORY_THREADS} import threads)`,
    ours: peaks.map(([, p]) => human(p)).join(' / '),
    peer: '-',
    ratio: '-',
    target: '<= 256 MiB, no growth with size',
    met: max <= 256 * 2 ** 20 && growth <= 32 * 2 ** 20,
    note: `growth ${human(Math.max(0, growth))}`,
  });
}

async function smallScenario(stack: Stack): Promise<void> {
  const dir = join(WORK, 'small');
  mkdirSync(dir, { recursive: true });
  // Every image its own random disk: nothing can be deduplicated (neither by us nor by skopeo's blob cache).
  const layouts: string[] = [];
  for (let i = 0; i < SMALL; i++) {
    const file = join(dir, `small-${i}.img`);
    if (!existsSync(`${file}.gzip.layout/index.json`)) writeFileSync(file, randomBytes(1 << 20));
    layouts.push(await layoutFixture(file, 'gzip'));
  }
  const refs: string[] = [];
  for (let i = 0; i < SMALL; i++) refs.push(`${stack.source.hostPort}/small/img${i}:v1`);
  // Pushing them into the source registry is setup, not measured.
  await Promise.all(
    Array.from({ length: 8 }, async (_, k) => {
      for (let i = k; i < SMALL; i += 8) await skopeo(['copy', '--dest-tls-verify=false', layouts[i]!, `docker://${refs[i]}`]);
    }),
  );
  const peer = await timedCpu(`${SMALL} small images, skopeo x8`, stack, [], () =>
    Promise.all(
      Array.from({ length: 8 }, async (_, k) => {
        for (let i = k; i < SMALL; i += 8) {
          await skopeo(['copy', '--src-tls-verify=false', '--dest-tls-verify=false', `docker://${refs[i]}`, `docker://${stack.dvcr.hostPort}/peer/small${i}:v1`]);
        }
      }),
    ),
  );
  const workers = await warmWorkers(stack, 2, SMALL_THREADS);
  try {
    const ours = await timedCpu(`${SMALL} small images, ours`, stack, workers, () => importAll(stack, refs.map((r, i) => cvi(`small-${i}`, { type: 'ContainerImage', containerImage: { image: r } }))));
    const ourRate = SMALL / (ours.ms / 1000);
    const peerRate = SMALL / (peer.ms / 1000);
    const ratio = ourRate / peerRate;
    // The registries run on the same cores: what they alone spent per image bounds any importer here.
    const registriesCpu = (ours.cpu['source registry'] ?? 0) + (ours.cpu.DVCR ?? 0);
    const ceiling = registriesCpu > 0 ? (cpus().length * SMALL) / registriesCpu : Infinity;
    const workersCpu = Object.entries(ours.cpu).filter(([k]) => k.startsWith('worker')).reduce((a, [, v]) => a + v, 0);
    // What 3x would leave ours: the cores' time per image at 3x skopeo's rate, less what the others used per image.
    const othersCpu = registriesCpu + (ours.cpu.redis ?? 0) + (ours.cpu.bench ?? 0);
    const allowedMs = (1000 * cpus().length) / (3 * peerRate) - (1000 * othersCpu) / SMALL;
    const floor = await measureSmallFloor(stack.redis.url, stack.dvcr.url);
    rows.push({
      scenario: `${SMALL} imports of 1 MiB images (2 worker processes x ${SMALL_THREADS})`,
      ours: `${ourRate.toFixed(1)} images/s`,
      peer: `skopeo x8 ${peerRate.toFixed(1)} images/s`,
      ratio: `${ratio.toFixed(2)}x`,
      target: '>= 3x',
      met: ratio >= 3,
      note:
        `ceiling: the two registries alone used ${((1000 * registriesCpu) / SMALL).toFixed(0)} ms of CPU per image, so with ` +
        `${cpus().length} cores and an importer costing nothing no run here exceeds ${ceiling.toFixed(0)} images/s = ` +
        `${(ceiling / peerRate).toFixed(2)}x skopeo; ours used ${((1000 * workersCpu) / SMALL).toFixed(0)} ms per image in its worker processes. ` +
        `3x leaves ours ${allowedMs.toFixed(1)} ms per image (the cores' time at 3x skopeo's rate less what the registries, Redis and the bench ` +
        `used per image); the contract's work alone costs ${floor.perImage.toFixed(1)} ms here (bench/floor-small.ts: ${describeSmallFloor(floor)})`,
    });
  } finally {
    await Promise.all(workers.map(stopWorker));
  }
}

async function scalingScenario(stack: Stack): Promise<void> {
  const disk = await qcow2Fixture(SIZE);
  const layout = await layoutFixture(disk, 'gzip');
  const src = `${stack.source.hostPort}/bench/disk:scaling`;
  await skopeo(['copy', '--dest-tls-verify=false', layout, `docker://${src}`]);
  const parts: string[] = [];
  for (const n of [1, 2, 4]) {
    const [w] = await warmWorkers(stack, 1, n);
    try {
      const t = await timedCpu(`Scaling, ${n} concurrent`, stack, [w!], () => importAll(stack, Array.from({ length: n }, () => cvi(uniq('scale'), { type: 'ContainerImage', containerImage: { image: src } }))));
      const mbps = (n * statSync(disk).size) / 2 ** 20 / (t.ms / 1000);
      parts.push(`${n}: ${mbps.toFixed(0)} MiB/s`);
    } finally {
      await stopWorker(w!);
    }
  }
  rows.push({ scenario: `Scaling: concurrent ${human(statSync(disk).size)} imports, aggregate disk throughput`, ours: parts.join(', '), peer: '-', ratio: '-', target: 'report', met: undefined });
}

function machine(): string {
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  return `${cpus().length} x ${cpu}, ${human(totalmem())} RAM, Node.js ${process.version}, ${new Date().toISOString().slice(0, 10)}`;
}

/** The heading from which bench/results.md is written by hand; a run keeps that part as it is. */
const HAND_WRITTEN = '## Written by hand';

function render(): string {
  const lines = [
    '| scenario | ours | peer | ratio | target | met |',
    '|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.scenario} | ${r.ours} | ${r.peer} | ${r.ratio} | ${r.target} | ${r.met === undefined ? '-' : r.met ? 'yes' : 'no'}${r.note ? ` (${r.note})` : ''} |`),
  ];
  return lines.join('\n');
}

async function main(): Promise<void> {
  mkdirSync(WORK, { recursive: true });
  const started = Date.now();
  const stack = await startStack();
  try {
    if (ONLY.has('registry')) await registryScenario(stack);
    if (ONLY.has('http')) await httpScenario(stack);
    if (ONLY.has('memory')) await memoryScenario(stack);
    if (ONLY.has('small')) await smallScenario(stack);
    if (ONLY.has('scaling')) await scalingScenario(stack);
  } finally {
    await stack.close();
  }
  const table = render();
  const cpuSection = cpuNotes.length
    ? ['', 'Where the CPU went: CPU seconds of each process during each timed window ("children": processes it ran and reaped, i.e. skopeo and curl for the bench, qemu-img for a worker):', '', ...cpuNotes]
    : [];
  process.stdout.write(`\n${table}\n${cpuSection.join('\n')}\n\nMachine: ${machine()}; total ${secs(Date.now() - started)}\n`);
  // What people wrote below the generated part (readings, the log of measured changes) is kept across runs.
  const resultsPath = join(ROOT, 'bench', 'results.md');
  const previous = existsSync(resultsPath) ? readFileSync(resultsPath, 'utf8') : '';
  const handWritten = previous.indexOf(HAND_WRITTEN);
  const md = [
    '# Benchmark results',
    '',
    'Produced by `npm run bench` (bench/run.ts). Ours and the peer run in the same process tree, same machine,',
    'same registries, one after the other; ratios compare wall times (images/s for the many-small scenario).',
    '',
    `Machine: ${machine()}. Large disk: ${human(SIZE)} of data (a third random, a third text, a third zeros).`,
    `Run: BENCH_SIZE=${env.BENCH_SIZE ?? '1Gi'} BENCH_SMALL=${SMALL} BENCH_MEMORY_SIZES=${env.BENCH_MEMORY_SIZES ?? '1Gi,10Gi'} ` +
      `BENCH_REPEAT=${REPEAT} BENCH_ONLY=${[...ONLY].join(',')}; ${secs(Date.now() - started)} in all (fixtures not yet in bench/work are built first).`,
    '',
    table,
    ...cpuSection,
    '',
    handWritten >= 0 ? previous.slice(handWritten).trimEnd() : `${HAND_WRITTEN}\n\n(none yet)`,
    '',
  ].join('\n');
  writeFileSync(resultsPath, md);
}

await main();
