import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import tar from 'tar-stream';
import { diskLayer, layerPrefix, layerSize } from '../../src/dvcr/layer.ts';

async function collect(r: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const c of r) out.push(Buffer.from(c.buffer, c.byteOffset, c.byteLength));
  return Buffer.concat(out);
}

describe('DVCR layer tar', () => {
  it('holds disk/ and disk/<name> (0644) and ends with two zero blocks; GNU tar agrees', async () => {
    const disk = randomBytes(100_000);
    const layer = await collect(diskLayer('ubuntu.qcow2', disk.length, Readable.from([disk.subarray(0, 7), disk.subarray(7)])));
    expect(layer.length).toBe(layerSize('ubuntu.qcow2', disk.length));
    expect(layer.length % 512).toBe(0);
    expect(layer.subarray(-1024).every((b) => b === 0)).toBe(true);
    const dir = mkdtempSync(join(tmpdir(), 'layer-'));
    try {
      writeFileSync(join(dir, 'l.tar'), layer);
      const listing = execFileSync('tar', ['-tvf', join(dir, 'l.tar')], { encoding: 'utf8' }).trim().split('\n');
      expect(listing).toHaveLength(2);
      expect(listing[0]).toMatch(/^drwxr-xr-x .* disk\/$/);
      expect(listing[1]).toMatch(/^-rw-r--r-- .* 100000 .* disk\/ubuntu\.qcow2$/);
      execFileSync('tar', ['-xf', join(dir, 'l.tar'), '-C', dir]);
      expect(readFileSync(join(dir, 'disk', 'ubuntu.qcow2')).equals(disk)).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('is deterministic: same disk, same bytes', async () => {
    const disk = randomBytes(1000);
    const a = await collect(diskLayer('d.img', 1000, Readable.from([disk])));
    const b = await collect(diskLayer('d.img', 1000, Readable.from([disk])));
    expect(a.equals(b)).toBe(true);
  });

  it('encodes sizes of 8 GiB and more so tar readers see the true size', async () => {
    const size = 10 * 1024 ** 3 + 3;
    const prefix = layerPrefix('big.raw', size);
    const seen = await new Promise<number | undefined>((resolve, reject) => {
      const ex = tar.extract();
      let dirSeen = false;
      ex.on('entry', (h, stream, next) => {
        if (!dirSeen) {
          dirSeen = true;
          stream.resume();
          next();
          return;
        }
        resolve(h.size);
        ex.destroy();
      });
      ex.on('error', reject);
      ex.write(prefix);
    });
    expect(seen).toBe(size);
  });

  it('uses a PAX path for long file names', async () => {
    const name = `${'n'.repeat(150)}.qcow2`;
    const layer = await collect(diskLayer(name, 3, Readable.from([Buffer.from('abc')])));
    const names: string[] = [];
    await new Promise<void>((resolve, reject) => {
      const ex = tar.extract();
      ex.on('entry', (h, s, next) => {
        names.push(h.name);
        s.resume();
        s.on('end', next);
      });
      ex.on('finish', resolve);
      ex.on('error', reject);
      ex.end(layer);
    });
    expect(names).toEqual(['disk/', `disk/${name}`]);
  });

  it('fails when the disk is shorter or longer than announced', async () => {
    await expect(collect(diskLayer('d', 10, Readable.from([Buffer.alloc(5)])))).rejects.toThrow(/ended after 5 of 10 bytes/);
    await expect(collect(diskLayer('d', 10, Readable.from([Buffer.alloc(11)])))).rejects.toThrow(/longer than the 10 bytes/);
    expect(() => layerPrefix('../x', 1)).toThrow(/invalid disk file name/);
  });
});
