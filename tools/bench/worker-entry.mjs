// Bench tasks run in a worker thread set up as the engine's inference worker (see
// in-worker.ts); workers don't inherit the CLI's tsx loader, so it is registered here.
import { register } from 'tsx/esm/api';

register();
const { serveBenchTasks } = await import('./in-worker.ts');
serveBenchTasks();
