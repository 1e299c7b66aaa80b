#!/usr/bin/env node
// depthcast ships its TypeScript sources and runs them through tsx's loader, so there is no
// build step between a `git pull` and a working CLI.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { register } from 'tsx/esm/api';

/**
 * Node flags `serve` runs with. Under a live load the service's main thread handles about a
 * thousand small messages a second: V8 grows each young-generation semi-space to 16 MB and keeps
 * it, and dead message buffers wait for full collections. 1 MB semi-spaces and V8's
 * optimize-for-size heap sizing bring the 10,000-frame soak's RSS growth from 75 MB to 35-40
 * (docs/reliability.md; the inference worker is created without the second, src/engine/heap.ts).
 * Both are read when node starts, so `serve` re-runs itself in a child node with them, unless
 * node was started with a semi-space size already (a flag or NODE_OPTIONS).
 */
const SERVE_NODE_FLAGS = ['--max-semi-space-size=1', '--optimize-for-size'];

const sizedByUser = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)].some((a) => a.startsWith('--max-semi-space-size'));
if (process.argv[2] === 'serve' && !sizedByUser) {
  serveInChild();
} else {
  register();
  const { main } = await import('../src/cli/main.ts');
  await main(process.argv);
}

/**
 * The child shares stdio and runs in its own process group (POSIX), so a terminal's Ctrl-C
 * reaches it once, through this process, which forwards SIGINT, SIGTERM and SIGHUP. It watches
 * an IPC channel: when this process dies, even by SIGKILL, the channel closes and the child
 * shuts down (server/cli.ts), so no orphan keeps the port. Exit code and signal are passed on.
 */
function serveInChild() {
  const script = fileURLToPath(import.meta.url);
  const child = spawn(process.execPath, [...process.execArgv, ...SERVE_NODE_FLAGS, script, ...process.argv.slice(2)], {
    stdio: ['inherit', 'inherit', 'inherit', 'ipc'],
    detached: process.platform !== 'win32',
  });
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(signal, () => child.kill(signal));
  child.on('error', (err) => {
    console.error(`depthcast: could not start the service process: ${err.message}`);
    process.exit(1);
  });
  child.on('exit', (code, signal) => {
    if (signal) {
      process.removeAllListeners(signal);
      process.kill(process.pid, signal);
    }
    process.exit(code ?? 1);
  });
}
