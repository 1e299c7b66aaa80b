/**
 * Everything on the page that is not the 3D view: controls → generation params, connection state,
 * errors, progress, the result panel (beside or split-overlay), download, the depth/id inset,
 * and the object prompt editor/list.
 */
import type { GenerationParamsInput, Limits, ModelInfo, SCHEDULER_NAMES } from '../src/protocol/schemas.ts';
import type { ConnectionState } from './client.ts';

type SchedulerName = (typeof SCHEDULER_NAMES)[number];

function el<T extends HTMLElement>(id: string): T {
  const e = document.getElementById(id);
  if (!e) throw new Error(`page markup is missing #${id}`);
  return e as T;
}

function num(input: HTMLInputElement): number | undefined {
  if (input.value.trim() === '') return undefined;
  const v = Number(input.value);
  return Number.isFinite(v) ? v : NaN;
}

export interface ObjectRow {
  id: number;
  label: string;
  prompt?: string;
  weight: number;
}

export type DisplayMode = 'beside' | 'overlay';
export type InsetMode = 'depth' | 'ids' | 'off';

export class Ui {
  readonly view = el<HTMLDivElement>('view');
  readonly form = el<HTMLFormElement>('form');
  readonly prompt = el<HTMLTextAreaElement>('prompt');
  readonly negative = el<HTMLTextAreaElement>('negative');
  readonly model = el<HTMLSelectElement>('model');
  readonly scheduler = el<HTMLSelectElement>('scheduler');
  readonly steps = el<HTMLInputElement>('steps');
  readonly guidance = el<HTMLInputElement>('guidance');
  readonly seed = el<HTMLInputElement>('seed');
  readonly cnScale = el<HTMLInputElement>('cn-scale');
  readonly strength = el<HTMLInputElement>('strength');
  readonly useInit = el<HTMLInputElement>('use-init');
  readonly consistent = el<HTMLInputElement>('consistent');
  readonly size = el<HTMLSelectElement>('size');
  readonly depthRange = el<HTMLSelectElement>('depth-range');
  readonly live = el<HTMLInputElement>('live');
  readonly generate = el<HTMLButtonElement>('generate');
  readonly cancel = el<HTMLButtonElement>('cancel');
  readonly download = el<HTMLAnchorElement>('download');
  readonly display = el<HTMLSelectElement>('display');
  readonly insetMode = el<HTMLSelectElement>('inset-mode');
  readonly camera = el<HTMLSelectElement>('camera');
  readonly file = el<HTMLInputElement>('file');
  readonly demo = el<HTMLButtonElement>('demo');
  readonly frame = el<HTMLButtonElement>('frame');
  readonly objPrompt = el<HTMLInputElement>('obj-prompt');
  readonly objWeight = el<HTMLInputElement>('obj-weight');
  readonly objClear = el<HTMLButtonElement>('obj-clear');
  readonly objDone = el<HTMLButtonElement>('obj-done');

  private readonly layout = el<HTMLElement>('layout');
  readonly conn = el<HTMLSpanElement>('conn');
  private readonly modelInfo = el<HTMLSpanElement>('model-info');
  private readonly status = el<HTMLSpanElement>('status');
  private readonly errorBox = el<HTMLDivElement>('error');
  private readonly errorCode = el<HTMLElement>('error-code');
  private readonly errorText = el<HTMLSpanElement>('error-text');
  private readonly resultImg = el<HTMLImageElement>('result-img');
  private readonly resultEmpty = el<HTMLDivElement>('result-empty');
  private readonly resultMeta = el<HTMLDivElement>('result-meta');
  private readonly resultPanel = el<HTMLElement>('result-panel');
  private readonly resultBadge = el<HTMLSpanElement>('result-badge');
  private readonly onboarding = el<HTMLDivElement>('onboarding');
  private readonly demoOffer = el<HTMLParagraphElement>('demo-offer');
  readonly makeDemo = el<HTMLButtonElement>('make-demo');
  private readonly progress = el<HTMLProgressElement>('progress');
  private readonly overlayImg = el<HTMLImageElement>('overlay-img');
  private readonly split = el<HTMLInputElement>('split');
  private readonly splitLine = el<HTMLDivElement>('split-line');
  private readonly inset = el<HTMLCanvasElement>('inset');
  private readonly insetFig = el<HTMLElement>('inset-fig');
  private readonly insetCaption = el<HTMLElement>('inset-caption');
  private readonly sceneName = el<HTMLSpanElement>('scene-name');
  private readonly objEditor = el<HTMLDivElement>('obj-editor');
  private readonly objLabel = el<HTMLElement>('obj-label');
  private readonly objId = el<HTMLElement>('obj-id');
  private readonly objHint = el<HTMLElement>('obj-hint');
  private readonly objects = el<HTMLUListElement>('objects');

  private models: ModelInfo[] = [];
  /** The last finished result: it stays on screen until a newer one is finished. */
  private result: { url: string; meta: string } | undefined;
  /** The preview on screen instead of the result, while its frame runs. */
  private previewUrl: string | undefined;
  private downloadUrl: string | undefined;
  private retryTimer: ReturnType<typeof setInterval> | undefined;
  limits: Limits | undefined;

  constructor() {
    this.form.addEventListener('submit', (e) => e.preventDefault());
    el<HTMLButtonElement>('error-close').addEventListener('click', () => this.clearError());
    this.display.addEventListener('change', () => this.applyDisplay());
    this.split.addEventListener('input', () => this.applySplit());
    this.insetMode.addEventListener('change', () => {
      this.insetFig.hidden = this.insetMode.value === 'off';
    });
    this.model.addEventListener('change', () => this.applyModel());
    for (const input of [this.steps, this.guidance]) input.addEventListener('input', () => this.edited.add(input));
    this.useInit.addEventListener('change', () => (this.strength.disabled = !this.useInit.checked));
    this.strength.disabled = !this.useInit.checked;
    this.applyDisplay();
  }

  get displayMode(): DisplayMode {
    return this.display.value === 'overlay' ? 'overlay' : 'beside';
  }

  get insetKind(): InsetMode {
    return this.insetMode.value as InsetMode;
  }

  get longSide(): number {
    return Number(this.size.value) || 512;
  }

  get selectedModel(): ModelInfo | undefined {
    return this.models.find((m) => m.name === this.model.value);
  }

  // ---- params ----

  /** Generation params from the controls. Values are passed as typed; the service validates them. */
  params(): GenerationParamsInput {
    const p: GenerationParamsInput = {
      prompt: this.prompt.value,
      negativePrompt: this.negative.value,
      depthRange: this.depthRange.value === 'fixed' ? 'fixed' : 'auto',
      previewEvery: 1,
    };
    if (this.model.value) p.model = this.model.value;
    if (this.scheduler.value) p.scheduler = this.scheduler.value as SchedulerName;
    const steps = num(this.steps);
    if (steps !== undefined) p.steps = steps;
    const guidance = num(this.guidance);
    if (guidance !== undefined) p.guidance = guidance;
    const seed = num(this.seed);
    if (seed !== undefined) p.seed = seed;
    if (this.useInit.checked) {
      const strength = num(this.strength);
      if (strength !== undefined) p.strength = strength;
    }
    if (this.consistent.checked) p.consistency = 'consistent';
    if (this.selectedModel?.family === 'controlnet') {
      const s = num(this.cnScale);
      if (s !== undefined) p.controlnetScale = s;
    }
    return p;
  }

  // ---- service state ----

  setConnection(s: ConnectionState): void {
    this.conn.dataset.state = s.kind;
    if (this.retryTimer) clearInterval(this.retryTimer);
    this.retryTimer = undefined;
    const text = (): string => {
      switch (s.kind) {
        case 'connecting': return s.attempt ? `reconnecting (try ${s.attempt + 1})…` : 'connecting…';
        case 'open': return 'connected, waiting for hello…';
        case 'ready': return 'connected';
        case 'closed': return `disconnected: ${s.reason}`;
        case 'waiting': return `disconnected: ${s.reason} · retrying in ${Math.max(0, Math.ceil((s.retryAt - Date.now()) / 1000))} s`;
      }
    };
    this.conn.textContent = text();
    this.conn.title = s.kind === 'waiting' || s.kind === 'closed' ? `${s.reason} (click to retry now)` : 'Connection to the service';
    if (s.kind === 'waiting') this.retryTimer = setInterval(() => (this.conn.textContent = text()), 500);
  }

  setHello(models: ModelInfo[], schedulers: readonly string[], device: string, limits: Limits): void {
    this.models = models;
    this.limits = limits;
    const keep = this.model.value;
    this.model.replaceChildren(...models.map((m) => new Option(`${m.name} (${m.family})`, m.name)));
    const def = models.find((m) => m.name === keep) ?? models.find((m) => m.default) ?? models[0];
    if (def) this.model.value = def.name;
    const keepSched = this.scheduler.value;
    this.scheduler.replaceChildren(new Option('model default', ''), ...schedulers.map((s) => new Option(s, s)));
    this.scheduler.value = schedulers.includes(keepSched) ? keepSched : '';
    this.steps.max = String(limits.maxSteps);
    this.modelInfo.dataset.device = device;
    this.applyModel();
    // No model: an onboarding state that says what to run, not an error.
    this.onboarding.hidden = models.length > 0;
    if (models.length === 0) this.setPanelState('onboarding');
    else if (this.resultPanel.dataset.state === 'onboarding') this.setPanelState('empty');
  }

  /** Shows the demo-model button in the onboarding state (the service can write its models folder). */
  offerDemo(available: boolean): void {
    this.demoOffer.hidden = !available;
  }

  /** Whether the service has a model to run; live frames wait for one. */
  get hasModel(): boolean {
    return this.models.length > 0;
  }

  /** The device the model really runs on (hello says "auto" until a model has loaded). */
  setDevice(device: string): void {
    this.modelInfo.dataset.device = device;
    this.applyModel();
  }

  /** Controls the user has typed into: a model's defaults no longer replace them. */
  private readonly edited = new Set<HTMLInputElement>();

  private applyModel(): void {
    const m = this.selectedModel;
    // A user who changes nothing gets the model's intended settings (LCM: 4 steps at guidance 1).
    if (m?.defaults && !this.edited.has(this.steps)) this.steps.value = String(m.defaults.steps);
    if (m?.defaults && !this.edited.has(this.guidance)) this.guidance.value = String(m.defaults.guidance);
    const device = this.modelInfo.dataset.device ?? '';
    this.modelInfo.textContent = m
      ? `model: ${m.name} · ${m.family}${m.dtype ? ` · ${m.dtype}` : ''} · ${device}${m.tiny ? ' · tiny test model: random weights, its images are abstract' : ''}`
      : '';
    this.cnScale.disabled = m?.family !== 'controlnet';
  }

  setStatus(text: string): void {
    this.status.textContent = text;
  }

  setProgress(step: number, total: number): void {
    this.progress.max = Math.max(1, total);
    this.progress.value = Math.min(step, total);
  }

  showError(code: string, message: string, jobId?: string): void {
    this.errorCode.textContent = code;
    this.errorText.textContent = message + (jobId ? ` (job ${jobId})` : '');
    this.errorBox.hidden = false;
    this.errorBox.dataset.code = code;
  }

  clearError(): void {
    this.errorBox.hidden = true;
    delete this.errorBox.dataset.code;
  }

  get errorShown(): boolean {
    return !this.errorBox.hidden;
  }

  // ---- images ----

  /** A finished result (PNG): it replaces the last one and any preview. The object URL is owned here. */
  showResult(bytes: Uint8Array, meta: string, downloadName: string): void {
    const url = URL.createObjectURL(new Blob([bytes.slice().buffer], { type: 'image/png' }));
    const old = [this.result?.url, this.previewUrl, this.downloadUrl];
    this.result = { url, meta };
    this.previewUrl = undefined;
    this.downloadUrl = url;
    this.download.href = url;
    this.download.download = downloadName;
    this.download.classList.remove('disabled');
    this.download.setAttribute('aria-disabled', 'false');
    for (const u of new Set(old)) if (u && u !== url) URL.revokeObjectURL(u);
    this.render(`${meta} · finished result`);
  }

  /** A step preview (JPEG) of a frame still running, shown as such over the last result. */
  showPreview(bytes: Uint8Array, meta: string): void {
    const url = URL.createObjectURL(new Blob([bytes.slice().buffer], { type: 'image/jpeg' }));
    if (this.previewUrl) URL.revokeObjectURL(this.previewUrl);
    this.previewUrl = url;
    const last = this.result ? ` · last finished: ${this.result.meta.split(' · ')[0]}` : '';
    this.render(`${meta} · preview, unfinished${last}`);
  }

  /** The previewed frame will not finish (cancelled, failed, service gone): back to the last result. */
  dropPreview(why: string): void {
    if (!this.previewUrl) return;
    URL.revokeObjectURL(this.previewUrl);
    this.previewUrl = undefined;
    this.render(this.result ? `${this.result.meta} · finished result · ${why}` : `No image yet · ${why}`);
  }

  /** What is on screen: the result-panel state says which (empty, preview, result, onboarding). */
  get shownState(): string {
    return this.resultPanel.dataset.state ?? 'empty';
  }

  private setPanelState(state: 'empty' | 'preview' | 'result' | 'onboarding'): void {
    this.resultPanel.dataset.state = state;
    this.resultEmpty.hidden = state !== 'empty';
    this.onboarding.hidden = state !== 'onboarding';
  }

  private render(caption: string): void {
    const url = this.previewUrl ?? this.result?.url;
    const state = this.previewUrl ? 'preview' : this.result ? 'result' : this.hasModel || !this.limits ? 'empty' : 'onboarding';
    this.setPanelState(state);
    for (const img of [this.resultImg, this.overlayImg]) {
      if (url) img.src = url;
      img.hidden = !url;
      img.dataset.kind = state;
    }
    this.resultBadge.hidden = !url;
    this.resultBadge.textContent = state === 'preview' ? 'PREVIEW · unfinished' : 'RESULT';
    this.resultMeta.textContent = caption;
    this.view.classList.toggle('has-image', !!url);
    this.applyDisplay();
  }

  private applyDisplay(): void {
    const overlay = this.displayMode === 'overlay';
    this.layout.dataset.display = overlay ? 'overlay' : 'beside';
    const has = !this.resultImg.hidden;
    this.overlayImg.hidden = !(overlay && has);
    this.split.hidden = !(overlay && has);
    this.splitLine.hidden = !(overlay && has);
    this.applySplit();
  }

  private applySplit(): void {
    const v = Number(this.split.value);
    // Left of the line: the live 3D view; right: the image.
    this.overlayImg.style.clipPath = `inset(0 0 0 ${v}%)`;
    this.splitLine.style.left = `${v}%`;
  }

  // ---- inset ----

  drawDepthInset(depth: Float32Array, width: number, height: number, near: number, far: number, range: 'auto' | 'fixed'): void {
    if (this.insetKind !== 'depth') return;
    // The service's mapping (src/depth/convert.ts): inverse depth between zNear and zFar, near = white.
    let min = Infinity, max = -Infinity;
    for (const z of depth) if (Number.isFinite(z) && z < far) { if (z < min) min = z; if (z > max) max = z; }
    const zNear = range === 'auto' && Number.isFinite(min) ? Math.max(min, near) : near;
    const zFar = range === 'auto' && Number.isFinite(max) ? Math.min(Math.max(max, zNear * (1 + 1e-6)), far) : far;
    const inv0 = 1 / zNear, inv1 = 1 / zFar, span = inv0 - inv1;
    const img = this.prepareInset(width, height, 'depth (near = white)');
    const d = img.data;
    for (let i = 0; i < depth.length; i++) {
      const z = depth[i]!;
      let n = 0;
      if (Number.isFinite(z) && z < far) n = (1 / Math.min(Math.max(z, zNear), zFar) - inv1) / span;
      const g = Math.round(n * 255);
      d[i * 4] = g; d[i * 4 + 1] = g; d[i * 4 + 2] = g; d[i * 4 + 3] = 255;
    }
    this.inset.getContext('2d')!.putImageData(img, 0, 0);
  }

  drawIdInset(ids: Uint16Array, width: number, height: number): void {
    if (this.insetKind !== 'ids') return;
    const img = this.prepareInset(width, height, 'object ids');
    const d = img.data;
    for (let i = 0; i < ids.length; i++) {
      const [r, g, b] = idColor(ids[i]!);
      d[i * 4] = r; d[i * 4 + 1] = g; d[i * 4 + 2] = b; d[i * 4 + 3] = 255;
    }
    this.inset.getContext('2d')!.putImageData(img, 0, 0);
  }

  private prepareInset(width: number, height: number, caption: string): ImageData {
    if (this.inset.width !== width || this.inset.height !== height) {
      this.inset.width = width;
      this.inset.height = height;
    }
    this.insetCaption.textContent = `${caption} · ${width}×${height}`;
    return new ImageData(width, height);
  }

  // ---- scene / objects ----

  setScene(name: string, cameras: string[], selectedCamera: number): void {
    this.sceneName.textContent = name;
    this.camera.replaceChildren(...cameras.map((c, i) => new Option(c, String(i))));
    this.camera.value = String(selectedCamera);
  }

  setObjects(rows: ObjectRow[], selectedId: number | undefined, onPick: (id: number) => void): void {
    const withPrompt = rows.filter((r) => r.prompt);
    this.objHint.textContent = withPrompt.length
      ? `${withPrompt.length} object${withPrompt.length > 1 ? 's' : ''} with a prompt; their pixels follow it (layout).`
      : 'Click an object in the 3D view to give it its own prompt.';
    this.objects.replaceChildren(
      ...withPrompt.map((r) => {
        const li = document.createElement('li');
        li.dataset.id = String(r.id);
        if (r.id === selectedId) li.classList.add('selected');
        const sw = document.createElement('span');
        sw.className = 'swatch';
        const [cr, cg, cb] = idColor(r.id);
        sw.style.background = `rgb(${cr},${cg},${cb})`;
        const name = document.createElement('span');
        name.className = 'name';
        name.textContent = r.label;
        const prompt = document.createElement('span');
        prompt.className = 'prompt';
        prompt.textContent = r.prompt ?? '';
        prompt.title = r.prompt ?? '';
        const w = document.createElement('span');
        w.className = 'muted';
        w.textContent = r.weight !== 1 ? `×${r.weight}` : '';
        li.append(sw, name, prompt, w);
        li.addEventListener('click', () => onPick(r.id));
        return li;
      }),
    );
  }

  editObject(row: ObjectRow | undefined): void {
    this.objEditor.hidden = !row;
    if (!row) return;
    // The editor sits low in the controls column: bring it into view where the click was made.
    this.objEditor.scrollIntoView({ block: 'nearest' });
    this.objLabel.textContent = row.label;
    this.objId.textContent = `id ${row.id}`;
    this.objPrompt.value = row.prompt ?? '';
    this.objWeight.value = String(row.weight);
  }
}

/** A stable, distinct colour per object id (0 = black). */
export function idColor(id: number): [number, number, number] {
  if (id === 0) return [0, 0, 0];
  const h = (id * 0.61803398875) % 1;
  const s = 0.65, v = 0.95;
  const i = Math.floor(h * 6), f = h * 6 - i;
  const p = v * (1 - s), q = v * (1 - f * s), t = v * (1 - (1 - f) * s);
  const rgb = [[v, t, p], [q, v, p], [p, v, t], [p, q, v], [t, p, v], [v, p, q]][i % 6]!;
  return [Math.round(rgb[0]! * 255), Math.round(rgb[1]! * 255), Math.round(rgb[2]! * 255)];
}
