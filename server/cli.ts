/**
 * `depthcast serve`: resolve settings (flags > config file > environment > defaults), start the
 * service, print `depthcast listening on http://HOST:PORT` on stdout (scripts and tests parse
 * it), and shut down cleanly on SIGINT/SIGTERM/SIGHUP with exit code 0.
 */
import { DepthcastError } from '../src/errors.ts';
import { loadServeConfig, type ServeFlags } from './config.ts';
import { startServer } from './index.ts';
import { isLoopbackHost } from './security.ts';

export async function serveCommand(flags: ServeFlags): Promise<void> {
  const config = loadServeConfig(flags);
  if (!isLoopbackHost(config.host) && !config.token) {
    console.error(`depthcast: warning: --host ${config.host} would expose this machine's GPU to the network`);
    throw new DepthcastError('BAD_REQUEST', `binding ${config.host} needs --token <secret> (or DEPTHCAST_TOKEN); clients then send Authorization: Bearer <secret>`);
  }
  const log = (line: string) => console.error(`depthcast: ${line}`);
  const server = await startServer({ ...config, log });
  console.log(`depthcast listening on ${server.url}`);
  log(`models folder ${config.modelsDir}; device ${config.device}${config.token ? '; token required' : ''}`);

  let stopping = false;
  const stop = (why: string) => {
    if (stopping) {
      log(`${why} again: exiting now`);
      process.exit(1);
    }
    stopping = true;
    log(`${why}: shutting down (queued jobs are cancelled, the running one stops at its next step)`);
    server.close().then(
      () => process.exit(0),
      (err: unknown) => {
        log(`shutdown failed: ${(err as Error).message}`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  process.on('SIGHUP', stop);
  // Run by bin/depthcast.js with node flags (a child with an IPC channel): when that parent is
  // gone, even killed with SIGKILL, nobody can stop this process any more, so it stops itself.
  if (process.channel) {
    process.channel.unref();
    process.on('disconnect', () => stop('the launching process exited'));
  }
}
