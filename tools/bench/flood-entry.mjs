// The bench's flood client in a child process of its own (see flood-client.ts): it takes one
// request over IPC, answers with the counts, and exits. Child processes don't inherit the CLI's
// tsx loader, so it is registered here.
import { register } from 'tsx/esm/api';

register();
const { runFlood } = await import('./flood-client.ts');
process.once('message', async (request) => {
  try {
    process.send({ ok: true, counts: await runFlood(request) }, () => process.exit(0));
  } catch (err) {
    process.send({ ok: false, message: err instanceof Error ? err.message : String(err) }, () => process.exit(1));
  }
});
process.send({ ready: true });
