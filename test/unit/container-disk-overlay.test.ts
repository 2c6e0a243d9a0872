import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  LayerMask,
  Overlay,
  diskFileName,
  normaliseEntryPath,
  pathRole,
} from '../../src/sources/container-disk-overlay.ts';

describe('container-disk overlay rules', () => {
  it('normalises entry paths and refuses any .. component', () => {
    expect(normaliseEntryPath('disk/a.img')).toBe('disk/a.img');
    expect(normaliseEntryPath('./disk/a.img')).toBe('disk/a.img');
    expect(normaliseEntryPath('/disk/a.img')).toBe('disk/a.img');
    expect(normaliseEntryPath('disk//./a.img/')).toBe('disk/a.img');
    expect(normaliseEntryPath('./')).toBe('');
    expect(normaliseEntryPath('../disk/a.img')).toBeNull();
    expect(normaliseEntryPath('disk/../disk/a.img')).toBeNull();
    expect(normaliseEntryPath('/../../etc/passwd')).toBeNull();
  });

  it('never yields a path that leaves the root or has empty, . or .. parts (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.constantFrom('', '.', '..', 'disk', 'a', '.wh.a', 'x y'), { maxLength: 8 }), (parts) => {
        const p = normaliseEntryPath(parts.join('/'));
        if (p === null) {
          expect(parts).toContain('..');
        } else if (p !== '') {
          for (const part of p.split('/')) expect(['', '.', '..']).not.toContain(part);
          expect(p).toBe(parts.filter((x) => x !== '' && x !== '.').join('/'));
        }
      }),
    );
  });

  it('tells whiteouts, opaque markers and aufs metadata from entries', () => {
    expect(pathRole('disk/.wh.a.img')).toEqual({ role: 'whiteout', target: 'disk/a.img' });
    expect(pathRole('.wh.disk')).toEqual({ role: 'whiteout', target: 'disk' });
    expect(pathRole('disk/.wh..wh..opq')).toEqual({ role: 'opaque', dir: 'disk' });
    expect(pathRole('.wh..wh..opq')).toEqual({ role: 'opaque', dir: '' });
    expect(pathRole('.wh..wh.plnk')).toEqual({ role: 'meta' });
    expect(pathRole('disk/a.wh.img')).toEqual({ role: 'entry' });
  });

  it('counts only direct children of disk/ as disk files', () => {
    expect(diskFileName('disk/a.img')).toBe('a.img');
    expect(diskFileName('disk')).toBeNull();
    expect(diskFileName('disk/sub/a.img')).toBeNull();
    expect(diskFileName('disks/a.img')).toBeNull();
    expect(diskFileName('x/disk/a.img')).toBeNull();
  });

  it('names the nearest hiding layer, 1-based', () => {
    const overlay = new Overlay();
    const top = new LayerMask(3);
    top.addWhiteout('.wh.disk', 'disk');
    const middle = new LayerMask(2);
    middle.addWhiteout('disk/.wh.a.img', 'disk/a.img');
    overlay.push(top);
    overlay.push(middle);
    expect(overlay.hiddenBy('disk/a.img')?.text).toBe('was removed by a whiteout in layer 3');
    expect(overlay.hiddenBy('disk/b.img')?.text).toBe('was removed by a whiteout of /disk in layer 4');
    expect(new Overlay().hiddenBy('disk/a.img')).toBeNull();
  });

  it('keeps only the paths that can hide a disk file', () => {
    const mask = new LayerMask(0);
    mask.addEntry('usr/share/doc/x', 'file');
    mask.addEntry('disk/sub/deeper/x', 'file');
    mask.addWhiteout('etc/.wh.passwd', 'etc/passwd');
    expect([...mask.entries.keys()].sort()).toEqual(['disk', 'disk/sub']);
    expect(mask.whiteouts.size).toBe(0);
  });
});
