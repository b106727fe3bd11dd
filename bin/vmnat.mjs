#!/usr/bin/env node
// Entry point: loads the TypeScript sources through tsx, so the installed tool always runs
// exactly what is in src/ (no separate build step to forget).
import { register } from 'tsx/esm/api';
register();
await import('../src/cli.ts');
