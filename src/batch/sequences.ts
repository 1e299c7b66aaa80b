/**
 * Frame sequences of a batch (docs/batch.md, "Animation without flicker"): the outputs of a
 * `.blend` scene with `params.consistency` that share camera, variation and seed, in frame order.
 * The runner runs each sequence's frames one after another on one stream, each frame carrying
 * its motion to the frame before; this module groups them, chains their request hashes (a
 * consistent frame depends on the one before) and writes the score into the batch report.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { renderScorePlot } from '../motion/plot.ts';
import type { PairScore, SequenceScore } from '../motion/sequence.ts';
import type { ConsistencyReport } from '../protocol/schemas.ts';
import { sha256 } from './inputs.ts';
import type { BatchOutput } from './manifest.ts';

export interface BatchSequence {
  /** "<scene>/<camera>_<variation>_s<seed>": the output ids without the frame. */
  id: string;
  consistency: 'per-frame' | 'consistent';
  /** In frame order. */
  outputs: BatchOutput[];
  /** The wire stream its frames run on. */
  stream: string;
}

/** Sequences of a batch's outputs, and which sequence (and place in it) each member has. */
export function sequencesOf(outputs: readonly BatchOutput[]): { sequences: BatchSequence[]; member: Map<string, { sequence: BatchSequence; index: number }> } {
  const groups = new Map<string, BatchSequence>();
  for (const o of outputs) {
    const d = o.depth;
    if (o.params.consistency === undefined || d.source !== 'blend' || d.frame === undefined) continue;
    const camera = o.view?.replace(/(^|-)f-?\d+$/, '');
    const name = [camera || undefined, o.variation, `s${o.seed}`].filter(Boolean).join('_');
    const id = `${o.scene}/${name}`;
    let seq = groups.get(id);
    if (!seq) {
      seq = { id, consistency: o.params.consistency, outputs: [], stream: `seq-${sha256(id).slice(0, 24)}` };
      groups.set(id, seq);
    }
    seq.outputs.push(o);
  }
  const member = new Map<string, { sequence: BatchSequence; index: number }>();
  const sequences = [...groups.values()].filter((s) => s.outputs.length > 1);
  for (const s of sequences) {
    s.outputs.sort((a, b) => (a.depth as { frame: number }).frame - (b.depth as { frame: number }).frame);
    s.outputs.forEach((o, index) => member.set(o.id, { sequence: s, index }));
  }
  return { sequences, member };
}

/** A frame pair of a sequence as the batch report lists it. */
export interface ReportedPair extends PairScore {
  output: string;
  previousFrame: number;
}

export interface SequenceReport {
  id: string;
  consistency: 'per-frame' | 'consistent';
  frames: number[];
  /** Pairs with a score (both frames generated in one run of the worker that scored them). */
  pairs: ReportedPair[];
  meanError: number | null;
  worst: ReportedPair | null;
  meanValidFraction: number | null;
  /** Frames that asked for the consistent mode and ran per frame, with the reason. */
  fallbacks: { output: string; frame: number; reason: string }[];
  /** Outputs without a score, and why (failed, or no motion). */
  unscored: { output: string; frame: number; reason: string }[];
  /** The plot of warp error over frames, relative to the out folder. */
  plot: string | null;
}

/**
 * Builds one sequence's report from what each output's run reported (from this run, or its
 * sidecar when it was done earlier), and writes its plot PNG beside the outputs.
 */
export async function reportSequence(s: BatchSequence, outDir: string, reported: Map<string, ConsistencyReport | undefined>, failed: Set<string>): Promise<SequenceReport> {
  const frameOf = (o: BatchOutput) => (o.depth as { frame: number }).frame;
  const pairs: ReportedPair[] = [];
  const fallbacks: SequenceReport['fallbacks'] = [];
  const unscored: SequenceReport['unscored'] = [];
  s.outputs.forEach((o, i) => {
    const r = reported.get(o.id);
    if (r?.fallback && i > 0) fallbacks.push({ output: o.id, frame: frameOf(o), reason: r.fallback });
    if (i === 0) return;
    if (r?.score) pairs.push({ output: o.id, frame: frameOf(o), previousFrame: frameOf(s.outputs[i - 1]!), ...r.score });
    else unscored.push({ output: o.id, frame: frameOf(o), reason: failed.has(o.id) ? 'the output failed' : r?.fallback ?? 'no score: the frame before was not generated in the same run' });
  });
  const meanError = pairs.length ? pairs.reduce((t, p) => t + p.error, 0) / pairs.length : null;
  const worst = pairs.reduce<ReportedPair | null>((w, p) => (!w || p.error > w.error ? p : w), null);
  let plot: string | null = null;
  if (pairs.length) {
    plot = `${s.id}.warp-error.png`;
    const score: SequenceScore = { pairs, meanError: meanError!, worst: worst ?? undefined, fidelity: [], meanFidelity: 0 };
    await writeFile(join(outDir, plot), await renderScorePlot([{ label: s.consistency, score }], `${s.id}: warp error per frame pair`));
  }
  return {
    id: s.id, consistency: s.consistency, frames: s.outputs.map(frameOf), pairs, meanError, worst,
    meanValidFraction: pairs.length ? pairs.reduce((t, p) => t + p.validFraction, 0) / pairs.length : null,
    fallbacks, unscored, plot,
  };
}
