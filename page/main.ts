/**
 * Preview page wiring: 3D view → depth + id passes → one binary frame per change (throttled,
 * newest wins) over /v1/ws → previews and the result shown beside or over the view.
 */
import type { ConsistencyReport, FrameHeaderInput, ServerBinaryHeader, ServerMessage } from '../src/protocol/schemas.ts';
import { DepthcastClient, serviceSocketUrl, type ConnectionState } from './client.ts';
import { DepthPass, type DepthEncoding } from './depth-pass.ts';
import { FrameBuildError, buildFrameMessage, buildLayout, depthStats, frameSize, type DepthStats } from './frame-data.ts';
import { cameraMotionPose, passCamera, type ReadbackMode } from './gpu.ts';
import { IdPass } from './id-pass.ts';
import { LiveScheduler } from './live.ts';
import { SceneView, objectPrompt, objectWeight, type ViewCamera } from './scene.ts';
import { Ui, type ObjectRow } from './ui.ts';

const STREAM = 'page';
/** At most 4 frames a second; typing waits this long after the last keystroke. */
const MIN_FRAME_INTERVAL_MS = 250;
const TYPING_SETTLE_MS = 600;
/** Don't queue another frame while this much is still unsent on the socket (slow links). */
const MAX_BUFFERED_BYTES = 4 << 20;

export interface SentFrame {
  header: FrameHeaderInput;
  bytes: number;
  /** Row 0 = top, linear view Z, background = +Infinity (what was sent). */
  depth: Float32Array;
  /** Local id map (every mesh has an id, 1..N), row 0 = top. */
  ids: Uint16Array;
  objects: { id: number; label: string; prompt?: string }[];
  stats: DepthStats;
  /** Mean RGB (0..255) of the init image, when one was sent. */
  initMean?: number;
  encoding: DepthEncoding;
  readback: ReadbackMode;
  camera: { type: string; near: number; far: number; matrixWorld: number[]; projectionMatrixInverse: number[] };
  sentAt: number;
}

/** Test and debugging hook: what the page sent and received, without scraping pixels. */
export interface DepthcastHook {
  state: ConnectionState['kind'];
  hello?: ServerMessage;
  framesSent: number;
  lastFrame?: SentFrame;
  lastPreview?: { jobId: string; step: number; total: number; width: number; height: number; bytes: number };
  lastResult?: { jobId: string; width: number; height: number; seed: number; bytes: number; model: string; timings: Record<string, number>; consistency?: ConsistencyReport };
  lastError?: { code: string; message: string; jobId?: string };
  errors: { code: string; message: string; jobId?: string }[];
  /** Capture and send a frame now (like the Generate button); resolves to its jobId. */
  sendNow(): Promise<string | undefined>;
  /** Set an object's prompt by label, as the object editor does. */
  setObjectPrompt(label: string, prompt: string, weight?: number): boolean;
}

declare global {
  interface Window {
    __depthcast?: DepthcastHook;
  }
}

const ui = new Ui();
const hook: DepthcastHook = {
  state: 'connecting',
  framesSent: 0,
  errors: [],
  sendNow: () => Promise.resolve(undefined),
  setObjectPrompt: () => false,
};
window.__depthcast = hook;

function reportError(code: string, message: string, jobId?: string): void {
  const e = jobId ? { code, message, jobId } : { code, message };
  hook.lastError = e;
  hook.errors.push(e);
  if (hook.errors.length > 50) hook.errors.shift();
  ui.showError(code, message, jobId);
}

let view: SceneView;
try {
  view = new SceneView(ui.view);
} catch (err) {
  reportError('WEBGL', `cannot start WebGL: ${(err as Error).message}. The page needs a browser with WebGL 2.`);
  throw err;
}
const depthPass = new DepthPass(view.renderer);
const idPass = new IdPass(view.renderer);
const live = new LiveScheduler(MIN_FRAME_INTERVAL_MS);
const session = Math.random().toString(36).slice(2, 8);
let seq = 0;
/**
 * The frames this page sent (bounded), by jobId: their sequence number, and for consistent frames
 * the camera pose and the scene version they were captured in.
 */
const sentFrames = new Map<string, { seq: number; pose?: number[]; scene: number }>();
let latestJob: string | undefined;
let shown = { seq: -1, result: false };
let errorSeq = -1;
let lastSeed: number | undefined;

const seqOf = (jobId: string | undefined): number => (jobId ? (sentFrames.get(jobId)?.seq ?? -1) : -1);
/**
 * Consistent frames continue the last frame the service generated. Loading a scene starts over:
 * the pose motion holds for a scene that stays still between the two frames.
 */
let lastGenerated: { jobId: string; pose: number[]; scene: number } | undefined;
let sceneVersion = 0;

view.renderer.domElement.addEventListener('webglcontextlost', (e) => {
  e.preventDefault();
  reportError('WEBGL', 'the WebGL context was lost; reload the page');
});

// ---- capture and send ----

const initCanvas = document.createElement('canvas');

/** The 3D view as the init image: rendered with the pass camera, scaled to the frame, RGBA top-down. */
function captureView(cam: ViewCamera, width: number, height: number): Uint8Array {
  view.renderer.render(view.scene, cam);
  initCanvas.width = width;
  initCanvas.height = height;
  const ctx = initCanvas.getContext('2d', { willReadFrequently: true })!;
  ctx.drawImage(view.renderer.domElement, 0, 0, width, height);
  const data = ctx.getImageData(0, 0, width, height).data;
  view.render();
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

async function captureAndSend(): Promise<string | undefined> {
  // Until the service has a model every frame would fail: the onboarding state says what to do.
  if (hook.hello && !ui.hasModel) return undefined;
  const limits = ui.limits;
  const maxPixels = limits ? Math.min(limits.maxDepthPixels, limits.maxOutputPixels) : Infinity;
  const { width, height } = frameSize(view.aspect, ui.longSide, maxPixels);
  const cam = passCamera(view.camera, width / height);
  depthPass.setSize(width, height);
  idPass.setSize(width, height);
  // Render every pass first (synchronously, same scene state), then wait for the readbacks.
  depthPass.render(view.scene, cam);
  idPass.render(view.scene, cam, view.idOf);
  const init = ui.useInit.checked ? captureView(cam, width, height) : undefined;
  // Snapshot what belongs with these pixels before waiting: the scene or controls may change meanwhile.
  const rows = objectRows();
  const params = ui.params();
  const [d, ids] = await Promise.all([depthPass.read(), idPass.read()]);

  const stats = depthStats(d.depth, width, height, ids.ids);
  const layout = buildLayout(ids.ids, width, height, rows, stats);
  const near = Math.max(cam.near, 1e-4);
  const far = Number.isFinite(cam.far) && cam.far > near ? cam.far : Math.max(near * 2, stats.max * 1.01, 1);
  const jobId = `page-${session}-${seq + 1}`;
  const camera = cameraMotionPose(cam, width, height);
  const from = params.consistency === 'consistent' && camera && lastGenerated?.scene === sceneVersion ? lastGenerated : undefined;
  const motion = from && camera ? { kind: 'pose' as const, pose: camera.pose, previousPose: from.pose, intrinsics: camera.intrinsics, previousJobId: from.jobId } : undefined;
  let built;
  try {
    built = buildFrameMessage({
      jobId, stream: STREAM, depth: d.depth, width, height, near, far, params,
      ...(init ? { init } : {}), ...(layout ? { layout } : {}), ...(motion ? { motion } : {}),
    });
  } catch (err) {
    if (err instanceof FrameBuildError) {
      reportError('BAD_REQUEST', `frame not sent, fix the controls: ${err.message}`);
      return undefined;
    }
    throw err;
  }
  if (!client.sendBinary(built.bytes)) {
    live.markDirty(performance.now()); // goes out once the connection is back
    return undefined;
  }
  seq++;
  sentFrames.set(jobId, { seq, scene: sceneVersion, ...(camera ? { pose: camera.pose } : {}) });
  if (sentFrames.size > 200) sentFrames.delete(sentFrames.keys().next().value!);
  latestJob = jobId;
  hook.framesSent++;
  hook.lastFrame = {
    header: built.header,
    bytes: built.bytes.byteLength,
    depth: d.depth,
    ids: ids.ids,
    objects: rows.map((r) => ({ id: r.id, label: r.label, ...(r.prompt ? { prompt: r.prompt } : {}) })),
    stats,
    ...(init ? { initMean: meanRgb(init) } : {}),
    encoding: d.encoding,
    readback: d.readback,
    camera: {
      type: cam.type,
      near,
      far,
      matrixWorld: cam.matrixWorld.toArray(),
      projectionMatrixInverse: cam.projectionMatrixInverse.toArray(),
    },
    sentAt: Date.now(),
  };
  ui.setStatus(`sent frame ${seq} (${width}×${height}${layout ? `, ${layout.objects.length} object prompt${layout.objects.length > 1 ? 's' : ''}` : ''})`);
  ui.setProgress(0, 1);
  drawInset();
  return jobId;
}

function meanRgb(rgba: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < rgba.length; i += 4) sum += rgba[i]! + rgba[i + 1]! + rgba[i + 2]!;
  return sum / (rgba.length / 4) / 3;
}

function drawInset(): void {
  const f = hook.lastFrame;
  if (!f) return;
  const { width, height } = f.stats;
  if (ui.insetKind === 'depth') ui.drawDepthInset(f.depth, width, height, f.camera.near, f.camera.far, ui.depthRange.value === 'fixed' ? 'fixed' : 'auto');
  else if (ui.insetKind === 'ids') ui.drawIdInset(f.ids, width, height);
}

async function runCapture(): Promise<string | undefined> {
  try {
    return await captureAndSend();
  } catch (err) {
    reportError('PAGE', `depth capture failed: ${(err as Error).message}`);
    return undefined;
  } finally {
    live.finish();
  }
}

async function sendNow(): Promise<string | undefined> {
  if (!client.ready) {
    reportError('OFFLINE', 'not connected to the service; the frame will go out when the connection is back');
    live.markDirty(performance.now());
    return undefined;
  }
  // Wait for a capture in flight, then force one with the current state.
  for (let i = 0; i < 100 && live.inFlight; i++) await new Promise((r) => setTimeout(r, 20));
  if (!live.forceStart(performance.now())) return undefined;
  return runCapture();
}
hook.sendNow = sendNow;

// ---- service ----

function onMessage(m: ServerMessage): void {
  switch (m.type) {
    case 'hello':
      hook.hello = m;
      ui.setHello(m.models, m.schedulers, m.device, m.limits);
      if (m.models.length === 0) void offerDemoModel();
      live.markDirty(performance.now());
      break;
    case 'accepted':
      if (m.jobId === latestJob) ui.setStatus(m.position ? `frame ${seqOf(m.jobId)} queued (${m.position} ahead)` : `frame ${seqOf(m.jobId)} running`);
      break;
    case 'progress':
      if (m.jobId === latestJob) {
        ui.setProgress(m.step, m.total);
        ui.setStatus(`frame ${seqOf(m.jobId)}: step ${m.step}/${m.total}`);
      }
      break;
    case 'cancelled':
      if (m.jobId === latestJob && m.reason !== 'superseded') {
        ui.setStatus(`frame ${seqOf(m.jobId)} cancelled (${m.reason})`);
        ui.dropPreview(m.reason === 'shutdown' ? `frame ${seqOf(m.jobId)} cancelled: the service is stopping` : `frame ${seqOf(m.jobId)} cancelled`);
      }
      break;
    case 'error':
      errorSeq = Math.max(errorSeq, seqOf(m.jobId));
      reportError(m.code, m.message, m.jobId);
      if (m.jobId && m.jobId === latestJob) {
        ui.setStatus(`frame ${seqOf(m.jobId)} failed`);
        ui.dropPreview(`frame ${seqOf(m.jobId)} failed`);
      }
      break;
  }
}

function onBinary(h: ServerBinaryHeader, payload: Uint8Array): void {
  const s = seqOf(h.jobId);
  if (h.type === 'preview') {
    if (s < shown.seq || (s === shown.seq && shown.result)) return;
    shown = { seq: s, result: false };
    ui.showPreview(payload, `frame ${s} · step ${h.step}/${h.total} · ${h.width}×${h.height}`);
    hook.lastPreview = { jobId: h.jobId, step: h.step, total: h.total, width: h.width, height: h.height, bytes: payload.byteLength };
    return;
  }
  // The service remembers every generated frame of the stream, shown or not.
  const sent = sentFrames.get(h.jobId);
  lastGenerated = sent?.pose ? { jobId: h.jobId, pose: sent.pose, scene: sent.scene } : undefined;
  if (s < shown.seq) return;
  shown = { seq: s, result: true };
  lastSeed = h.seed;
  const total = h.timings.total;
  const meta = [
    `frame ${s}`, `${h.width}×${h.height}`, `seed ${h.seed}`, h.model.name,
    total !== undefined ? `${(total / 1000).toFixed(2)} s` : '', h.reusedFrom ? `reused from ${h.reusedFrom}` : '',
  ].filter(Boolean).join(' · ');
  ui.showResult(payload, meta, `depthcast-${h.model.name}-seed${h.seed}.png`);
  void refreshDevice();
  ui.setProgress(1, 1);
  if (h.jobId === latestJob) ui.setStatus(`frame ${s} done`);
  if (s > errorSeq && ui.errorShown) ui.clearError();
  hook.lastResult = { jobId: h.jobId, width: h.width, height: h.height, seed: h.seed, bytes: payload.byteLength, model: h.model.name, timings: h.timings, ...(h.consistency ? { consistency: h.consistency } : {}) };
}

/** Onboarding: offer the demo-model button when the service can write its models folder. */
async function offerDemoModel(): Promise<void> {
  const headers = authHeaders();
  try {
    const res = await fetch('/v1/models/demo', { headers });
    const demo = (await res.json()) as { available?: boolean };
    ui.offerDemo(!!demo.available);
  } catch {
    ui.offerDemo(false);
  }
}

ui.makeDemo.addEventListener('click', async () => {
  ui.makeDemo.disabled = true;
  ui.setStatus('writing the demo model…');
  try {
    const res = await fetch('/v1/models/demo', { method: 'POST', headers: authHeaders() });
    const body = (await res.json()) as { error?: { code: string; message: string } };
    if (body.error) throw Object.assign(new Error(body.error.message), { code: body.error.code });
    // The service lists it from now on; a fresh connection brings a hello that has it.
    location.reload();
  } catch (err) {
    reportError((err as { code?: string }).code ?? 'PAGE', `the demo model was not written: ${(err as Error).message}`);
    ui.makeDemo.disabled = false;
  }
});

function authHeaders(): Record<string, string> {
  const token = new URLSearchParams(location.search).get('token');
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** The header names the device the model loaded on: /v1/health knows it once a model ran. */
async function refreshDevice(): Promise<void> {
  try {
    const res = await fetch('/v1/health', { headers: authHeaders() });
    const health = (await res.json()) as { model?: { device?: string } | null };
    if (health.model?.device) ui.setDevice(health.model.device);
  } catch {
    // The header keeps what hello said; the next result tries again.
  }
}

const client = new DepthcastClient(serviceSocketUrl(location), {
  state(s) {
    hook.state = s.kind;
    ui.setConnection(s);
    if (s.kind === 'closed' || s.kind === 'waiting') ui.dropPreview('service disconnected');
  },
  message: onMessage,
  binary: onBinary,
  protocolError(message) {
    reportError('PROTOCOL', message);
  },
});

// ---- controls ----

const dirty = (delay = 0) => live.markDirty(performance.now(), delay);
for (const input of [ui.prompt, ui.negative, ui.steps, ui.guidance, ui.seed, ui.cnScale, ui.strength]) {
  input.addEventListener('input', () => dirty(TYPING_SETTLE_MS));
}
for (const input of [ui.model, ui.scheduler, ui.size, ui.depthRange, ui.useInit]) input.addEventListener('change', () => dirty());
ui.live.addEventListener('change', () => {
  if (ui.live.checked) dirty();
});
ui.generate.addEventListener('click', () => void sendNow());
ui.cancel.addEventListener('click', () => {
  if (!client.sendJson({ type: 'cancel', stream: STREAM })) reportError('OFFLINE', 'not connected to the service');
});
ui.conn.addEventListener('click', () => client.retryNow());
ui.insetMode.addEventListener('change', drawInset);
ui.depthRange.addEventListener('change', drawInset);
ui.seed.addEventListener('dblclick', () => {
  if (lastSeed !== undefined) {
    ui.seed.value = String(lastSeed);
    dirty();
  }
});
ui.seed.title = 'Blank = random; double-click to reuse the last result\'s seed';

// ---- scene ----

function objectRows(): ObjectRow[] {
  return view.objects.map((o) => {
    const prompt = objectPrompt(o.mesh);
    return { id: o.id, label: o.label, weight: objectWeight(o.mesh), ...(prompt ? { prompt } : {}) };
  });
}

function refreshObjects(): void {
  ui.setObjects(objectRows(), view.selected?.id, (id) => view.select(view.objects.find((o) => o.id === id)));
}

function refreshScene(): void {
  ui.setScene(view.sceneName, view.cameras.map((c) => c.label), view.cameraIndex);
}

view.onChange((what) => {
  switch (what) {
    case 'camera':
      if (ui.camera.value !== String(view.cameraIndex)) ui.camera.value = String(view.cameraIndex);
      dirty();
      break;
    case 'scene':
      sceneVersion++;
      refreshScene();
      refreshObjects();
      dirty();
      break;
    case 'objects':
      refreshObjects();
      dirty(TYPING_SETTLE_MS);
      break;
    case 'selection': {
      const sel = view.selected;
      ui.editObject(sel ? objectRows().find((r) => r.id === sel.id) : undefined);
      refreshObjects();
      break;
    }
  }
});
refreshScene();
refreshObjects();

const setSelectedPrompt = () => {
  const sel = view.selected;
  if (!sel) return;
  const w = Number(ui.objWeight.value);
  view.setPrompt(sel, ui.objPrompt.value, Number.isFinite(w) ? w : 1);
};
ui.objPrompt.addEventListener('input', setSelectedPrompt);
ui.objWeight.addEventListener('input', setSelectedPrompt);
ui.objClear.addEventListener('click', () => {
  ui.objPrompt.value = '';
  setSelectedPrompt();
});
ui.objDone.addEventListener('click', () => view.select(undefined));
hook.setObjectPrompt = (label, prompt, weight) => {
  const o = view.objects.find((x) => x.label === label);
  if (!o) return false;
  view.setPrompt(o, prompt, weight);
  return true;
};

ui.camera.addEventListener('change', () => view.useCamera(Number(ui.camera.value)));
ui.demo.addEventListener('click', () => view.loadDemo());
ui.frame.addEventListener('click', () => view.frameContent());

async function loadFiles(files: File[]): Promise<void> {
  if (!files.length) return;
  ui.setStatus(`loading ${files.map((f) => f.name).join(', ')}…`);
  try {
    await view.loadFiles(files);
    ui.setStatus(`loaded ${view.sceneName}: ${view.objects.length} meshes, ${view.cameras.length - 1} cameras`);
  } catch (err) {
    reportError('GLTF', `could not load ${files.map((f) => f.name).join(', ')}: ${(err as Error).message}`);
  }
}
ui.file.addEventListener('change', () => {
  void loadFiles(Array.from(ui.file.files ?? []));
  ui.file.value = '';
});
const viewEl = ui.view;
viewEl.addEventListener('dragover', (e) => {
  e.preventDefault();
  viewEl.classList.add('dragging');
});
viewEl.addEventListener('dragleave', () => viewEl.classList.remove('dragging'));
viewEl.addEventListener('drop', (e) => {
  e.preventDefault();
  viewEl.classList.remove('dragging');
  void loadFiles(Array.from(e.dataTransfer?.files ?? []));
});
// A file dropped outside the view should not navigate away from the page.
window.addEventListener('dragover', (e) => e.preventDefault());
window.addEventListener('drop', (e) => e.preventDefault());

// ---- loop ----

function tick(): void {
  requestAnimationFrame(tick);
  view.frame();
  if (client.ready && client.bufferedAmount < MAX_BUFFERED_BYTES && live.tryStart(performance.now(), ui.live.checked)) void runCapture();
}

live.markDirty(performance.now());
client.start();
requestAnimationFrame(tick);
