#!/usr/bin/env node
// The `dvcr-importer` command. The project runs its TypeScript through tsx (no build step): register the
// loader for this process, then hand over to the CLI.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli/main.ts');
