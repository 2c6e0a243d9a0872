import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseSse } from '../../src/api/client.ts';
import { sseFrame } from '../../src/api/routes-watch.ts';

async function collect(chunks: Array<string | Uint8Array>) {
  async function* gen() {
    for (const c of chunks) yield c;
  }
  const out = [];
  for await (const m of parseSse(gen())) out.push(m);
  return out;
}

describe('parseSse', () => {
  it('parses events, ids, comments and multi-line data', async () => {
    const text =
      'retry: 2000\n\n: heartbeat\n\nevent: ADDED\ndata: {"a":1}\n\nid: 5-0\nevent: BOOKMARK\ndata: x\ndata: y\n\ndata:no-space\n\n';
    expect(await collect([text])).toEqual([
      { event: 'ADDED', data: '{"a":1}', id: undefined },
      { event: 'BOOKMARK', data: 'x\ny', id: '5-0' },
      { event: 'message', data: 'no-space', id: '5-0' },
    ]);
  });

  it('accepts CRLF and CR line ends, split anywhere, and multi-byte characters split across chunks', async () => {
    const text = 'event: A\r\ndata: é€\r\n\r\nevent: B\rdata: 2\r\r';
    const bytes = new TextEncoder().encode(text);
    await fc.assert(
      fc.asyncProperty(fc.uniqueArray(fc.integer({ min: 1, max: bytes.length - 1 }), { maxLength: 6 }), async (cuts) => {
        const points = [0, ...cuts.sort((a, b) => a - b), bytes.length];
        const chunks = points.slice(1).map((end, i) => bytes.slice(points[i], end));
        expect(await collect(chunks)).toEqual([
          { event: 'A', data: 'é€', id: undefined },
          { event: 'B', data: '2', id: undefined },
        ]);
      }),
    );
  });

  it('does not dispatch an unterminated event', async () => {
    expect(await collect(['event: A\ndata: 1\n'])).toEqual([]);
  });

  it('reads what the server writes', async () => {
    const data = { type: 'MODIFIED', object: { note: 'line\nbreak "quoted"' }, id: '7-1' };
    const frame = sseFrame('MODIFIED', data, '7-1');
    const [msg] = await collect([frame]);
    expect(msg).toEqual({ event: 'MODIFIED', id: '7-1', data: JSON.stringify(data) });
    expect(JSON.parse(msg!.data)).toEqual(data);
  });
});
