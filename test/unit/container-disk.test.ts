import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { Readable } from 'node:stream';
import { createGunzip, createGzip, gzipSync } from 'node:zlib';
import fc from 'fast-check';
import tar from 'tar-stream';
import { describe, expect, it } from 'vitest';
import {
  ContainerDiskError,
  extractContainerDisk,
  type DiskEntry,
  type ExtractContainerDiskOptions,
  type LayerSource,
} from '../../src/sources/container-disk.ts';

// ---- fixtures: layers built in memory ------------------------------------------------------------------

type Fx =
  | { type: 'file'; name: string; data?: string | Buffer; mode?: number }
  | { type: 'dir'; name: string }
  | { type: 'symlink' | 'link'; name: string; target: string }
  | { type: 'character-device'; name: string };

const file = (name: string, data: string | Buffer = `bytes of ${name}`, mode?: number): Fx => ({
  type: 'file',
  name,
  data,
  ...(mode === undefined ? {} : { mode }),
});
const dir = (name: string): Fx => ({ type: 'dir', name });
const symlink = (name: string, target: string): Fx => ({ type: 'symlink', name, target });
const hardlink = (name: string, target: string): Fx => ({ type: 'link', name, target });
/** A whiteout as Docker writes it: an empty regular file named `.wh.<name>`. */
const whiteout = (dirName: string, name: string): Fx => file(`${dirName}${dirName ? '/' : ''}.wh.${name}`, '');
const opaque = (dirName: string): Fx => file(`${dirName}${dirName ? '/' : ''}.wh..wh..opq`, '');

async function tarOf(entries: readonly Fx[]): Promise<Buffer> {
  const pack = tar.pack();
  for (const e of entries) {
    if (e.type === 'file') {
      const data = Buffer.from(e.data ?? '');
      pack.entry({ name: e.name, type: 'file', mode: e.mode ?? 0o644, size: data.length }, data);
    } else if (e.type === 'dir') {
      pack.entry({ name: e.name, type: 'directory', mode: 0o755 });
    } else if (e.type === 'character-device') {
      pack.entry({ name: e.name, type: 'character-device', mode: 0o600 });
    } else {
      pack.entry({ name: e.name, type: e.type, linkname: e.target, mode: 0o777 });
    }
  }
  pack.finalize();
  const parts: Buffer[] = [];
  for await (const chunk of pack) parts.push(Buffer.from(chunk as Uint8Array));
  return Buffer.concat(parts);
}

interface TestLayer extends LayerSource {
  readonly bytes: Buffer;
  opened: boolean;
  stream: Readable | null;
}

/** A layer served from memory in chunks of `chunk` bytes; `log` records when it is opened. */
function layerOf(bytes: Buffer, label: string, log?: string[], chunk = 4096): TestLayer {
  const layer: TestLayer = {
    bytes,
    digest: `sha256:${createHash('sha256').update(bytes).digest('hex')}`,
    size: bytes.length,
    opened: false,
    stream: null,
    open() {
      log?.push(`open ${label}`);
      layer.opened = true;
      layer.stream = Readable.from(chunksOf(bytes, chunk), { objectMode: false });
      return layer.stream;
    },
  };
  return layer;
}

function* chunksOf(bytes: Buffer, size: number): Generator<Buffer> {
  for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, Math.min(bytes.length, i + size));
}

/** Layers, base first, each gzipped unless `plain`. */
async function stack(layers: readonly (readonly Fx[])[], opts: { plain?: boolean; log?: string[] } = {}) {
  return Promise.all(
    layers.map(async (entries, i) => {
      const t = await tarOf(entries);
      return layerOf(opts.plain ? t : gzipSync(t), String(i), opts.log);
    }),
  );
}

async function readAll(entry: DiskEntry): Promise<string> {
  const parts: Buffer[] = [];
  for await (const c of entry.stream) parts.push(c as Buffer);
  return Buffer.concat(parts).toString();
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error('expected a rejection');
}

async function diskError(p: Promise<unknown>): Promise<ContainerDiskError> {
  const e = await rejection(p);
  if (!(e instanceof ContainerDiskError)) throw e;
  expect(e.permanent).toBe(true);
  return e;
}

const extract = (layers: LayerSource[], opts?: ExtractContainerDiskOptions) =>
  extractContainerDisk(layers, readAll, opts);

// ---- the disk file --------------------------------------------------------------------------------------

describe('extractContainerDisk: finding the disk file', () => {
  it('streams the one disk file of a single gzip layer, with its header facts and byte progress', async () => {
    const [layer] = await stack([[dir('disk/'), file('disk/ubuntu.qcow2', 'QFI\xfb qcow2 bytes', 0o640)]]);
    const progress: number[] = [];
    const out = await extract([layer!], { onLayerBytes: (n) => progress.push(n) });
    expect(out.result).toBe('QFI\xfb qcow2 bytes');
    expect(out.entry).toEqual({ path: 'disk/ubuntu.qcow2', name: 'ubuntu.qcow2', size: 17, mode: 0o640 });
    expect(out.layerIndex).toBe(0);
    expect(progress.at(-1)).toBe(layer!.size);
    expect(progress).toEqual([...progress].sort((a, b) => a - b));
  });

  it.each([['./disk/x.img'], ['/disk/x.img'], ['disk//x.img'], ['./disk/./x.img']])(
    'accepts %s (plain tar and gzip)',
    async (name) => {
      for (const plain of [true, false]) {
        const layers = await stack([[file(name, 'disk')]], { plain });
        const out = await extract(layers);
        expect(out.entry.path).toBe('disk/x.img');
        expect(out.result).toBe('disk');
      }
    },
  );

  it('finds the disk file in a lower layer when the upper one adds unrelated files', async () => {
    const layers = await stack([[dir('disk'), file('disk/a.qcow2', 'A')], [file('etc/motd', 'hi'), dir('disk')]]);
    const out = await extract(layers);
    expect(out).toMatchObject({ result: 'A', layerIndex: 0, entry: { path: 'disk/a.qcow2' } });
  });

  it('takes the upper disk file when a whiteout in layer 2 removes the one of layer 1', async () => {
    const layers = await stack([[file('disk/a.qcow2', 'old')], [whiteout('disk', 'a.qcow2'), file('disk/b.qcow2', 'new')]]);
    const calls: string[] = [];
    const out = await extractContainerDisk(layers, async (e) => {
      calls.push(e.path);
      return readAll(e);
    });
    expect(out).toMatchObject({ result: 'new', layerIndex: 1, entry: { path: 'disk/b.qcow2' } });
    expect(calls).toEqual(['disk/b.qcow2']);
  });

  it('a file in an upper layer shadows the same path below (top-most layer wins)', async () => {
    const layers = await stack([[file('disk/a.qcow2', 'old')], [file('./disk/a.qcow2', 'new')]]);
    expect(await extract(layers)).toMatchObject({ result: 'new', layerIndex: 1 });
  });

  it('says so when a whiteout removed the only disk file', async () => {
    const layers = await stack([[file('disk/a.qcow2', 'A'), file('etc/os-release')], [whiteout('disk', 'a.qcow2')]]);
    const e = await diskError(extract(layers));
    expect(e.reason).toBe('NoDiskFile');
    expect(e.message).toMatch(/^no disk file under \/disk\/ in 2 layers/);
    expect(e.message).toContain('disk/a.qcow2 was removed by a whiteout in layer 2');
    expect(e.message).toContain('etc/os-release');
  });

  it('honours opaque directories: .wh..wh..opq hides everything of lower layers in that directory', async () => {
    const layers = await stack([[file('disk/a.qcow2', 'A')], [opaque('disk'), file('disk/b.qcow2', 'B')]]);
    expect(await extract(layers)).toMatchObject({ result: 'B', layerIndex: 1 });

    const hidden = await stack([[file('disk/a.qcow2', 'A')], [opaque('disk')]]);
    const e = await diskError(extract(hidden));
    expect(e.reason).toBe('NoDiskFile');
    expect(e.message).toContain('disk/a.qcow2 was hidden by an opaque /disk/ (.wh..wh..opq) in layer 2');

    const root = await stack([[file('disk/a.qcow2', 'A')], [opaque('')]]);
    expect((await diskError(extract(root))).message).toContain('opaque root directory');
  });

  it('an opaque marker or whiteout never hides files of its own layer', async () => {
    const layers = await stack([[file('disk/a.qcow2', 'A'), opaque('disk'), whiteout('disk', 'a.qcow2')]]);
    expect(await extract(layers)).toMatchObject({ result: 'A' });
  });

  it('a whiteout of /disk, or /disk turned into a symlink, hides all lower disk files', async () => {
    const gone = await stack([[file('disk/a.qcow2')], [whiteout('', 'disk')]]);
    expect((await diskError(extract(gone))).message).toContain('disk/a.qcow2 was removed by a whiteout of /disk in layer 2');
    const linked = await stack([[file('disk/a.qcow2')], [symlink('disk', '/var/lib/images')]]);
    expect((await diskError(extract(linked))).message).toContain('because /disk is a symlink in layer 2');
  });

  it('an upper directory at disk/<name> (even implied by disk/<name>/x) shadows a lower file', async () => {
    const layers = await stack([[file('disk/a.qcow2'), file('disk/b.qcow2', 'B')], [file('disk/a.qcow2/readme')]]);
    expect(await extract(layers)).toMatchObject({ result: 'B', entry: { path: 'disk/b.qcow2' } });
  });

  it('skips directories, deeper files and aufs metadata under disk/', async () => {
    const layers = await stack([
      [dir('disk/'), dir('disk/sub/'), file('disk/sub/nested.qcow2'), file('disk/.wh..wh.plnk'), file('disk/x.raw', 'X')],
    ]);
    expect(await extract(layers)).toMatchObject({ result: 'X', entry: { path: 'disk/x.raw' } });
  });

  it('reads empty layers: zero bytes, only the end-of-archive blocks, and an empty gzip tar', async () => {
    const layers = [
      layerOf(Buffer.alloc(0), 'empty'),
      layerOf(Buffer.alloc(1024), 'zeros'),
      layerOf(gzipSync(await tarOf([])), 'empty-gz'),
      layerOf(await tarOf([file('disk/a.img', 'A')]), 'disk'),
      layerOf(Buffer.alloc(100), 'short-zeros'),
    ];
    expect(await extract(layers)).toMatchObject({ result: 'A', layerIndex: 3 });
  });

  it('reads a pre-POSIX (v7) tar header without ustar magic', async () => {
    const t = await tarOf([file('disk/old.img', 'V7')]);
    t.fill(0, 257, 265); // magic and version
    t.fill(0x20, 148, 156);
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += t[i]!;
    t.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
    expect(await extract([layerOf(t, 'v7')])).toMatchObject({ result: 'V7' });
  });

  it.skipIf(spawnSync('xz', ['--version']).status !== 0 || spawnSync('zstd', ['--version']).status !== 0)(
    'sniffs xz and zstd layers by their bytes and decodes them by default',
    async () => {
      const lower = await tarOf([file('etc/hostname')]);
      const upper = await tarOf([file('disk/a.qcow2', 'from zstd')]);
      const xz = spawnSync('xz', ['-c'], { input: lower }).stdout;
      const zst = spawnSync('zstd', ['-c', '-q'], { input: upper }).stdout;
      const out = await extract([layerOf(xz, 'xz'), layerOf(zst, 'zstd')]);
      expect(out).toMatchObject({ result: 'from zstd', layerIndex: 1 });
    },
  );

  it('accepts an injected decompressor, given the sniffed compression', async () => {
    const seen: string[] = [];
    const layers = await stack([[file('disk/a.img', 'A')]]);
    const out = await extract(layers, {
      decompress: (s, compression) => {
        seen.push(compression);
        return s.pipe(createGunzip());
      },
    });
    expect(out.result).toBe('A');
    expect(seen).toEqual(['gzip']);
  });
});

// ---- what does not count ----------------------------------------------------------------------------------

describe('extractContainerDisk: none, several, and things that are not disk files', () => {
  it('fails with NoDiskFile listing what the layers hold', async () => {
    const layers = await stack([[file('disk.img'), file('images/ubuntu.qcow2')], [file('etc/hostname')]]);
    const e = await diskError(extract(layers));
    expect(e.reason).toBe('NoDiskFile');
    expect(e.message).toBe(
      'no disk file under /disk/ in 2 layers; the layers hold: etc/hostname, disk.img, images/ubuntu.qcow2',
    );
    expect((await diskError(extract([]))).message).toBe('no disk file under /disk/ in 0 layers; the layers hold no files');
  });

  it('fails with MultipleDiskFiles for two disk files in one layer, naming both', async () => {
    const layers = await stack([[file('disk/a.qcow2'), file('disk/b.qcow2')]]);
    const e = await diskError(extract(layers));
    expect(e.reason).toBe('MultipleDiskFiles');
    expect(e.message).toContain('disk/a.qcow2 and disk/b.qcow2 (both in layer 1)');
  });

  it('fails with MultipleDiskFiles for visible disk files in different layers, after consume started', async () => {
    const layers = await stack([[file('disk/a.qcow2', 'A')], [file('etc/x')], [file('disk/b.qcow2', 'B')]]);
    let consumeSignal: AbortSignal | undefined;
    const e = await diskError(
      extractContainerDisk(layers, async (entry, signal) => {
        consumeSignal = signal;
        return readAll(entry);
      }),
    );
    expect(e.reason).toBe('MultipleDiskFiles');
    expect(e.message).toContain('disk/b.qcow2 (layer 3) and disk/a.qcow2 (layer 1)');
    expect(consumeSignal?.aborted).toBe(true);
  });

  it('fails when one disk path appears twice in a layer', async () => {
    const layers = await stack([[file('disk/a.qcow2', '1'), file('./disk/a.qcow2', '2')]]);
    const e = await diskError(extract(layers));
    expect(e.reason).toBe('MultipleDiskFiles');
    expect(e.message).toContain('disk/a.qcow2 appears twice in layer 1');
  });

  it('does not follow a symlink or hard link named as a disk file, and says so', async () => {
    const sym = await stack([[symlink('disk/a.img', '/etc/passwd')]]);
    const e = await diskError(extract(sym));
    expect(e.reason).toBe('NoDiskFile');
    expect(e.message).toMatch(/^no regular disk file under \/disk\/ in 1 layer/);
    expect(e.message).toContain('found a symlink disk/a.img -> /etc/passwd, which is not followed');

    const hard = await stack([[file('data/real.img', 'R'), hardlink('disk/a.img', 'data/real.img')]]);
    expect((await diskError(extract(hard))).message).toContain(
      'found a hard link disk/a.img -> data/real.img, which is not followed',
    );

    const dev = await stack([[{ type: 'character-device', name: 'disk/a.img' }]]);
    expect((await diskError(extract(dev))).message).toContain('found a character device disk/a.img');
  });

  it('a symlink in an upper layer hides the lower regular file, and the message says so', async () => {
    const layers = await stack([[file('disk/a.img')], [symlink('disk/a.img', '/etc/shadow')]]);
    const e = await diskError(extract(layers));
    expect(e.message).toContain('disk/a.img was replaced by a symlink in layer 2 (it was in layer 1)');
    expect(e.message).toContain('found a symlink disk/a.img -> /etc/shadow, which is not followed');
  });

  it("ignores entries with '..' or that normalise outside the root", async () => {
    const layers = await stack(
      [[file('../disk/evil.img', 'evil'), file('disk/../../disk/evil2.img'), file('/../disk/evil3.img'), file('disk/ok.img', 'ok')]],
      { plain: true },
    );
    expect(await extract(layers)).toMatchObject({ result: 'ok', entry: { path: 'disk/ok.img' } });

    const only = await stack([[file('../disk/evil.img'), file('disk/../etc/passwd')]]);
    const e = await diskError(extract(only));
    expect(e.reason).toBe('NoDiskFile');
    expect(e.message).toContain("ignored 2 entries with '..' in the path (../disk/evil.img, disk/../etc/passwd)");
  });
});

// ---- streaming, failures and stopping ----------------------------------------------------------------------

describe('extractContainerDisk: streaming and stopping', () => {
  it('calls consume before lower layers are opened, and still reads them all', async () => {
    const log: string[] = [];
    const layers = await stack([[file('etc/a')], [file('etc/b')], [file('disk/top.img', 'T'), file('etc/after')]], {
      log,
    });
    const out = await extractContainerDisk(layers, async (e) => {
      log.push('consume');
      const text = await readAll(e);
      log.push('consumed');
      return text;
    });
    expect(out.result).toBe('T');
    expect(log).toEqual(['open 2', 'consume', 'consumed', 'open 1', 'open 0']);
    for (const l of layers) expect(l.stream?.readableEnded).toBe(true);
  });

  it('goes on when consume resolves without reading everything, and still checks the lower layers', async () => {
    const big = Buffer.alloc(4 << 20, 7);
    const ok = await stack([[file('etc/x')], [file('disk/a.img', big)]]);
    const out = await extractContainerDisk(ok, async () => 'ignored');
    expect(out).toMatchObject({ result: 'ignored', entry: { size: big.length } });

    const two = await stack([[file('disk/b.img')], [file('disk/a.img', big)]]);
    const e = await diskError(extractContainerDisk(two, async () => 'ignored'));
    expect(e.reason).toBe('MultipleDiskFiles');
  });

  it('rejects with the error consume throws, stops reading and never opens lower layers', async () => {
    const big = Buffer.alloc(8 << 20, 1);
    const layers = await stack([[file('disk/b.img')], [file('disk/a.img', big)]], { plain: true });
    const boom = new Error('upload failed');
    let consumeSignal: AbortSignal | undefined;
    const e = await rejection(
      extractContainerDisk(layers, async (entry, signal) => {
        consumeSignal = signal;
        for await (const _ of entry.stream) throw boom;
        return 'never';
      }),
    );
    expect(e).toBe(boom);
    expect(consumeSignal?.aborted).toBe(true);
    expect(layers[0]!.opened).toBe(false);
    expect(layers[1]!.stream?.destroyed).toBe(true);
    expect(layers[1]!.stream?.readableEnded).toBe(false);

    const sync = await rejection(
      extractContainerDisk(layers, () => {
        throw boom;
      }),
    );
    expect(sync).toBe(boom);
  });

  it('stops promptly when the signal aborts mid-stream and rejects with its reason', async () => {
    const layers = await stack([[file('etc/x')], [file('disk/a.img', Buffer.alloc(16 << 20, 3))]]);
    const ac = new AbortController();
    const reason = new Error('cancelled by the user');
    let got = 0;
    let consumeError: unknown;
    const e = await rejection(
      extractContainerDisk(
        layers,
        async (entry) => {
          try {
            for await (const c of entry.stream) {
              got += (c as Buffer).length;
              if (got > 1 << 20) ac.abort(reason);
            }
          } catch (err) {
            consumeError = err;
            throw err;
          }
          return 'never';
        },
        { signal: ac.signal },
      ),
    );
    expect(e).toBe(reason);
    expect(consumeError).toBe(reason);
    expect(got).toBeLessThan(8 << 20);
    expect(layers[1]!.stream?.destroyed).toBe(true);
    expect(layers[0]!.opened).toBe(false);

    await expect(extract(layers, { signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
  });

  it('stops reading lower layers when the signal aborts after the disk file was consumed', async () => {
    const ac = new AbortController();
    const reason = new Error('stop');
    const lower = layerOf(gzipSync(await tarOf([file('etc/x', Buffer.alloc(1 << 20))])), 'lower');
    const stalled: LayerSource = { ...lower, open: (signal) => {
      const s = new Readable({ read() {} });
      signal.addEventListener('abort', () => s.destroy());
      setTimeout(() => ac.abort(reason), 10);
      return s;
    } };
    const upper = (await stack([[file('disk/a.img', 'A')]]))[0]!;
    await expect(extract([stalled, upper], { signal: ac.signal })).rejects.toBe(reason);
  });
});

describe('extractContainerDisk: corrupt layers and transfer errors', () => {
  it('reports a corrupt gzip layer as CorruptLayer, naming the layer', async () => {
    const gz = gzipSync(await tarOf([file('disk/a.img', Buffer.alloc(1 << 20, 9)), file('etc/x')]), { level: 1 });
    const bad = Buffer.from(gz);
    for (let i = 100; i < 200; i++) bad[i] = bad[i]! ^ 0x5a;
    const layer = layerOf(bad, 'bad');
    const e = await diskError(extractContainerDisk([layer], readAll));
    expect(e.reason).toBe('CorruptLayer');
    expect(e.message).toContain(`layer 1 of 1 (${layer.digest}): gzip decompression failed`);
    // The layer was still read to its end (where the source verifies the digest).
    expect(layer.stream?.readableEnded).toBe(true);
  });

  it('reports a truncated gzip layer and a broken tar as CorruptLayer', async () => {
    const t = await tarOf([file('etc/a', Buffer.alloc(4096, 1)), file('disk/a.img', 'A')]);
    const gz = gzipSync(t);
    const cut = await diskError(extract([layerOf(gz.subarray(0, gz.length - 20), 'cut')]));
    expect(cut.reason).toBe('CorruptLayer');

    const broken = Buffer.from(t);
    broken[4608 + 10] = 0x41; // second header's name: its checksum no longer matches
    const e = await diskError(extract([layerOf(broken, 'tar')]));
    expect(e.reason).toBe('CorruptLayer');
    expect(e.message).toMatch(/layer 1 of 1 \(sha256:[0-9a-f]{64}\) is not a valid tar archive: /);

    const short = await diskError(extract([layerOf(t.subarray(0, 1000), 'short')]));
    expect(short.reason).toBe('CorruptLayer');
  });

  it('reports bytes that are neither compressed nor tar as CorruptLayer', async () => {
    const html = Buffer.from('<!DOCTYPE html><html><body>Not found</body></html>'.repeat(20));
    const e = await diskError(extract([layerOf(html, 'html')]));
    expect(e.reason).toBe('CorruptLayer');
    expect(e.message).toContain('is neither a tar archive nor gzip, zstd or xz compressed (it starts with 3c 21 44 4f');
  });

  it('a transfer error of the layer stream wins over the corruption it causes', async () => {
    const gz = gzipSync(await tarOf([file('disk/a.img', Buffer.alloc(1 << 20, 9))]), { level: 1 });
    const bad = Buffer.from(gz);
    for (let i = 100; i < 200; i++) bad[i] = 0;
    const transfer = Object.assign(new Error('digest mismatch'), { permanent: false });
    const layer: LayerSource = {
      digest: 'sha256:x',
      size: bad.length,
      open: () =>
        Readable.from(
          (async function* () {
            yield* chunksOf(bad, 1024);
            throw transfer;
          })(),
          { objectMode: false },
        ),
    };
    expect(await rejection(extract([layer]))).toBe(transfer);
  });

  it('passes a transient decoder failure through unchanged', async () => {
    const layers = await stack([[file('disk/a.img')]]);
    const unavailable = Object.assign(new Error('xz decompression failed: could not run `xz`'), {
      permanent: false,
      reason: 'DecompressorUnavailable',
    });
    const decompress = (s: Readable) => {
      const out = new Readable({ read() {} });
      s.resume();
      setImmediate(() => out.destroy(unavailable));
      return out;
    };
    expect(await rejection(extract(layers, { decompress }))).toBe(unavailable);
  });

  it('serialises its errors for worker threads', () => {
    const e = new ContainerDiskError('no disk file under /disk/ in 1 layer', 'NoDiskFile');
    const back = ContainerDiskError.fromJSON(structuredClone(e.toJSON()));
    expect(back).toBeInstanceOf(ContainerDiskError);
    expect(back).toMatchObject({ reason: 'NoDiskFile', permanent: true, message: e.message });
  });
});

// ---- no buffering ----------------------------------------------------------------------------------------------

describe('extractContainerDisk: a large disk file', () => {
  it('streams 256 MiB through gzip and tar with bounded memory', async () => {
    const size = 256 << 20;
    const chunk = 1 << 20;
    const produced = createHash('sha256');
    const layer: LayerSource = {
      digest: 'sha256:big',
      size: 0,
      open: () => {
        const pack = tar.pack();
        const body = pack.entry({ name: 'disk/big.raw', size, mode: 0o644 });
        void (async () => {
          for (let i = 0; i < size / chunk; i++) {
            const c = Buffer.alloc(chunk, i & 0xff);
            c.writeUInt32BE(i, 0);
            produced.update(c);
            if (!body.write(c)) await new Promise<void>((r) => body.once('drain', () => r()));
          }
          body.end(null);
          pack.finalize();
        })();
        return Readable.from(pack, { objectMode: false }).pipe(createGzip({ level: 1 }));
      },
    };
    const before = process.memoryUsage().rss;
    let peak = before;
    const consumed = createHash('sha256');
    const out = await extractContainerDisk([layer], async (entry) => {
      let n = 0;
      for await (const c of entry.stream) {
        consumed.update(c as Buffer);
        n += (c as Buffer).length;
        peak = Math.max(peak, process.memoryUsage().rss);
      }
      return n;
    });
    expect(out.result).toBe(size);
    expect(consumed.digest('hex')).toBe(produced.digest('hex'));
    // Measured here: about 13 MiB for 256 MiB streamed.
    expect(peak - before).toBeLessThan(64 << 20);
  });
});

// ---- property: the streaming top-down walk equals an in-memory overlay ----------------------------------

type Op =
  | { t: 'file' | 'dir' | 'symlink'; p: string; pre: string }
  | { t: 'whiteout'; p: string }
  | { t: 'opaque'; d: string }
  | { t: 'unsafe'; p: string };

const PATHS = ['disk/a', 'disk/b', 'disk/c', 'disk', 'disk/a/x', 'etc/x', 'a', 'x/disk/a'];

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ t: fc.constant('file' as const), p: fc.constantFrom(...PATHS), pre: fc.constantFrom('', './', '/') }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constantFrom('dir' as const, 'symlink' as const), p: fc.constantFrom(...PATHS), pre: fc.constant('') }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant('whiteout' as const), p: fc.constantFrom(...PATHS) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('opaque' as const), d: fc.constantFrom('', 'disk', 'disk/a') }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('unsafe' as const), p: fc.constantFrom('../disk/z', 'disk/../../disk/z', '/../disk/z') }) },
);

const parentOf = (p: string) => (p.includes('/') ? p.slice(0, p.lastIndexOf('/')) : '');
const baseOf = (p: string) => p.slice(p.lastIndexOf('/') + 1);
const ancestorsOf = (p: string) => {
  const out: string[] = [];
  for (let i = p.indexOf('/'); i >= 0; i = p.indexOf('/', i + 1)) out.push(p.slice(0, i));
  return out;
};
const entryPath = (op: Op): string | null => {
  switch (op.t) {
    case 'whiteout':
      return `${parentOf(op.p) ? `${parentOf(op.p)}/` : ''}.wh.${baseOf(op.p)}`;
    case 'opaque':
      return `${op.d ? `${op.d}/` : ''}.wh..wh..opq`;
    case 'unsafe':
      return null;
    default:
      return op.p;
  }
};

/** One layer's ops without same-layer conflicts (a path twice, or below a non-directory of the same layer). */
function canonical(ops: readonly Op[]): Op[] {
  const seen = new Set<string>();
  const nonDirs = new Set(ops.filter((o) => o.t === 'file' || o.t === 'symlink').map((o) => entryPath(o)!));
  return ops.filter((o) => {
    const p = entryPath(o);
    if (p === null) return true;
    if (seen.has(p) || ancestorsOf(p).some((a) => nonDirs.has(a))) return false;
    seen.add(p);
    return true;
  });
}

interface ModelNode {
  kind: 'file' | 'dir' | 'symlink';
  data: string;
  layer: number;
}

/** The layers applied one over the other in memory, base first. */
function overlayModel(layers: readonly Op[][]): Map<string, ModelNode> {
  const fs = new Map<string, ModelNode>();
  const removeTree = (p: string) => {
    for (const k of [...fs.keys()]) if (p === '' ? true : k === p || k.startsWith(`${p}/`)) fs.delete(k);
  };
  layers.forEach((ops, layer) => {
    for (const op of ops) {
      if (op.t === 'whiteout') removeTree(op.p);
      if (op.t === 'opaque') for (const k of [...fs.keys()]) if (op.d === '' || k.startsWith(`${op.d}/`)) fs.delete(k);
    }
    ops.forEach((op, i) => {
      const p = entryPath(op);
      if (p === null) return;
      for (const a of ancestorsOf(p)) {
        if (fs.get(a)?.kind !== 'dir') {
          removeTree(a);
          fs.set(a, { kind: 'dir', data: '', layer });
        }
      }
      if (op.t === 'file' || op.t === 'symlink' || op.t === 'dir') {
        if (op.t === 'dir' && fs.get(p)?.kind === 'dir') return;
        removeTree(p);
        fs.set(p, { kind: op.t, data: contentOf(layer, i), layer });
      }
    });
  });
  return fs;
}

const contentOf = (layer: number, i: number) => `layer ${layer} entry ${i}`;

function toFx(ops: readonly Op[], layer: number): Fx[] {
  return ops.map((op, i) => {
    switch (op.t) {
      case 'file':
        return file(op.pre + op.p, contentOf(layer, i));
      case 'dir':
        return dir(op.p);
      case 'symlink':
        return symlink(op.p, '/etc/passwd');
      case 'unsafe':
        return file(op.p, 'evil');
      default:
        return file(entryPath(op)!, '');
    }
  });
}

describe('extractContainerDisk: property', () => {
  it('finds exactly what an in-memory overlay of the layers leaves under disk/', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.array(opArb, { maxLength: 7 }), { minLength: 1, maxLength: 4 }),
        fc.array(fc.boolean(), { minLength: 4, maxLength: 4 }),
        fc.integer({ min: 1, max: 700 }),
        async (raw, gzipped, chunk) => {
          const layers = raw.map(canonical);
          const model = overlayModel(layers);
          const disks = [...model].filter(([p, n]) => /^disk\/[^/]+$/.test(p) && n.kind === 'file');
          const sources = await Promise.all(
            layers.map(async (ops, i) => {
              const t = await tarOf(toFx(ops, i));
              return layerOf(gzipped[i] ? gzipSync(t) : t, String(i), undefined, chunk);
            }),
          );
          const run = extract(sources);
          if (disks.length === 1) {
            const [path, node] = disks[0]!;
            const out = await run;
            expect(out).toMatchObject({ result: node.data, layerIndex: node.layer, entry: { path } });
          } else {
            const e = await diskError(run);
            expect(e.reason).toBe(disks.length === 0 ? 'NoDiskFile' : 'MultipleDiskFiles');
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});
