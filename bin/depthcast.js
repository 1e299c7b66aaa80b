#!/usr/bin/env node
// depthcast ships its TypeScript sources and runs them through tsx's loader, so there is no
// build step between a `git pull` and a working CLI.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/cli/main.ts');
await main(process.argv);
