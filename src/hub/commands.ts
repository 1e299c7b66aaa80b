/**
 * CLI-facing model commands: `depthcast models list | pull | verify | remove | create-tiny`.
 * Each takes already-parsed options and writes human output to the given stream (progress to process.stderr or ctx.err);
 * failures are thrown as DepthcastError for the CLI layer to print and map to an exit code.
 * src/cli/main.ts wires these into commander.
 */
import cliProgress from 'cli-progress';
import { DepthcastError } from '../errors.ts';
import { loadRegistry, resolveModel, type RegistryEntry, type RegistrySource } from '../models/registry.ts';
import { listInstalled, listPartialDownloads } from './list.ts';
import { depthcastHome, downloadsRoot, modelsRoot } from './paths.ts';
import { assembleControlnet, importCheckpoint, pullModel, type PullEvent, type PullResult, type SourceSpec } from './pull.ts';
import { removeModel } from './remove.ts';
import { assertVerified, verifyModel, type VerifyReport } from './verify.ts';
import { CLI } from '../cli/command.ts';

export type Out = NodeJS.WritableStream & { isTTY?: boolean };

/** Optional extras for every command: where progress goes (default process.stderr) and the environment. */
export interface CommandContext {
  /** Progress output; cli-progress bars when it is a TTY, plain lines otherwise. */
  err?: Out;
  env?: NodeJS.ProcessEnv;
}

function line(s: NodeJS.WritableStream, text = ''): void {
  s.write(`${text}\n`);
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let v = n;
  let u = -1;
  do {
    v /= 1024;
    u++;
  } while (v >= 1024 && u < units.length - 1);
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[u]}`;
}

function pad(s: string, n: number): string {
  return s.length >= n ? `${s} ` : s + ' '.repeat(n - s.length);
}

function homeOf(o: { home?: string }, ctx: CommandContext): string {
  return o.home ?? depthcastHome(ctx.env ?? process.env);
}

// ---------------------------------------------------------------------------------------------
// list

export interface ModelsListOptions {
  home?: string;
  json?: boolean;
  /** Show the registry's entries too (default true). */
  registry?: boolean;
}

export async function modelsList(o: ModelsListOptions, out: Out, ctx: CommandContext = {}): Promise<void> {
  const home = homeOf(o, ctx);
  const installed = await listInstalled(home);
  const downloads = await listPartialDownloads(home);
  const registry = o.registry === false ? undefined : await loadRegistry();
  if (o.json) {
    line(out, JSON.stringify({ home, installed, downloads, registry: registry?.models ?? null }, null, 2));
    return;
  }
  line(out, `Installed models (${modelsRoot(home)}):`);
  if (!installed.length) line(out, `  none — try: ${CLI} models pull <name>`);
  for (const m of installed) {
    const src = m.sources.map((s) => `${s.repo}@${s.commit ? s.commit.slice(0, 10) : s.revision}`).join(' + ') || 'local folder';
    line(out, `  ${pad(m.name, 34)}${pad(m.pipeline, 11)}${pad(formatBytes(m.bytes), 9)}${m.problem ? `PROBLEM: ${m.problem}` : src}`);
  }
  if (downloads.length) {
    line(out);
    line(out, `Cached or partial downloads (${downloadsRoot(home)}; pull again to resume, or delete):`);
    for (const d of downloads) line(out, `  ${pad(d.key, 60)}${formatBytes(d.bytes)}`);
  }
  if (registry) {
    line(out);
    line(out, 'Registry (models/registry.json — entries marked "unverified" have not been checked against the hub):');
    for (const e of registry.models.filter((m) => m.kind === 'pipeline')) {
      const how = e.export ? 'export' : 'pull';
      const d = e.defaults;
      const defaults = d ? `${d.steps} steps, cfg ${d.guidance}, ${d.scheduler}` : '';
      line(out, `  ${pad(e.name, 34)}${pad(e.pipeline ?? '', 11)}${pad(how, 7)}${pad(e.verified ? 'verified' : 'unverified', 11)}${defaults}`);
      line(out, `      ${e.title}`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// progress

/** Draws PullEvents: cli-progress bars on a TTY, one plain line per file otherwise. */
export class PullProgressView {
  private multi?: cliProgress.MultiBar;
  private total?: cliProgress.SingleBar;
  private file?: cliProgress.SingleBar;
  private build?: cliProgress.SingleBar;
  private buildComponent = '';
  private done = 0;
  private totalBytes = 0;

  constructor(
    private readonly stream: NodeJS.WritableStream & { isTTY?: boolean },
    tty = Boolean(stream.isTTY),
  ) {
    if (tty) {
      this.multi = new cliProgress.MultiBar(
        {
          stream,
          format: ' {bar} {percentage}% {have}/{size} {label}',
          hideCursor: true,
          clearOnComplete: false,
          // bars forced onto a stream that is not a terminal (tests, `--progress bars`): still draw them
          noTTYOutput: !stream.isTTY,
          autopadding: true,
        },
        cliProgress.Presets.shades_classic,
      );
    }
  }

  handle = (e: PullEvent): void => {
    const m = this.multi;
    switch (e.type) {
      case 'resolve':
        this.log(`${e.repo}@${e.revision}${e.commit ? ` (commit ${e.commit.slice(0, 12)})` : ''}${e.offline ? ' [offline: cache only]' : ''}`);
        break;
      case 'plan': {
        const need = e.totalBytes - e.cachedBytes;
        this.log(`  ${e.files.length} files, ${formatBytes(e.totalBytes)}${e.cachedBytes ? ` (${formatBytes(e.cachedBytes)} cached, ${formatBytes(need)} to fetch)` : ''}`);
        this.totalBytes += need;
        if (m) {
          if (!this.total) this.total = m.create(Math.max(this.totalBytes, 1), this.done, { have: formatBytes(this.done), size: formatBytes(this.totalBytes), label: 'total' });
          else this.total.setTotal(Math.max(this.totalBytes, 1));
        }
        break;
      }
      case 'file-start':
        if (m) this.file = m.create(Math.max(e.size, 1), 0, { have: formatBytes(0), size: formatBytes(e.size), label: e.path });
        break;
      case 'bytes':
        this.file?.update(e.have, { have: formatBytes(e.have), size: formatBytes(e.size), label: e.path });
        break;
      case 'file-done':
        if (m && this.file) {
          this.file.update(Math.max(e.size, 1), { have: formatBytes(e.size) });
          m.remove(this.file);
          this.file = undefined;
        }
        if (!e.cached) {
          this.done += e.transferred;
          this.total?.update(this.done, { have: formatBytes(this.done), size: formatBytes(this.totalBytes) });
          this.log(`  ${e.path} ${formatBytes(e.size)}${e.resumedFrom > 0 ? ` (resumed at ${formatBytes(e.resumedFrom)})` : ''} ✓ sha256`);
        } else if (!m) {
          this.log(`  ${e.path} ${formatBytes(e.size)} (cached)`);
        }
        break;
      case 'retry':
        if (m && this.file) {
          m.remove(this.file);
          this.file = undefined;
        }
        this.log(`  retry ${e.attempt} for ${e.path}: ${e.message}`);
        break;
      case 'build':
        if (e.component !== this.buildComponent) {
          this.buildComponent = e.component;
          if (!m) this.log(`  building ${e.component}`);
        }
        if (m) {
          const values = { have: formatBytes(e.doneBytes), size: formatBytes(e.totalBytes), label: `building ${e.component}` };
          this.build ??= m.create(Math.max(e.totalBytes, 1), 0, values);
          this.build.update(e.doneBytes, values);
        }
        break;
      case 'install':
        this.log(`installing into ${e.dir}`);
        break;
      case 'done':
        break;
    }
  };

  private log(text: string): void {
    // MultiBar.log() buffers until the next redraw; before any bar exists, write directly.
    if (this.multi?.isActive) this.multi.log(`${text}\n`);
    else this.stream.write(`${text}\n`);
  }

  stop(): void {
    if (this.multi?.isActive) {
      this.multi.update(); // flush buffered log lines (stop() alone drops them)
      this.multi.stop();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// pull

export interface ModelsPullOptions {
  /** Registry name, or a hub repo `owner/name`; with `base`, the ControlNet (registry name or repo). */
  id: string;
  revision?: string;
  /** Installed folder name (default: the registry name, or the repo's name). */
  name?: string;
  subfolder?: string;
  /** Assemble with this ControlNet (registry controlnet name or repo). */
  controlnet?: string;
  controlnetRevision?: string;
  controlnetSubfolder?: string;
  controlnetFile?: string;
  /** Put the ControlNet `id` onto this installed model instead of pulling a base. */
  base?: string;
  force?: boolean;
  keepDownloads?: boolean;
  home?: string;
  /** Hub URL (default HF_ENDPOINT or https://huggingface.co). */
  hubUrl?: string;
  /** Alias of hubUrl (the CLI's --hub). */
  hub?: string;
  retries?: number;
  /** Run verify (no re-hash) after installing and print its findings (default true). */
  verify?: boolean;
  /** Test hook: draw bars even when the stream is not a TTY (or never). */
  progress?: 'auto' | 'bars' | 'lines' | 'none';
  /** Injected fetch (tests). */
  fetch?: typeof fetch;
  /** Diffusers checkpoints: take the `.fp16.safetensors` variants where both exist. */
  fp16Weights?: boolean;
  /** Diffusers checkpoints: external-data limit in bytes (tests lower it). */
  inlineLimitBytes?: number;
}

function nameFromRepo(repo: string): string {
  const base = repo.split('/').pop() ?? repo;
  const n = base.toLowerCase().replace(/[^a-z0-9._-]+/g, '-').replace(/^[^a-z0-9]+/, '').slice(0, 128);
  return n || 'model';
}

function isRepoId(id: string): boolean {
  return id.includes('/');
}

async function controlnetArg(arg: string, o: ModelsPullOptions): Promise<{ spec: SourceSpec; depthcastJson?: Record<string, unknown>; entry?: RegistryEntry }> {
  if (isRepoId(arg)) {
    return { spec: { repo: arg, revision: o.controlnetRevision, subfolder: o.controlnetSubfolder, file: o.controlnetFile } };
  }
  const reg = await loadRegistry();
  const entry = reg.models.find((m) => m.name === arg);
  if (!entry || entry.kind !== 'controlnet' || !entry.source) {
    const names = reg.models.filter((m) => m.kind === 'controlnet').map((m) => m.name);
    throw new DepthcastError('MODEL_NOT_FOUND', `${arg} is not a ControlNet of the registry (known: ${names.join(', ')}); pass a hub repo as owner/name instead`);
  }
  const src: RegistrySource = entry.source;
  const outputs = entry.io?.controlnet_outputs;
  return {
    spec: { ...src, revision: o.controlnetRevision ?? src.revision, ...(o.controlnetFile ? { file: o.controlnetFile } : {}) },
    depthcastJson: outputs ? { controlnet: { outputs } } : undefined,
    entry,
  };
}

export async function modelsPull(o: ModelsPullOptions, out: Out, ctx: CommandContext = {}): Promise<void> {
  await pullCommand(o, out, ctx);
}

/** Progress on stderr as --progress asks: bars on a terminal or lines otherwise (auto), bars, lines, or none. */
function progressView(mode: 'auto' | 'bars' | 'lines' | 'none' = 'auto', err: Out): PullProgressView | undefined {
  if (mode === 'none') return undefined;
  return new PullProgressView(err, mode === 'bars' ? true : mode === 'lines' ? false : Boolean(err.isTTY));
}

function printProblems(out: Out, report: VerifyReport): void {
  for (const p of report.problems) line(out, `  ${p.code}: ${p.message}`);
}

/** The verify step after an install: `okLine`, or `problemsLine` and one line per problem. */
function reportVerify(out: Out, report: VerifyReport, okLine: string, problemsLine: string): void {
  if (report.ok) {
    line(out, okLine);
    return;
  }
  line(out, problemsLine);
  printProblems(out, report);
}

/** modelsPull, returning what it did (for tests and callers that want the result). */
export async function pullCommand(o: ModelsPullOptions, out: Out, ctx: CommandContext = {}): Promise<PullResult & { verify?: VerifyReport }> {
  const env = ctx.env ?? process.env;
  const home = homeOf(o, ctx);
  const errStream: Out = ctx.err ?? process.stderr;
  const view = progressView(o.progress, errStream);
  const hubUrl = o.hubUrl ?? o.hub;
  const hub = { ...(hubUrl ? { hubUrl: hubUrl.replace(/\/+$/, '') } : {}), ...(o.fetch ? { fetch: o.fetch } : {}) };
  const common = {
    home, env, hub, force: o.force, keepDownloads: o.keepDownloads, retries: o.retries, onProgress: view?.handle,
    preferFp16: o.fp16Weights, build: { inlineLimitBytes: o.inlineLimitBytes },
  };
  let result: PullResult;
  try {
    if (o.base) {
      const cn = await controlnetArg(o.id, o);
      const name = o.name ?? `${o.base}-${cn.entry?.name ?? nameFromRepo(cn.spec.repo)}`;
      result = await assembleControlnet({ ...common, name, base: o.base, controlnet: cn.spec, depthcastJson: cn.depthcastJson, registry: null });
    } else {
      let source: SourceSpec;
      let controlnet: SourceSpec | undefined;
      let depthcastJson: Record<string, unknown> | undefined;
      let registry: string | null = null;
      let name: string;
      if (isRepoId(o.id)) {
        source = { repo: o.id, revision: o.revision, subfolder: o.subfolder };
        name = o.name ?? nameFromRepo(o.id);
      } else {
        const resolved = resolveModel(await loadRegistry(), o.id, o.revision);
        if (resolved.export) {
          throw new DepthcastError('MODEL_NOT_FOUND', `no ONNX export of ${o.id} is published, so it can't be pulled; create it with:\n  ${resolved.export}\n(see docs/models.md, "Exporting models")`);
        }
        source = { ...resolved.source!, ...(o.subfolder ? { subfolder: o.subfolder } : {}) };
        controlnet = resolved.controlnet;
        depthcastJson = resolved.depthcastJson;
        registry = resolved.entry.name;
        name = o.name ?? resolved.entry.name;
        if (!resolved.entry.verified) {
          line(errStream, `note: registry entry ${o.id} has not been verified against the hub (see docs/models.md); run ${CLI} models verify ${name} afterwards.`);
        }
      }
      if (o.controlnet) {
        const cn = await controlnetArg(o.controlnet, o);
        controlnet = cn.spec;
        // The base's part (VAE scaling factor) stays; the ControlNet's part (residual names) is this ControlNet's.
        const { controlnet: _previous, ...baseJson } = depthcastJson ?? {};
        depthcastJson = cn.depthcastJson || Object.keys(baseJson).length ? { ...baseJson, ...cn.depthcastJson } : undefined;
        if (!o.name) name = `${name}-${cn.entry?.name ?? nameFromRepo(cn.spec.repo)}`;
      }
      result = await pullModel({ ...common, name, source, controlnet, depthcastJson, registry });
    }
  } finally {
    view?.stop();
  }
  if (!result.installed) {
    line(out, `${result.name} is already installed at ${result.dir} (use --force to download it again)`);
    return result;
  }
  line(out, `installed ${result.name}: ${result.files} files, ${formatBytes(result.bytes)} in ${result.dir}${result.resumed ? ' (resumed)' : ''}`);
  if (o.verify === false) return result;
  const report = await verifyModel(result.dir, { home, hashes: false });
  reportVerify(out, report, `verify: ok${report.io.ran ? '' : ` (${report.notes.find((n) => n.startsWith('ONNX I/O')) ?? 'I/O not checked'})`}`,
    'verify found problems (the model is installed; fix or pick another model):');
  return { ...result, verify: report };
}

// ---------------------------------------------------------------------------------------------
// import

export interface ModelsImportOptions {
  /** A diffusers pipeline checkpoint folder. */
  dir: string;
  /** A ControlNetModel checkpoint folder. */
  controlnet?: string;
  /** Installed name (default: the folder's name, plus the ControlNet folder's). */
  name?: string;
  force?: boolean;
  home?: string;
  fp16Weights?: boolean;
  inlineLimitBytes?: number;
  progress?: 'auto' | 'bars' | 'lines' | 'none';
}

/** `models import`: build a local diffusers checkpoint into an installed model, then verify it. */
export async function modelsImport(o: ModelsImportOptions, out: Out, ctx: CommandContext = {}): Promise<PullResult & { verify?: VerifyReport }> {
  const home = homeOf(o, ctx);
  const errStream: Out = ctx.err ?? process.stderr;
  const view = progressView(o.progress, errStream);
  const folderName = (dir: string) => nameFromRepo(dir.replace(/[\\/]+$/, '').split(/[\\/]/).pop() ?? 'model');
  const name = o.name ?? (o.controlnet ? `${folderName(o.dir)}-${folderName(o.controlnet)}` : folderName(o.dir));
  let result: PullResult;
  try {
    result = await importCheckpoint({
      name, home, env: ctx.env, dir: o.dir, controlnet: o.controlnet, force: o.force, onProgress: view?.handle,
      preferFp16: o.fp16Weights, build: { inlineLimitBytes: o.inlineLimitBytes },
    });
  } finally {
    view?.stop();
  }
  if (!result.installed) {
    line(out, `${result.name} is already installed at ${result.dir} (use --force to build it again)`);
    return result;
  }
  line(out, `built and installed ${result.name}: ${result.files} files, ${formatBytes(result.bytes)} in ${result.dir}`);
  const report = await verifyModel(result.dir, { home, hashes: true });
  reportVerify(out, report, 'verify: ok', 'verify found problems:');
  return { ...result, verify: report };
}

// ---------------------------------------------------------------------------------------------
// verify

export interface ModelsVerifyOptions {
  /** Installed model name, or a folder path. */
  name: string;
  home?: string;
  /** Skip re-hashing (default: hash every file against the manifest). */
  noHashes?: boolean;
  /** Skip the ONNX I/O check. */
  noIo?: boolean;
  /** Where the load + dry run runs (default cpu). */
  device?: import('../runtime/ort.ts').Device;
  json?: boolean;
}

export async function modelsVerify(o: ModelsVerifyOptions, out: Out, ctx: CommandContext = {}): Promise<void> {
  const report = await verifyModel(o.name, { home: homeOf(o, ctx), hashes: !o.noHashes, io: !o.noIo, device: o.device });
  if (o.json) line(out, JSON.stringify(report, null, 2));
  else {
    line(out, `${report.dir}: ${report.files} files, ${report.hashed} hashed, ${report.onnx} ONNX checked${report.io.ran ? `, loaded and dry-run on ${o.device ?? 'cpu'}` : ''}`);
    for (const n of report.notes) line(out, `  note: ${n}`);
    printProblems(out, report);
    line(out, report.ok ? 'ok' : 'FAILED');
  }
  assertVerified(report);
}

// ---------------------------------------------------------------------------------------------
// remove

export interface ModelsRemoveOptions {
  name: string;
  home?: string;
  /** Also delete cached downloads of its source repos. */
  cache?: boolean;
}

export async function modelsRemove(o: ModelsRemoveOptions, out: Out, ctx: CommandContext = {}): Promise<void> {
  const r = await removeModel(o.name, { home: homeOf(o, ctx), cache: o.cache });
  line(out, `removed ${r.name} (${formatBytes(r.bytes)}) from ${r.dir}`);
  for (const d of r.cacheRemoved) line(out, `removed cached download ${d}`);
}
