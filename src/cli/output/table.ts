/**
 * Column alignment the way kubectl does it: Go's `text/tabwriter` semantics. Cells are tab-separated; the last cell
 * of a line is not part of a column (it is printed as is, never padded); a column block is a run of consecutive
 * lines that have a cell in that column, and every cell of a block is padded to the block's widest cell plus
 * `padding` (at least `minWidth`).
 *
 * kubectl `get` uses `minWidth 6, padding 3` ({@link table}); `describe` uses `minWidth 0, padding 2`.
 */

export interface TabOptions {
  /** Smallest column width, padding included. */
  minWidth: number;
  /** Spaces added after the widest cell of a column. */
  padding: number;
}

/** kubectl `get` tables. */
export const TABLE_OPTIONS: TabOptions = { minWidth: 6, padding: 3 };
/** kubectl `describe`. */
export const DESCRIBE_OPTIONS: TabOptions = { minWidth: 0, padding: 2 };

/** Display width of a cell (code points; no East Asian width rules, like tabwriter without them). */
export function textWidth(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

/**
 * Aligns lines of cells (Go tabwriter algorithm, left-aligned, space padding). Returns the text, each line ending
 * with `\n`.
 */
export function tabwrite(lines: readonly (readonly string[])[], opts: TabOptions = TABLE_OPTIONS): string {
  const out: string[] = [];
  const widths: number[] = [];

  const writeLines = (from: number, to: number): void => {
    for (let i = from; i < to; i++) {
      const line = lines[i] ?? [];
      let text = '';
      line.forEach((cell, j) => {
        text += cell;
        const w = widths[j];
        // Cells that belong to a column are padded; the last cell of a line never is.
        if (w !== undefined && j < line.length - 1) text += ' '.repeat(Math.max(0, w - textWidth(cell)));
      });
      out.push(`${text}\n`);
    }
  };

  const format = (line0: number, line1: number): void => {
    const column = widths.length;
    let start = line0;
    for (let cur = line0; cur < line1; cur++) {
      if (column >= (lines[cur]?.length ?? 0) - 1) continue;
      // A cell exists in this column: print the lines before the block, then find the block's end.
      writeLines(start, cur);
      start = cur;
      let width = opts.minWidth;
      for (; cur < line1; cur++) {
        const line = lines[cur] ?? [];
        if (column >= line.length - 1) break;
        width = Math.max(width, textWidth(line[column] ?? '') + opts.padding);
      }
      widths.push(width);
      format(start, cur);
      widths.pop();
      start = cur;
      // `cur` is the first line after the block; the loop's increment would skip it.
      cur--;
    }
    writeLines(start, line1);
  };

  format(0, lines.length);
  return out.join('');
}

/** A kubectl `get` table: the first row is the header. Every row should have the same number of cells. */
export function table(rows: readonly (readonly string[])[]): string {
  return tabwrite(rows, TABLE_OPTIONS);
}

/**
 * Column widths of a table (every cell but the last of each row), for printing more rows later in the same
 * columns ({@link formatRow}), as `get -w` does.
 */
export function columnWidths(rows: readonly (readonly string[])[], prev: readonly number[] = [], opts: TabOptions = TABLE_OPTIONS): number[] {
  const widths = prev.slice();
  for (const row of rows) {
    for (let j = 0; j < row.length - 1; j++) {
      const w = Math.max(opts.minWidth, textWidth(row[j] ?? '') + opts.padding);
      widths[j] = Math.max(widths[j] ?? 0, w);
    }
  }
  return widths;
}

/** One row padded to `widths` (cells beyond `widths` and the last cell are not padded), ending with `\n`. */
export function formatRow(row: readonly string[], widths: readonly number[]): string {
  let text = '';
  row.forEach((cell, j) => {
    text += cell;
    const w = widths[j];
    if (w !== undefined && j < row.length - 1) text += ' '.repeat(Math.max(0, w - textWidth(cell)));
  });
  return `${text}\n`;
}
