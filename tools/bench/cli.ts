/**
 * `depthcast bench` / `npm run bench`: prints a table and JSON of per-stage times, pipeline
 * overhead against a bare session.run loop, WebSocket frame latency, event-loop delay and a
 * live flood. Figures are printed, never asserted; goals are shown beside them.
 */
import { dirname } from 'node:path';
import os from 'node:os';
import type { Device } from '../../src/runtime/ort.ts';
import { listBundledBackends } from '../../src/runtime/ort.ts';
import { VERSION } from '../../src/version.ts';
import { BenchWorker } from './in-worker.ts';
import { buildSdSizeModels, type ControlSource, type PipelineFigures, type RegionFigures } from './pipeline-bench.ts';
import { benchSdUnet } from './sd-unet-bench.ts';
import { benchWebSocket, type WsFigures } from './ws-bench.ts';

export interface BenchOptions {
  json?: boolean;
  quick?: boolean;
  device: Device;
  /** Time only a real-architecture UNet (sd15 | sd2-depth) instead of the regular figures. */
  sdUnet?: string;
  unetDtype?: 'fp32' | 'fp16';
  unetRuns?: number;
  /** Only the ControlNet pipelines (composed and two sessions), e.g. on a GPU machine. */
  controlnetOnly?: boolean;
  /** Denoising steps per image and timed images per pipeline (fewer for a slow device). */
  steps?: number;
  repeats?: number;
}

async function sdUnetCommand(opts: BenchOptions, log: (line: string) => void): Promise<void> {
  const dtype = opts.unetDtype ?? 'fp32';
  log(`depthcast ${VERSION} bench --sd-unet ${opts.sdUnet} — ${new Date().toISOString()} — ${os.cpus()[0]?.model ?? 'cpu'} ×${os.cpus().length}, node ${process.version}; device requested: ${opts.device}, ${dtype}`);
  const f = await benchSdUnet(opts.sdUnet!, dtype, opts.device, opts.unetRuns ?? 3);
  log(`${f.architecture} (${(f.params / 1e6).toFixed(1)} M parameters, constant weights folded at load; file ${(f.modelBytes / 1024).toFixed(0)} KB) on ${f.device}, ${f.dtype}, sample ${f.sample.join('×')}, text 2×77:`);
  log(`  session created in ${f.createMs} ms; first run ${f.firstRunMs} ms; then ${f.runsMs.join(', ')} ms`);
  log(`  UNet per denoising step (CFG batch 2, 512²): ${f.perStepMs} ms (median); process RSS ${f.rssGiB} GiB`);
  for (const r of f.references) log(`  published, for reference: ${r}`);
  if (opts.json) console.log(JSON.stringify({ version: VERSION, date: new Date().toISOString(), sdUnet: f }, null, 2));
  else log(`\n${JSON.stringify({ sdUnet: f })}`);
}

const mb = (bytes: number) => (bytes / 1e6).toFixed(3);

function goal(label: string, value: number, limit: number, unit: string): string {
  return `  ${value <= limit ? 'meets' : 'MISSES'} goal: ${label} ${value} ${unit} (goal <= ${limit})`;
}

export async function benchCommand(opts: BenchOptions): Promise<void> {
  const log = opts.json ? () => {} : (line: string) => console.log(line);
  if (opts.sdUnet) return sdUnetCommand(opts, log);
  const steps = opts.steps ?? (opts.quick ? 8 : 20);
  const repeats = opts.repeats ?? (opts.quick ? 3 : 7);
  log(`depthcast ${VERSION} bench — ${new Date().toISOString()} — ${os.cpus()[0]?.model ?? 'cpu'} ×${os.cpus().length}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}`);
  log(`onnxruntime backends bundled: ${listBundledBackends().join(', ')}; device requested: ${opts.device}`);
  log('models: random-weight models with Stable Diffusion 1.5 I/O shapes (latents 2×4×64×64, text 2×77×768, 512×512 images; ControlNet: SD 1.5\'s 13 residuals, 320-1280 channels) and trivial compute, so overhead is what is measured');
  log('pipelines and codecs run in a worker thread set up as the service\'s inference worker (its heap sizing included)\n');
  const dirs = await buildSdSizeModels();
  const pipelines: PipelineFigures[] = [];
  const unsupported: { pipeline: string; error: string }[] = [];
  type Run = [string, 'euler-a' | 'dpmpp-2m', ('composed' | 'separate')?, ControlSource?];
  const runs: Run[] = [
    [dirs.controlnet, 'euler-a', 'composed'], [dirs.controlnet, 'euler-a', 'separate'],
    // The composed graph takes 8- and 16-bit control images as their levels: fewer bytes per step.
    [dirs.controlnet, 'euler-a', 'composed', '8-bit'], [dirs.controlnet, 'euler-a', 'composed', '16-bit'],
    [dirs.controlnetFp16, 'euler-a', 'composed'], [dirs.controlnetFp16, 'euler-a', 'separate'],
    ...(opts.controlnetOnly ? [] : [[dirs.depth2img, 'euler-a'], [dirs.depth2img, 'dpmpp-2m']] as Run[]),
  ];
  const worker = new BenchWorker();
  let regions: RegionFigures[];
  let codecs: Record<string, number>;
  try {
    for (const [dir, scheduler, graph, control] of runs) {
      let f: PipelineFigures;
      try {
        f = await worker.run('benchPipeline', dir, opts.device, steps, repeats, scheduler, graph, control);
      } catch (err) {
        // A pipeline this device cannot run (an fp16 one on an adapter without shader-f16) is
        // reported and skipped; the others still run.
        if ((err as { code?: string }).code !== 'UNSUPPORTED_DEVICE') throw err;
        const what = `${dir.endsWith('-fp16') ? 'fp16' : 'fp32'} ${graph ?? ''} ${control ?? ''}`.replace(/ +/g, ' ').trim();
        unsupported.push({ pipeline: what, error: (err as Error).message });
        log(`${what}: cannot run on ${opts.device}: ${(err as Error).message}\n`);
        continue;
      }
      pipelines.push(f);
      log(`${f.family}${f.graph ? ` (${f.graph === 'composed' ? 'composed into one graph' : 'two sessions'})` : ''} ${f.dtype}, ${f.steps} steps, CFG batch 2, ${f.scheduler}${f.controlSource ? `, control image from ${f.controlSource} depth` : ''} (median of ${repeats}):`);
      log(`  per image: total ${f.perImage.total} ms, inside session.run ${f.perImage.sessionRun} ms, overhead ${f.perImage.overhead} ms`);
      log(`  per step: ${f.graph === 'composed' ? `controlnet+unet ${f.perStep.controlnetUnet} ms` : `unet ${f.perStep.unet} ms, controlnet ${f.perStep.controlnet} ms`}, scheduler+guidance ${f.perStep.scheduler} ms, overhead ${f.perStep.overhead} ms`);
      const b = f.bytesPerStep;
      // Stable feeds kept on the GPU cross once per image: their share of a step is counted too.
      const perStep = b.in + b.out + b.uploadedPerImage / f.steps;
      log(`  bytes across the onnxruntime boundary per step: in ${mb(b.in)} MB, out ${mb(b.out)} MB${b.uploadedPerImage ? `, plus ${mb(b.uploadedPerImage)} MB per image uploaded once and kept on the GPU` : ''} (total ${mb(perStep)} MB per step)`);
      if (f.graph === 'composed') log(goal('bytes per step, composed ControlNet + UNet', +mb(perStep), 1, 'MB'));
      log(`  stages (ms per image): ${Object.entries(f.stages).map(([k, v]) => `${k} ${v}`).join(', ')}`);
      log(`  bare session.run loop over the same calls: ${f.bare.perImage} ms per image → pipeline/bare ratio ${f.bare.ratio}`);
      log(goal('pipeline overhead per step', f.perStep.overhead, 0.5, 'ms'));
    }
    if (opts.controlnetOnly) {
      await worker.close();
      const report = { version: VERSION, date: new Date().toISOString(), device: opts.device, backends: listBundledBackends(), pipelines, unsupported };
      if (opts.json) console.log(JSON.stringify(report, null, 2));
      else log(`\n${JSON.stringify(report)}`);
      return;
    }
    regions = await worker.run('benchRegions', dirs.depth2img, opts.device, steps, Math.max(2, repeats - 2));
    log(`\nregional prompting (depth2img, CFG): ${regions.map((r) => `${r.regions} regions → UNet batch ${r.unetBatch}, ${r.unetMsPerStep} ms/step, ${r.totalMs} ms/image`).join('; ')}`);
    codecs = await worker.run('benchCodecs', repeats);
  } catch (err) {
    await worker.close();
    throw err;
  }
  log(`\nper-frame work at 512×512 (ms): ${Object.entries(codecs).map(([k, v]) => `${k} ${v}`).join(', ')}`);

  let ws: WsFigures | { error: string };
  try {
    ws = await benchWebSocket(dirname(dirs.controlnet), 'sd-controlnet', opts.device, !!opts.quick);
    log(`\nWebSocket on loopback, 512×512 f32 depth frames, 4-step controlnet generations, a raw rgb8 preview every step and a raw rgb8 result (as the Blender add-on asks):`);
    log(`  frame → result: median ${ws.latency.totalMedian} ms, of which model (session.run) ${ws.latency.modelMedian} ms; non-model median ${ws.latency.nonModelMedian} ms, p90 ${ws.latency.nonModelP90} ms; ws.send ${ws.latency.sendMedian} ms`);
    log(`  with PNG results instead (as the preview page takes them): non-model median ${ws.latencyPng.nonModelMedian} ms, p90 ${ws.latencyPng.nonModelP90} ms over ${ws.latencyPng.frames} frames`);
    log(goal('non-model latency per frame', ws.latency.nonModelMedian, 15, 'ms'));
    log(`  event-loop delay while generating: p50 ${ws.eventLoop.p50} ms, p99 ${ws.eventLoop.p99} ms, max ${ws.eventLoop.max} ms`);
    log(goal('event-loop delay p99', ws.eventLoop.p99, 20, 'ms'));
    const fl = ws.flood;
    log(`  live flood ${fl.fps} frames/s for ${fl.seconds} s on one stream: sent ${fl.sent}, computed ${fl.computed}, reused ${fl.reused}, cancelled ${fl.cancelled}, max queued ${fl.maxQueued}`);
    log(`  last frame → its result ${fl.lastFrameLatency} ms (one generation ${fl.generationMs} ms + one step ${fl.stepMs} ms = ${+(fl.generationMs + fl.stepMs).toFixed(1)} ms); RSS growth ${fl.rssGrowthMb} MB; last frame answered: ${fl.lastFrameGotResult}`);
    log(`  results while sending: ${fl.computedWhileSending} in ${fl.seconds} s = ${fl.rateOfQuiet} of the quiet rate (one per ${fl.generationMs} ms); last frame's result after ${fl.lastFrameGenerations} generations (${fl.lastFrameServiceGenerations} from its arrival at the service); a generation took ${fl.generationMsWhileSending} ms under the flood, so ${fl.engineTimeOnResults} of its time went to results`);
    log(`  ${fl.rateOfQuiet >= 0.5 ? 'meets' : 'MISSES'} goal: results during the flood ${fl.rateOfQuiet} of the quiet generation rate (goal >= 0.5)`);
    log(goal('last frame → its result', fl.lastFrameGenerations, 2, 'generations'));
    log(goal('queue length (jobs pending, one stream)', fl.maxQueued, 1, 'jobs'));
    log(goal('RSS growth during flood', fl.rssGrowthMb, 50, 'MB'));
  } catch (err) {
    ws = { error: (err as Error).message };
    log(`\nWebSocket figures unavailable: ${(err as Error).message}`);
  } finally {
    // Closed only now: a worker torn down just before the flood hands its memory back while
    // the service grows, which showed as 50-70 MB of "RSS growth" that was not the service's.
    await worker.close();
  }

  const report = {
    version: VERSION,
    date: new Date().toISOString(),
    machine: { cpu: os.cpus()[0]?.model, cores: os.cpus().length, memGiB: Math.round(os.totalmem() / 2 ** 30), node: process.version, platform: `${process.platform}-${process.arch}` },
    device: opts.device,
    backends: listBundledBackends(),
    pipelines,
    unsupported,
    regions,
    codecs,
    websocket: ws,
  };
  if (opts.json) console.log(JSON.stringify(report, null, 2));
  else log(`\n${JSON.stringify(report)}`);
}
