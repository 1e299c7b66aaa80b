/**
 * Per-connection budgets under hostile clients (docs/protocol.md, "Budgets"): the heartbeat
 * counts only pongs that echo our ping, unread output closes a connection, unfinished messages
 * and the incoming total are bounded, connections are capped, streams per connection are
 * capped, kept frames are copies, the queue is shared fairly between connections, and invalid
 * UTF-8 is an error reply. Real server, real ws clients; assertions on counts, bytes and states.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { type DepthcastServer, startServer, type StartServerOptions } from '../server/index.ts';
import { DEFAULT_BUDGETS } from '../server/limits.ts';
import { ServerHelloMessage } from '../src/protocol/schemas.ts';
import { frameBytes, sceneDepth, SLOW_PARAMS, TestClient, tinyModelsDir } from './support/server-helpers.ts';

let models: Awaited<ReturnType<typeof tinyModelsDir>>;
const servers: DepthcastServer[] = [];
const sockets: WebSocket[] = [];

beforeAll(async () => {
  models = await tinyModelsDir();
});

afterEach(async () => {
  for (const ws of sockets.splice(0)) ws.terminate();
  for (const s of servers.splice(0)) await s.close();
});

afterAll(async () => {
  await models?.cleanup();
});

async function serve(opts: Partial<StartServerOptions>): Promise<DepthcastServer> {
  const server = await startServer({ port: 0, modelsDir: models.dir, device: 'cpu', shutdownWaitMs: 2000, log: () => {}, ...opts });
  servers.push(server);
  return server;
}

/** Polls a condition on server state, bounded; the test asserts counts afterwards, never times. */
async function until(cond: () => boolean, what: string, tries = 3000): Promise<void> {
  for (let i = 0; i < tries; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`never happened: ${what}`);
}

function rawSocket(url: string, options: WebSocket.ClientOptions = {}): Promise<WebSocket> {
  const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/v1/ws`, options);
  sockets.push(ws);
  ws.on('error', () => {});
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve(ws));
    ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
  });
}

function closed(ws: WebSocket): Promise<{ code: number; reason: string }> {
  return new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
}

describe('hello', () => {
  it('states the budgets the connection runs under: the defaults with this service\'s overrides', async () => {
    const server = await serve({ heartbeatMs: 4000, previewDropBytes: 300_000, budgets: { maxStreamsPerConnection: 3, messageAssemblyMs: 9000 } });
    const client = await TestClient.connect(server.url);
    const hello = ServerHelloMessage.parse(client.received[0]!.msg);
    expect(hello.budgets).toEqual({ ...DEFAULT_BUDGETS, maxStreamsPerConnection: 3, messageAssemblyMs: 9000, heartbeatMs: 4000, previewDropBytes: 300_000 });
    await client.close();
  });
});

describe('heartbeat', () => {
  it('unsolicited pongs do not keep a connection alive; answering our pings does', async () => {
    // Long enough that a well-behaved client on a loaded machine answers in time.
    const server = await serve({ heartbeatMs: 300 });
    const good = await TestClient.connect(server.url);
    const hostile = await rawSocket(server.url, { autoPong: false });
    const hostileClosed = closed(hostile);
    let pongs = 0;
    const timer = setInterval(() => {
      if (hostile.readyState === WebSocket.OPEN && pongs < 2000) {
        hostile.pong();
        pongs++;
      }
    }, 5);
    try {
      await hostileClosed;
    } finally {
      clearInterval(timer);
    }
    expect(server.stats().closedHeartbeat).toBe(1);
    const rounds = server.stats().heartbeats;
    await until(() => server.stats().heartbeats >= rounds + 3, 'three more heartbeat rounds');
    expect(good.closed).toBeUndefined();
    expect(server.stats().closedHeartbeat).toBe(1);
    expect(pongs).toBeGreaterThan(0);
    await good.close();
  });
});

describe('output budget', () => {
  it('a client that does not read is closed with 4008 LIMIT_EXCEEDED once over budget for outputStallMs', async () => {
    const server = await serve({ budgets: { maxOutputBytes: 256 * 1024, outputStallMs: 100 } });
    const ws = await rawSocket(server.url);
    const closing = closed(ws);
    ws.pause(); // never reads: results pile up in the server's send buffer
    const params = { steps: 1, width: 512, height: 512, resultFormat: 'rgb8' as const, previewEvery: 0 };
    let sent = 0;
    while (server.stats().closedOutput === 0 && sent < 200) {
      ws.send(frameBytes({ jobId: `r${sent}`, stream: `s${sent % 4}`, mode: 'batch', params }));
      sent++;
      const done = server.stats().succeeded + server.stats().failed + server.stats().refusedBusy;
      await until(() => server.stats().succeeded + server.stats().failed + server.stats().refusedBusy > done || server.stats().closedOutput > 0, 'a job to end');
    }
    expect(server.stats().closedOutput).toBe(1);
    ws.resume(); // the close frame waits behind everything unread
    const { code, reason } = await closing;
    expect(code).toBe(4008);
    expect(reason).toMatch(/^LIMIT_EXCEEDED: .*maxOutputBytes/);
    // The service holds: a well-behaved client still gets its result.
    const next = await TestClient.connect(server.url);
    next.send(frameBytes({ jobId: 'after' }));
    expect((await next.terminal('after')).type).toBe('result');
    await next.close();
  });
});

describe('incoming messages', () => {
  it('an unfinished fragmented message is cut after messageAssemblyMs; the service keeps serving', async () => {
    const server = await serve({ heartbeatMs: 300, budgets: { messageAssemblyMs: 200 } });
    const ws = await rawSocket(server.url);
    const closing = closed(ws);
    ws.send(new Uint8Array(64 * 1024), { binary: true, fin: false }); // and never the last fragment
    await closing;
    expect(server.stats().closedAssembly).toBe(1);
    const next = await TestClient.connect(server.url);
    next.send(frameBytes({ jobId: 'after' }));
    expect((await next.terminal('after')).type).toBe('result');
    // Finished messages never trip the deadline, however long the connection idles.
    const rounds = server.stats().heartbeats;
    await until(() => server.stats().heartbeats >= rounds + 2, 'two heartbeat rounds (longer than messageAssemblyMs)');
    expect(next.closed).toBeUndefined();
    expect(server.stats().closedAssembly).toBe(1);
    await next.close();
  });

  it('control frames between the fragments of a message do not hold its deadline off', async () => {
    const server = await serve({ heartbeatMs: 60_000, budgets: { messageAssemblyMs: 300 } });
    const ws = await rawSocket(server.url);
    let open = true;
    const closing = closed(ws).then(() => { open = false; });
    ws.send(new Uint8Array(1024), { binary: true, fin: false });
    // Pings and unsolicited pongs keep coming, far past the deadline, but the message never ends.
    for (let i = 0; i < 150 && open; i++) {
      ws.ping();
      ws.pong();
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(open).toBe(false);
    await closing;
    expect(server.stats().closedAssembly).toBe(1);
  });

  it('the bytes being assembled across connections are bounded: the connection that would exceed it is closed (1013)', async () => {
    const server = await serve({ budgets: { maxIncomingBytes: 1024 * 1024 } });
    const first = await rawSocket(server.url);
    first.send(new Uint8Array(700 * 1024), { binary: true, fin: false });
    const second = await rawSocket(server.url);
    const secondClosed = closed(second);
    second.send(new Uint8Array(700 * 1024), { binary: true, fin: false });
    await secondClosed;
    expect(server.stats().closedIncoming).toBe(1);
    expect(first.readyState).toBe(WebSocket.OPEN);
    // The first finishes its message: it is a bad frame, answered, and the socket stays open.
    const reply = new Promise<string>((resolve) => first.on('message', (d, binary) => { if (!binary && JSON.parse(d.toString()).type === 'error') resolve(JSON.parse(d.toString()).code); }));
    first.send(new Uint8Array(8), { binary: true, fin: true });
    expect(await reply).toBe('BAD_FRAME');
    expect(first.readyState).toBe(WebSocket.OPEN);
  });

  it('frames waiting in the queue count against maxIncomingBytes too: past it a frame gets BUSY, not a close', async () => {
    // Frames larger than a socket read, so a read holding the tail of one frame and the head of the next is small beside them.
    const depth = sceneDepth({ width: 256, height: 256 });
    const frame = (jobId: string, o: { stream: string; mode?: 'batch'; slow?: boolean }) =>
      frameBytes({ jobId, depth, width: 256, height: 256, stream: o.stream, ...(o.mode ? { mode: o.mode } : {}), params: o.slow ? { ...SLOW_PARAMS } : { width: 64, height: 64 } });
    const frameSize = frame('x', { stream: 'a' }).byteLength;
    const server = await serve({ budgets: { maxIncomingBytes: Math.floor(frameSize * 3.5) } });
    const client = await TestClient.connect(server.url);
    client.send(frame('run', { stream: 'a', slow: true }));
    client.send(frame('q1', { stream: 'b', mode: 'batch' }));
    client.send(frame('q2', { stream: 'b', mode: 'batch' }));
    client.send(frame('over', { stream: 'b', mode: 'batch' }));
    const over = await client.terminal('over');
    expect([over.type, over.msg.code]).toEqual(['error', 'BUSY']);
    expect(over.msg.message).toMatch(/maxIncomingBytes/);
    client.sendJson({ type: 'cancel', jobId: 'run' });
    expect((await client.terminal('q1')).type).toBe('result');
    client.send(frame('room-again', { stream: 'b', mode: 'batch' }));
    expect((await client.terminal('room-again')).type).toBe('result');
    expect(client.closed).toBeUndefined();
    await client.close();
  });

  it('connections are capped: past maxConnections the upgrade gets 429 BUSY', async () => {
    const server = await serve({ budgets: { maxConnections: 2 } });
    const a = await TestClient.connect(server.url);
    const b = await TestClient.connect(server.url);
    const refused = await TestClient.refused(server.url);
    expect(refused.status).toBe(429);
    expect(refused.body.error.code).toBe('BUSY');
    await a.close();
    await until(() => server.stats().connections === 1, 'the close to land');
    const c = await TestClient.connect(server.url);
    expect(server.stats().refusedConnections).toBe(1);
    await b.close();
    await c.close();
  });

  it('invalid UTF-8 in a text message is BAD_REQUEST; the socket stays open', async () => {
    const server = await serve({});
    const client = await TestClient.connect(server.url);
    const from = client.received.length;
    client.ws.send(Buffer.from([0x7b, 0xc3, 0x28, 0x7d]), { binary: false });
    expect((await client.error(from)).msg.code).toBe('BAD_REQUEST');
    client.send(frameBytes({ jobId: 'ok' }));
    expect((await client.terminal('ok')).type).toBe('result');
    expect(client.closed).toBeUndefined();
    await client.close();
  });
});

describe('streams and queue shares', () => {
  it('a connection has at most maxStreamsPerConnection streams with work; idle ones make room', async () => {
    const server = await serve({ budgets: { maxStreamsPerConnection: 3 } });
    const client = await TestClient.connect(server.url);
    for (const s of ['a', 'b', 'c', 'd']) {
      client.send(frameBytes({ jobId: `idle-${s}`, stream: s }));
      expect((await client.terminal(`idle-${s}`)).type).toBe('result'); // idle streams are forgotten to make room
    }
    client.send(frameBytes({ jobId: 'busy-a', stream: 'a', params: SLOW_PARAMS }));
    client.send(frameBytes({ jobId: 'busy-b', stream: 'b', mode: 'batch' }));
    client.send(frameBytes({ jobId: 'busy-c', stream: 'c', mode: 'batch' }));
    client.send(frameBytes({ jobId: 'one-more', stream: 'e', mode: 'batch' }));
    const refused = await client.terminal('one-more');
    expect(refused.msg.code).toBe('LIMIT_EXCEEDED');
    expect(refused.msg.message).toMatch(/maxStreamsPerConnection 3/);
    client.sendJson({ type: 'cancel', jobId: 'busy-a' });
    expect((await client.terminal('busy-b')).type).toBe('result');
    await client.close();
  });

  it('a stream keeps copies of its last frame, not views that pin the whole message', async () => {
    const server = await serve({});
    const client = await TestClient.connect(server.url);
    // A large depth beside a small rgba8 init: a view of the init would pin the depth too.
    const width = 512;
    const depth = sceneDepth({ width, height: width });
    const init = new Uint8Array(8 * 8 * 4).fill(128);
    const payload = new Uint8Array(depth.byteLength + init.byteLength);
    payload.set(new Uint8Array(depth.buffer), 0);
    payload.set(init, depth.byteLength);
    client.send(frameBytes({ jobId: 'kept', width, height: width, depth, payload, params: { width: 64, height: 64, steps: 2 }, header: { init: { format: 'rgba8', width: 8, height: 8, byteLength: init.byteLength } } }));
    expect((await client.terminal('kept')).type).toBe('result');
    const kept = server.queue.rememberedBytes();
    expect(kept).toBeGreaterThan(init.byteLength);
    expect(kept).toBeLessThan(depth.byteLength);
    await client.close();
  });

  it('one connection cannot fill the queue: another still gets its share and the next turn', async () => {
    const server = await serve({ budgets: { maxQueuedPerConnection: 4 } });
    const hog = await TestClient.connect(server.url);
    const other = await TestClient.connect(server.url);
    for (let i = 0; i < 12; i++) hog.send(frameBytes({ jobId: `h${i}`, stream: `s${i}`, mode: 'batch', params: SLOW_PARAMS }));
    await hog.terminal('h11');
    const hogBusy = hog.received.filter((r) => r.type === 'error' && r.msg.code === 'BUSY').length;
    expect(hogBusy).toBe(12 - 1 - 4); // one running, four waiting
    for (let i = 0; i < 4; i++) other.send(frameBytes({ jobId: `o${i}`, mode: 'batch' }));
    const accepted = await Promise.all([0, 1, 2, 3].map((i) => other.waitFor((r) => r.jobId === `o${i}` && (r.type === 'accepted' || r.type === 'error'))));
    expect(accepted.map((r) => r.type)).toEqual(['accepted', 'accepted', 'accepted', 'accepted']);
    // The other connection goes next, before the hog's waiting jobs.
    expect(accepted[0]!.msg.position).toBe(1);
    await hog.close(); // cancels the hog's jobs
    for (let i = 0; i < 4; i++) expect((await other.terminal(`o${i}`)).type).toBe('result');
    await other.close();
  });
});

describe('what the service holds', () => {
  it('after jobs on connections that close or drop, no stream, owner or connection state is left', async () => {
    const server = await serve({ debugMemory: true });
    for (let c = 0; c < 4; c++) {
      const client = await TestClient.connect(server.url);
      for (let i = 0; i < 3; i++) client.send(frameBytes({ jobId: `c${c}-${i}`, stream: `s${i}`, mode: i === 2 ? 'batch' : 'live' }));
      for (let i = 0; i < 3; i++) await client.terminal(`c${c}-${i}`);
      if (c % 2) client.ws.terminate();
      else await client.close();
    }
    const held = async () => ((await (await fetch(`${server.url}/v1/health`)).json()) as { debug: { retained: Record<string, number> } }).debug.retained;
    await until(() => server.stats().connections === 0, 'every connection to be gone');
    expect(await held()).toEqual({ jobRecords: 12, wsConnections: 0, streams: 0, remembered: 0, owners: 0, activeOwners: 0, ring: 0 });
  });
});

