#!/usr/bin/env node
// The `dvcr-importer` command. The project is TypeScript without a build step: the CLI is bundled by esbuild
// (bin/bundle.mjs, into node_modules/.cache/dvcr-importer/, tens of milliseconds) and run from there, so that no
// TypeScript loader sits in the process (about 35 MiB less for a worker). Where bundling is not possible it
// runs through tsx.
import { pathToFileURL, fileURLToPath } from 'node:url';
import { bundle } from './bundle.mjs';

let cli;
try {
  cli = bundle(fileURLToPath(new URL('../src/cli/main.ts', import.meta.url)));
} catch (e) {
  console.error(`dvcr-importer: running through tsx (${e.message.split('\n')[0]})`);
}
if (cli) {
  await import(pathToFileURL(cli).href);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import('../src/cli/main.ts');
}
