/** `version` (and `--version`): the CLI's version from package.json. */
import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import type { CliContext } from './context.ts';
import { projectFile } from '../../paths.ts';

let cached: string | undefined;

/** The package version (`0.1.0`), or `unknown` when package.json cannot be read. */
export function packageVersion(): string {
  if (cached !== undefined) return cached;
  try {
    const pkg = JSON.parse(readFileSync(projectFile('package.json'), 'utf8')) as { version?: unknown };
    cached = typeof pkg.version === 'string' ? pkg.version : 'unknown';
  } catch {
    cached = 'unknown';
  }
  return cached;
}

export function versionCommand(ctx: CliContext): Command {
  return new Command('version').description('Print the version').action(() => {
    ctx.out(`dvcr-importer version ${packageVersion()} (node ${process.version})\n`);
  });
}
