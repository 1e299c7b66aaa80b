/**
 * The `depthcast` command line. Each command loads its modules only when it runs, so
 * `depthcast conformance` never pays for the server and `serve` never for the hub client.
 */
import { Command, Option } from 'commander';
import { DEVICE_NAMES, SCHEDULER_NAMES } from '../protocol/schemas.ts';
import { DepthcastError, toDepthcastError } from '../errors.ts';
import { VERSION } from '../version.ts';

function intArg(name: string) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n)) throw new DepthcastError('BAD_REQUEST', `--${name} must be an integer, got "${v}"`);
    return n;
  };
}

function floatArg(name: string) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isFinite(n)) throw new DepthcastError('BAD_REQUEST', `--${name} must be a number, got "${v}"`);
    return n;
  };
}

export function buildProgram(): Command {
  const program = new Command('depthcast')
    .description('Depth-conditioned Stable Diffusion for 3D scenes')
    .version(VERSION)
    .showHelpAfterError();

  program
    .command('serve')
    .description('run the local service (HTTP + WebSocket + preview page)')
    .option('--host <host>', 'address to bind (default 127.0.0.1)')
    .option('--port <port>', 'port (default 7788; 0 = any free port)', intArg('port'))
    .option('--models-dir <dir>', 'folder of installed models')
    .option('--model <name|path>', 'default model: a name in the models dir, or a model folder')
    .addOption(new Option('--device <device>', 'execution provider').choices([...DEVICE_NAMES]))
    .option('--token <token>', 'require Authorization: Bearer <token> (required beyond loopback)')
    .option('--allow-origin <origin...>', 'extra browser origins allowed to use the service')
    .option('--config <file>', 'config file (JSON or YAML); flags win over it, it wins over environment variables')
    .action(async (opts) => {
      const { serveCommand } = await import('../../server/cli.ts');
      await serveCommand(opts);
    });

  program
    .command('generate')
    .description('generate one image from a depth file')
    .requiredOption('--model <name|path>', 'a model name in the models folder, or a model folder (a path: ./name, /abs/name)')
    .option('--models-dir <dir>', 'folder of installed models (default $DEPTHCAST_MODELS_DIR, else ~/.cache/depthcast/models)')
    .requiredOption('--depth <file>', 'depth file: .npy (float32), 16-bit .png, or .exr')
    .requiredOption('--prompt <text>', 'prompt')
    .option('--negative <text>', 'negative prompt', '')
    .option('--init <image>', 'init image (PNG/JPEG) for img2img')
    .option('--strength <s>', 'img2img strength (0,1]', floatArg('strength'))
    .option('--steps <n>', 'denoising steps', intArg('steps'))
    .option('--guidance <g>', 'classifier-free guidance scale', floatArg('guidance'))
    .addOption(new Option('--scheduler <name>', 'scheduler').choices([...SCHEDULER_NAMES]))
    .option('--seed <n>', 'seed (random when omitted)', intArg('seed'))
    .option('--width <w>', 'output width (default: the depth\'s; one side alone keeps its aspect)', intArg('width'))
    .option('--height <h>', 'output height', intArg('height'))
    .addOption(new Option('--sizing <mode>', 'native: generate at the model\'s size with the output\'s aspect, then upscale; exact: generate at --width×--height (multiples of 8, ≤ 1024² pixels)').choices(['native', 'exact']).default('native'))
    .option('--controlnet-scale <s>', 'ControlNet conditioning scale', floatArg('controlnet-scale'))
    .addOption(new Option('--depth-kind <kind>', 'what the depth file holds').choices(['zdepth', 'disparity', 'normalized']).default('zdepth'))
    .option('--near <z>', 'near clip (zdepth; default: the smallest depth of a float file, the depth-range chunk of a 16-bit PNG)', floatArg('near'))
    .option('--far <z>', 'far clip (zdepth; default: the largest finite depth of a float file, the depth-range chunk of a 16-bit PNG)', floatArg('far'))
    .addOption(new Option('--depth-range <r>', 'auto: per-image min/max (default); fixed: map near..far, steady across frames').choices(['fixed', 'auto']).default('auto'))
    .addOption(new Option('--device <device>', 'execution provider').choices([...DEVICE_NAMES]).default('auto'))
    .requiredOption('--out <file>', 'output PNG')
    .action(async (opts) => {
      const { generateCommand } = await import('./generate.ts');
      await generateCommand(opts);
    });

  program
    .command('conformance')
    .description('run reference conformance cases (<dir>/cases/*) and tokenizer vectors (<dir>/tokenizer.json)')
    .argument('<dir>', 'folder holding cases/ and tokenizer.json')
    .action(async (dir: string) => {
      const { runConformance } = await import('../../tools/conformance/run.ts');
      const { failed } = await runConformance(dir);
      process.exitCode = failed ? 1 : 0;
    });

  const models = program.command('models').description('install, check and remove models');
  models
    .command('create-tiny')
    .description('write a tiny random-weight model (offline demo and tests; its images are abstract)')
    .argument('<dir>', 'output folder')
    .addOption(new Option('--family <family>', 'pipeline family').choices(['depth2img', 'controlnet']).default('depth2img'))
    .addOption(new Option('--dtype <dtype>', 'I/O precision').choices(['fp32', 'fp16']).default('fp32'))
    .option('--hidden-size <n>', 'text hidden size (768 = Stable Diffusion 1.5 tensor sizes, for benchmarks)', intArg('hidden-size'))
    .option('--tiny-decoder', 'also write a tiny preview decoder')
    .action(async (dir: string, opts) => {
      const { createTinyModel, TINY_MODEL_NOTE } = await import('../tiny/build-tiny.ts');
      await createTinyModel(dir, { family: opts.family, dtype: opts.dtype, hiddenSize: opts.hiddenSize, tinyDecoder: !!opts.tinyDecoder });
      console.log(`wrote ${opts.family} ${opts.dtype} tiny model to ${dir}\n${TINY_MODEL_NOTE}`);
    });
  models
    .command('list')
    .description('list installed models')
    .option('--json', 'print JSON')
    .action(async (opts) => (await import('../hub/commands.ts')).modelsList(opts, process.stdout));
  models
    .command('pull')
    .description('download a model from a Hugging Face-style hub (or a registry name)')
    .argument('<id>', 'registry name or hub repo id')
    .option('--revision <rev>', 'revision (default: the registry pin, else main)')
    .option('--name <name>', 'install under this name')
    .option('--subfolder <dir>', 'take the layout from this folder of the repo')
    .option('--controlnet <repo>', 'assemble: add this ControlNet repo to the base model')
    .option('--controlnet-revision <rev>', 'revision of the ControlNet repo')
    .option('--controlnet-subfolder <dir>', 'folder of the ControlNet repo holding its ONNX')
    .option('--controlnet-file <path>', 'the ControlNet ONNX file inside its repo')
    .option('--base <name>', 'assemble onto an installed base model instead of downloading one')
    .option('--force', 'replace an installed model of the same name')
    .option('--keep-downloads', 'keep the download cache after installing')
    .option('--hub <url>', 'hub base URL (default https://huggingface.co, or $HF_ENDPOINT)')
    .option('--fp16-weights', 'diffusers checkpoints: download and build from the .fp16.safetensors variants (half the download)')
    .action(async (id: string, opts) => (await import('../hub/commands.ts')).modelsPull({ id, ...opts }, process.stdout));
  models
    .command('import')
    .description('build a diffusers checkpoint folder (safetensors) into an installed ONNX model')
    .argument('<dir>', 'pipeline checkpoint folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/)')
    .option('--controlnet <dir>', 'ControlNet checkpoint folder (config.json + diffusion_pytorch_model.safetensors)')
    .option('--name <name>', 'install under this name')
    .option('--force', 'replace an installed model of the same name')
    .option('--fp16-weights', 'build from the .fp16.safetensors variants where both exist')
    .action(async (dir: string, opts) => {
      await (await import('../hub/commands.ts')).modelsImport({ dir, ...opts }, process.stdout);
    });
  models
    .command('convert')
    .description('write a copy of a model folder with fp16 weights and math and float32 I/O (for GPUs)')
    .argument('<dir>', 'model folder (installed models live under the models home)')
    .argument('<out>', 'new folder for the converted model')
    .option('--fp16', 'convert to fp16 (the one conversion offered; required)')
    .action(async (dir: string, out: string, opts) => {
      if (!opts.fp16) throw new DepthcastError('BAD_REQUEST', 'models convert: say which conversion: --fp16 (the only one offered)');
      const { convertFolderToFp16 } = await import('../checkpoint/convert.ts');
      await convertFolderToFp16(dir, out, (line) => console.log(line));
      console.log(`wrote ${out}`);
    });
  models
    .command('verify')
    .description('check files, hashes and ONNX I/O of an installed model (or a folder)')
    .argument('<name>', 'model name or folder')
    .option('--no-hashes', 'skip sha256 checks')
    .option('--no-io', 'skip the load and dry-run check')
    .addOption(new Option('--device <device>', 'execution provider of the load and dry-run check').choices([...DEVICE_NAMES]).default('cpu'))
    .option('--json', 'print JSON')
    .action(async (name: string, opts) =>
      (await import('../hub/commands.ts')).modelsVerify({ name, noHashes: opts.hashes === false, noIo: opts.io === false, device: opts.device, json: opts.json }, process.stdout));
  models
    .command('remove')
    .description('remove an installed model')
    .argument('<name>', 'model name')
    .option('--cache', 'also remove its download cache')
    .action(async (name: string, opts) => (await import('../hub/commands.ts')).modelsRemove({ name, cache: opts.cache }, process.stdout));

  program
    .command('batch')
    .description('run a manifest of scenes (JSON or YAML), resumable')
    .argument('<manifest>', 'manifest file')
    .option('--server <url>', 'use a running service (ws://host:port)')
    .option('--in-process', 'run in this process (default when no --server)')
    .option('--token <token>', 'service token')
    .option('--out <dir>', 'output folder (default: beside the manifest, "out/")')
    .option('--concurrency <n>', 'scenes in flight', intArg('concurrency'), 1)
    .option('--retry <n>', 'retries per failed output', intArg('retry'), 0)
    .option('--models-dir <dir>', 'models folder (in-process)')
    .addOption(new Option('--device <device>', 'execution provider (in-process)').choices([...DEVICE_NAMES]).default('auto'))
    .action(async (manifest: string, opts) => {
      const { batchCommand } = await import('../batch/cli.ts');
      await batchCommand(manifest, opts);
    });

  program
    .command('bench')
    .description('measure per-stage times, pipeline overhead, frame latency and event-loop delay')
    .option('--json', 'print JSON only')
    .option('--quick', 'shorter runs (smoke test)')
    .addOption(new Option('--device <device>', 'execution provider').choices([...DEVICE_NAMES]).default('cpu'))
    .addOption(new Option('--sd-unet <architecture>', "time only a UNet of Stable Diffusion's real architecture and size, per step (GBs of memory; seconds per step on a CPU)").choices(['sd15', 'sd2-depth']))
    .addOption(new Option('--unet-dtype <dtype>', 'with --sd-unet: compute type').choices(['fp32', 'fp16']).default('fp32'))
    .option('--unet-runs <n>', 'with --sd-unet: timed runs after a first one', intArg('unet-runs'), 3)
    .option('--controlnet-only', "only the ControlNet pipelines at SD 1.5's residual sizes: composed graph and two sessions, fp32 and fp16")
    .option('--steps <n>', 'denoising steps per image (default 20, --quick 8; fewer for a slow device)', intArg('steps'))
    .option('--repeats <n>', 'timed images per pipeline, after warm-up ones (default 7, --quick 3)', intArg('repeats'))
    .action(async (opts) => {
      const { benchCommand } = await import('../../tools/bench/cli.ts');
      await benchCommand(opts);
    });

  return program;
}

export async function main(argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (err) {
    const e = toDepthcastError(err);
    console.error(`depthcast: error ${e.code}: ${e.message}`);
    process.exitCode = 1;
  }
}
