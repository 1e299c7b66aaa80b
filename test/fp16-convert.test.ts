/**
 * fp16 graphs for GPUs (src/checkpoint/fp16.ts): a model built from the public checkpoints and the
 * conformance export, converted, run a ControlNet case through the real pipeline with float32 I/O;
 * their weights are half the bytes, their graphs keep every node (the patterns GPU providers fuse)
 * with Casts only at the edges, and the image stays close to the float32 model's.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import onnxProto from 'onnx-proto';
import { afterAll, describe, expect, it } from 'vitest';
import { cachedBuild } from '../src/checkpoint/cache.ts';
import { convertFolderToFp16 } from '../src/checkpoint/convert.ts';
import { loadModel } from '../src/models/load.ts';
import { runCase } from '../tools/conformance/run.ts';
import { decodeModel } from '../src/models/onnx-decode.ts';
import { REPO_ROOT, SHARED_CONFORMANCE } from './support/tiny.ts';

const { onnx } = onnxProto;
const scratchDirs: string[] = [];
/** A fresh temporary folder, removed after the tests. */
function scratch(): string {
  const dir = mkdtempSync(join(tmpdir(), 'depthcast-fp16-'));
  scratchDirs.push(dir);
  return dir;
}
afterAll(() => {
  for (const dir of scratchDirs) rmSync(dir, { recursive: true, force: true });
});
const CHECKPOINTS = join(REPO_ROOT, '..', 'shared', 'checkpoints');
const CASE = join(CHECKPOINTS, 'cases', 'ck-cn-pndm');

interface Source {
  caseDir: string;
  fp32Dir: string;
}

async function checkpointSource(): Promise<Source> {
  const spec = JSON.parse(readFileSync(join(CASE, 'case.json'), 'utf8'));
  const { dir } = await cachedBuild({ dir: resolve(CASE, spec.model) }, { dir: resolve(CASE, spec.controlnet) });
  return { caseDir: CASE, fp32Dir: dir };
}

const conformanceSource = async (): Promise<Source> => ({ caseDir: join(SHARED_CONFORMANCE, 'cases', 'cn-dpmpp-2m-karras'), fp32Dir: join(SHARED_CONFORMANCE, 'models', 'controlnet-tiny') });

describe.skipIf(!existsSync(CASE) || !existsSync(SHARED_CONFORMANCE))('models convert --fp16', () => {
  it.each<[string, () => Promise<Source>]>([
    ['a ControlNet model built from the public checkpoints (ck-cn-pndm)', checkpointSource],
    ['the conformance ControlNet export, whose text encoder holds an If subgraph (cn-dpmpp-2m-karras)', conformanceSource],
  ])('%s: fp16 weights and math, float32 I/O, the image close to float32', async (_, source) => {
    const { caseDir, fp32Dir } = await source();
    const fp16Dir = join(scratch(), 'model');
    const reports = await convertFolderToFp16(fp32Dir, fp16Dir);

    for (const [name, r] of Object.entries(reports)) {
      // Every weight but Resize scales is now half the bytes.
      expect(r.converted, name).toBeGreaterThan(0);
      expect(r.weightBytesAfter, name).toBeLessThan(r.weightBytesBefore * 0.51);
      const rel = `${name}/model.onnx`;
      const model = decodeModel(readFileSync(join(fp16Dir, rel)));
      const floatBytes = (type: number) => model.graph!.initializer!.filter((t) => t.dataType === type).reduce((a, t) => a + (t.rawData?.length ?? 0), 0);
      expect(floatBytes(onnx.TensorProto.DataType.FLOAT16), name).toBe(r.weightBytesAfter - floatBytes(onnx.TensorProto.DataType.FLOAT));
      if (r.weightBytesBefore > 100_000) expect(statSync(join(fp16Dir, rel)).size, name).toBeLessThan(statSync(join(fp32Dir, rel)).size * 0.6);
      // float32 at the edges, and nothing else added: one Cast per float input and output.
      for (const v of [...model.graph!.input!, ...model.graph!.output!]) expect(v.type!.tensorType!.elemType, `${name} ${v.name}`).not.toBe(onnx.TensorProto.DataType.FLOAT16);
      const before = decodeModel(readFileSync(join(fp32Dir, rel))).graph!;
      const edges = [...before.input!, ...before.output!].filter((v) => v.type?.tensorType?.elemType === onnx.TensorProto.DataType.FLOAT).length;
      expect(model.graph!.node!.length, name).toBe(before.node!.length + edges);
      expect(model.graph!.node!.map((n) => n.opType).filter((t) => t !== 'Cast'), name).toEqual(before.node!.map((n) => n.opType).filter((t) => t !== 'Cast'));
    }

    const fp32 = await loadModel(fp32Dir, { device: 'cpu' });
    const fp16 = await loadModel(fp16Dir, { device: 'cpu' });
    try {
      // The composed ControlNet + UNet graph still forms from the converted pair.
      expect(fp16.controlnetNotComposed).toBeUndefined();
      const a = await runCase(caseDir, new Map([[fp32Dir, fp32]]));
      const b = await runCase(caseDir, new Map([[fp32Dir, fp16]]));
      expect(a.passed).toBe(true);
      let maxAbs = 0;
      let sum = 0;
      for (let i = 0; i < a.image.length; i++) {
        const d = Math.abs(a.image[i]! - b.image[i]!);
        maxAbs = Math.max(maxAbs, d);
        sum += d;
      }
      const meanAbs = sum / a.image.length;
      console.log(`fp16 against fp32: max abs ${maxAbs.toExponential(3)}, mean abs ${meanAbs.toExponential(3)}; against the reference: ${b.maxAbs.toExponential(3)}`);
      // fp16 rounds every weight and stored activation to 11 significant bits (relative 4.9e-4);
      // over 12 steps of two networks that grows to a few 1e-3 on [0,1] pixels: within half an
      // 8-bit level (0.0039) on average and two levels at worst.
      expect(meanAbs).toBeLessThan(2e-3);
      expect(maxAbs).toBeLessThan(8e-3);
      expect(maxAbs).toBeGreaterThan(0);
    } finally {
      await Promise.all([fp32.release(), fp16.release()]);
    }
  });

  it('the CLI asks which conversion, and converts with --fp16', () => {
    const cli = (args: string[]) => spawnSync(process.execPath, [join(REPO_ROOT, 'bin/depthcast.js'), 'models', 'convert', ...args], { encoding: 'utf8', timeout: 120_000 });
    const out = join(scratch(), 'model');
    const src = join(SHARED_CONFORMANCE, 'models', 'controlnet-tiny');
    const refused = cli([src, out]);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/BAD_REQUEST: models convert: say which conversion: --fp16/);
    expect(existsSync(out)).toBe(false);
    const done = cli([src, out, '--fp16']);
    expect(done.status, done.stderr).toBe(0);
    expect(done.stdout).toMatch(/unet: \d+ weights to fp16/);
    expect(existsSync(join(out, 'tokenizer', 'vocab.json'))).toBe(true);
  });

  it('refuses a folder that is not a model, and an output folder that is not empty', async () => {
    await expect(convertFolderToFp16(tmpdir(), join(tmpdir(), 'x'))).rejects.toThrow(/not a model folder/);
    const out = scratch();
    writeFileSync(join(out, 'keep'), '');
    await expect(convertFolderToFp16(join(SHARED_CONFORMANCE, 'models', 'controlnet-tiny'), out)).rejects.toThrow(/not empty/);
  });
});
