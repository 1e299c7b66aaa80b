// Worker threads don't inherit the CLI's tsx loader (Node 20 ignores --import in a worker's
// execArgv), so the worker registers it itself before loading the TypeScript worker.
import { register } from 'tsx/esm/api';

register();
await import('./worker.ts');
