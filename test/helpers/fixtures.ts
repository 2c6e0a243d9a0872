/**
 * Small images and disks for tests, built on disk:
 * - `buildImageLayout`: an OCI image layout (one image, or an index of several platforms) with layers made
 *   from in-memory files or files on disk, gzip / zstd / uncompressed, including whiteout entries. skopeo
 *   copies it with `oci:<dir>:<tag>` to `docker://host:port/repo:tag`.
 * - `makeDisk`: a blank disk image of a given format (qemu-img).
 * - `makeIso`: a small ISO 9660 image (xorriso).
 *
 * Everything is deterministic (fixed mtimes and `created`), so the same spec always gives the same digests.
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, posix } from 'node:path';
import { PassThrough, Transform, type Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { createGzip } from 'node:zlib';
import { pack, type Header, type Pack } from 'tar-stream';

const run = promisify(execFile);

export const MediaType = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  layerTar: 'application/vnd.oci.image.layer.v1.tar',
  layerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  layerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
} as const;

/** One tar entry. Parent folders are added automatically (0755, root) unless listed. */
export interface FileSpec {
  /** Relative path inside the image, e.g. `disk/x.qcow2`, or a whiteout `disk/.wh.x.qcow2`. */
  path: string;
  /** Default `file`. A whiteout is just an empty file named `.wh.<name>`. */
  type?: 'file' | 'directory' | 'symlink';
  /** File content; with neither `content` nor `fromFile` the file is empty. */
  content?: string | Buffer;
  /** Stream the content from this file on disk (for big disks). */
  fromFile?: string;
  /** Target of a symlink. */
  linkname?: string;
  /** Default 0644 (files), 0755 (folders), 0777 (symlinks). */
  mode?: number;
  /** Default 0 (DVCR images use 107, the qemu user, for /disk). */
  uid?: number;
  gid?: number;
}

/** A whiteout entry hiding `path` of a lower layer: an empty file named `.wh.<name>` beside it. */
export function whiteout(path: string, owner: Pick<FileSpec, 'uid' | 'gid'> = {}): FileSpec {
  const name = posix.basename(path);
  const parent = posix.dirname(path);
  return { path: parent === '.' ? `.wh.${name}` : `${parent}/.wh.${name}`, ...owner };
}

export interface LayerSpec {
  files: FileSpec[];
  /** Default gzip. */
  compression?: 'gzip' | 'zstd' | 'none';
}

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export interface ImageSpec {
  layers: LayerSpec[];
  /** Default linux/amd64. */
  platform?: Platform;
  /** Extra fields of the config's `config` object (Labels, Env, ...). */
  config?: Record<string, unknown>;
}

export interface LayoutSpec extends ImageSpec {
  /** Tag in index.json (`org.opencontainers.image.ref.name`). Default `latest`. */
  tag?: string;
  /** Build an image index with one image per entry instead of a single image (`layers` is then ignored). */
  platforms?: Array<ImageSpec & { platform: Platform }>;
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: Platform;
  annotations?: Record<string, string>;
}

export interface BuiltLayer extends Descriptor {
  /** sha256 of the uncompressed tar (the config's `rootfs.diff_ids` entry). */
  diffId: string;
}

export interface BuiltImage {
  /** The manifest's descriptor (with `platform` inside an index). */
  manifest: Descriptor;
  /** The manifest bytes as stored in the layout. */
  manifestJson: string;
  config: Descriptor;
  layers: BuiltLayer[];
  platform: Platform;
}

export interface BuiltLayout {
  dir: string;
  tag: string;
  /** skopeo source reference: `oci:<dir>:<tag>`. */
  ref: string;
  /** The top-level descriptor: the manifest, or the index for a multi-platform layout. */
  top: Descriptor;
  /** The top-level JSON bytes (manifest or index), as a registry will serve them after a digest-preserving copy. */
  topJson: string;
  images: BuiltImage[];
}

const FIXED_MTIME = new Date('2024-01-01T00:00:00Z');
const CREATED = '2024-01-01T00:00:00Z';

function sha256Hex(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** A pass-through that hashes and counts what flows through it. */
class Digester extends Transform {
  private readonly hash = createHash('sha256');
  size = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: (e?: Error | null, d?: Buffer) => void): void {
    this.hash.update(chunk);
    this.size += chunk.length;
    done(null, chunk);
  }
  digest(): string {
    return `sha256:${this.hash.digest('hex')}`;
  }
}

/** `zstd -c` as a Duplex-like pair of streams, with its failure reported through the returned promise. */
function zstdCompressor(): { input: Writable; output: Readable; done: Promise<void> } {
  const child = spawn('zstd', ['-q', '-c', '-3'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const done = new Promise<void>((resolve, reject) => {
    child.once('error', (e) =>
      reject(
        (e as NodeJS.ErrnoException).code === 'ENOENT'
          ? new Error('zstd is not installed: run `npm run setup` (apt-get install zstd)')
          : e,
      ),
    );
    child.once('close', (code) => (code === 0 ? resolve() : reject(new Error(`zstd exited ${code}: ${stderr}`))));
  });
  return { input: child.stdin, output: child.stdout, done };
}

function withParents(files: FileSpec[]): FileSpec[] {
  const listed = new Set(files.map((f) => posix.normalize(f.path).replace(/\/$/, '')));
  const out: FileSpec[] = [];
  const added = new Set<string>();
  for (const f of files) {
    const parts = posix.normalize(f.path).replace(/\/$/, '').split('/');
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join('/');
      if (!listed.has(dir) && !added.has(dir)) {
        added.add(dir);
        out.push({ path: dir, type: 'directory' });
      }
    }
    out.push(f);
  }
  return out;
}

async function writeEntries(tar: Pack, files: FileSpec[]): Promise<void> {
  for (const f of withParents(files)) {
    const type = f.type ?? 'file';
    const base: Partial<Header> & { name: string } = {
      name: type === 'directory' ? `${f.path.replace(/\/$/, '')}/` : f.path,
      mtime: FIXED_MTIME,
      uid: f.uid ?? 0,
      gid: f.gid ?? f.uid ?? 0,
      uname: '',
      gname: '',
    };
    if (type === 'directory') {
      await addEntry(tar, { ...base, type: 'directory', mode: f.mode ?? 0o755 });
    } else if (type === 'symlink') {
      await addEntry(tar, { ...base, type: 'symlink', linkname: f.linkname ?? '', mode: f.mode ?? 0o777 });
    } else if (f.fromFile !== undefined) {
      const { size } = await stat(f.fromFile);
      await new Promise<void>((resolve, reject) => {
        const entry = tar.entry({ ...base, type: 'file', mode: f.mode ?? 0o644, size }, (err) =>
          err ? reject(err) : resolve(),
        );
        pipeline(createReadStream(f.fromFile!), entry).catch(reject);
      });
    } else {
      const content = typeof f.content === 'string' ? Buffer.from(f.content) : (f.content ?? Buffer.alloc(0));
      await addEntry(tar, { ...base, type: 'file', mode: f.mode ?? 0o644, size: content.length }, content);
    }
  }
}

function addEntry(tar: Pack, header: Partial<Header> & { name: string }, content?: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    tar.entry(header, content ?? Buffer.alloc(0), (err) => (err ? reject(err) : resolve()));
  });
}

/** Writes `data` to the layout's blob store and returns its descriptor. */
async function writeJsonBlob(dir: string, mediaType: string, json: string): Promise<Descriptor> {
  const digest = `sha256:${sha256Hex(json)}`;
  await writeFile(join(dir, 'blobs', 'sha256', digest.slice(7)), json);
  return { mediaType, digest, size: Buffer.byteLength(json) };
}

/** Builds one layer blob: tar -> (diffId) -> compressor -> (digest) -> blobs/sha256/<hex>. */
async function buildLayer(dir: string, spec: LayerSpec): Promise<BuiltLayer> {
  const compression = spec.compression ?? 'gzip';
  const tmp = join(dir, 'blobs', `.layer-${process.pid}-${Math.random().toString(36).slice(2)}`);
  const tar = pack();
  const diff = new Digester();
  const blob = new Digester();
  const producing = writeEntries(tar, spec.files).then(
    () => tar.finalize(),
    (e: unknown) => tar.destroy(e instanceof Error ? e : new Error(String(e))),
  );
  try {
    if (compression === 'zstd') {
      const z = zstdCompressor();
      await Promise.all([
        pipeline(tar, diff, z.input),
        pipeline(z.output, blob, createWriteStream(tmp)),
        z.done,
        producing,
      ]);
    } else {
      const compress = compression === 'gzip' ? createGzip() : new PassThrough();
      await Promise.all([pipeline(tar, diff, compress, blob, createWriteStream(tmp)), producing]);
    }
    const digest = blob.digest();
    await rename(tmp, join(dir, 'blobs', 'sha256', digest.slice(7)));
    const mediaType =
      compression === 'gzip' ? MediaType.layerGzip : compression === 'zstd' ? MediaType.layerZstd : MediaType.layerTar;
    return { mediaType, digest, size: blob.size, diffId: diff.digest() };
  } finally {
    await rm(tmp, { force: true });
  }
}

async function buildImage(dir: string, spec: ImageSpec): Promise<BuiltImage> {
  const platform = spec.platform ?? { os: 'linux', architecture: 'amd64' };
  const layers: BuiltLayer[] = [];
  for (const l of spec.layers) layers.push(await buildLayer(dir, l));
  const configJson = JSON.stringify({
    created: CREATED,
    architecture: platform.architecture,
    os: platform.os,
    ...(platform.variant ? { variant: platform.variant } : {}),
    config: { ...spec.config },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
  });
  const config = await writeJsonBlob(dir, MediaType.ociConfig, configJson);
  const strip = ({ mediaType, digest, size }: Descriptor): Descriptor => ({ mediaType, digest, size });
  const manifestJson = JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: strip(config),
    layers: layers.map(strip),
  });
  const manifest = await writeJsonBlob(dir, MediaType.ociManifest, manifestJson);
  return { manifest: { ...manifest, platform }, manifestJson, config, layers, platform };
}

/**
 * Writes an OCI image layout at `dir` (created if missing; existing blobs are kept). A single image unless
 * `spec.platforms` is given, in which case an image index over those images is the tagged entry.
 */
export async function buildImageLayout(dir: string, spec: LayoutSpec): Promise<BuiltLayout> {
  const tag = spec.tag ?? 'latest';
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const images: BuiltImage[] = [];
  let top: Descriptor;
  let topJson: string;
  if (spec.platforms) {
    if (spec.platforms.length === 0) throw new Error('buildImageLayout: `platforms` is empty');
    for (const p of spec.platforms) images.push(await buildImage(dir, p));
    topJson = JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.ociIndex,
      manifests: images.map((i) => i.manifest),
    });
    top = await writeJsonBlob(dir, MediaType.ociIndex, topJson);
  } else {
    const image = await buildImage(dir, spec);
    images.push(image);
    const { mediaType, digest, size } = image.manifest;
    top = { mediaType, digest, size };
    topJson = image.manifestJson;
  }
  const indexJson = {
    schemaVersion: 2,
    manifests: [{ ...top, annotations: { 'org.opencontainers.image.ref.name': tag } }],
  };
  await writeFile(join(dir, 'index.json'), JSON.stringify(indexJson));
  return { dir, tag, ref: `oci:${dir}:${tag}`, top, topJson, images };
}

export type DiskFormat = 'qcow2' | 'raw' | 'vmdk' | 'vdi' | 'vpc' | 'vhdx';

/** Creates a blank (sparse) disk image of `sizeMiB` MiB with `qemu-img create`. */
export async function makeDisk(path: string, format: DiskFormat, sizeMiB: number): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  try {
    await run('qemu-img', ['create', '-q', '-f', format, path, `${sizeMiB}M`]);
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: string };
    if (err.code === 'ENOENT') throw new Error('qemu-img is not installed: run `npm run setup` (qemu-utils)');
    throw new Error(`qemu-img create -f ${format} ${path} failed: ${err.stderr ?? err.message}`);
  }
}

/**
 * A disk with data in it (unlike `makeDisk`): `mib` MiB where a quarter of every 256 KiB holds random bytes and
 * the rest is zeros, written raw, then converted by qemu-img when `format` is qcow2. Returns its path.
 */
export function makeDataDisk(dir: string, name: string, mib: number, format: 'qcow2' | 'raw' = 'qcow2'): string {
  const raw = join(dir, `${name}.raw`);
  const buf = Buffer.alloc(mib * 1024 * 1024);
  for (let off = 0; off < buf.length; off += 256 * 1024) randomBytes(64 * 1024).copy(buf, off);
  writeFileSync(raw, buf);
  if (format === 'raw') return raw;
  const out = join(dir, `${name}.qcow2`);
  execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, out]);
  return out;
}

/**
 * A LUKS-encrypted qcow2 (`path`, 64 MiB). qemu's PBKDF benchmark can fail on a loaded machine ("Unable to get
 * accurate CPU usage"): it gets a measurable iteration time and a few tries.
 */
export function makeLuksQcow2(path: string): void {
  for (let attempt = 1; ; attempt++) {
    try {
      execFileSync(
        'qemu-img',
        ['create', '-q', '-f', 'qcow2', '--object', 'secret,id=sec0,data=pw',
          '-o', 'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=100', path, '64M'],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      return;
    } catch (e) {
      // qemu times 32768 PBKDF2 rounds by the thread's CPU clock: on a busy machine that can read 0 ms. A pause
      // and another try (the suite runs two files at a time next to registries and workers).
      if (attempt >= 10) throw e;
      execFileSync('sleep', [String(0.1 * attempt)]);
    }
  }
}

export interface IsoOptions {
  /** Volume id. Default `DVCR_TEST`. */
  volumeId?: string;
  /** Files to put on it, path => content. Default one README.TXT. */
  files?: Record<string, string | Buffer>;
}

/** Creates a small ISO 9660 image (with Rock Ridge) with `xorriso -as mkisofs`. */
export async function makeIso(path: string, opts: IsoOptions = {}): Promise<void> {
  const src = await mkdtemp(join(tmpdir(), 'dvcr-iso-src-'));
  try {
    const files = opts.files ?? { 'README.TXT': 'dvcr-importer test ISO\n' };
    for (const [name, content] of Object.entries(files)) {
      await mkdir(dirname(join(src, name)), { recursive: true });
      await writeFile(join(src, name), content);
    }
    await mkdir(dirname(path), { recursive: true });
    await run('xorriso', ['-as', 'mkisofs', '-quiet', '-R', '-V', opts.volumeId ?? 'DVCR_TEST', '-o', path, src]);
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: string };
    if (err.code === 'ENOENT') throw new Error('xorriso is not installed: run `npm run setup`');
    throw new Error(`xorriso could not make ${path}: ${err.stderr ?? err.message}`);
  } finally {
    await rm(src, { recursive: true, force: true });
  }
}
