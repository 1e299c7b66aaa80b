/**
 * Published ControlNet ONNX exports name their residuals differently
 * (down_block_res_sample_3, down_block_3, down_block_res_samples.3, mid_block_res_sample, mid_block, ...).
 * Residuals are matched by role and index, never by position; depthcast.json can name them explicitly.
 */
import { DepthcastError } from '../errors.ts';

type Role = { kind: 'down'; index: number } | { kind: 'mid' };

function roleOf(name: string): Role | null {
  const lower = name.toLowerCase();
  if (lower.includes('mid')) return { kind: 'mid' };
  if (lower.includes('down')) {
    const m = /(\d+)(?!.*\d)/.exec(lower);
    if (m) return { kind: 'down', index: Number(m[1]) };
  }
  return null;
}

const key = (r: Role) => (r.kind === 'mid' ? 'mid' : `down${r.index}`);

/** Pairs each residual output of the ControlNet with the UNet input it feeds: [controlnetOutput, unetInput][]. */
export function mapControlnetResiduals(
  controlnetOutputs: readonly string[],
  unetInputs: readonly string[],
  explicit?: Record<string, string>,
): [string, string][] {
  const unetResiduals = unetInputs.filter((n) => roleOf(n) && /resid|down_block|mid_block/i.test(n));
  if (explicit && Object.keys(explicit).length) {
    const pairs = Object.entries(explicit);
    const problems: string[] = [];
    for (const [out, inp] of pairs) {
      if (!controlnetOutputs.includes(out)) problems.push(`controlnet has no output "${out}"`);
      if (!unetInputs.includes(inp)) problems.push(`unet has no input "${inp}"`);
    }
    const unmapped = unetResiduals.filter((n) => !pairs.some(([, i]) => i === n));
    if (unmapped.length) problems.push(`unet residual inputs not mapped: ${unmapped.join(', ')}`);
    if (problems.length) throw new DepthcastError('BAD_MODEL', `depthcast.json controlnet.outputs: ${problems.join('; ')}`);
    return pairs;
  }
  const byRole = new Map<string, string>();
  for (const out of controlnetOutputs) {
    const r = roleOf(out);
    if (r) byRole.set(key(r), out);
  }
  const pairs: [string, string][] = [];
  const unmatched: string[] = [];
  for (const inp of unetResiduals) {
    const out = byRole.get(key(roleOf(inp)!));
    if (out) pairs.push([out, inp]);
    else unmatched.push(inp);
  }
  if (unmatched.length || pairs.length === 0 || pairs.length !== byRole.size) {
    throw new DepthcastError(
      'BAD_MODEL',
      `cannot match ControlNet outputs [${controlnetOutputs.join(', ')}] to UNet residual inputs [${unetResiduals.join(', ')}]` +
        `${unmatched.length ? ` (no output for ${unmatched.join(', ')})` : ''}. ` +
        'Name them in depthcast.json: {"controlnet": {"outputs": {"<controlnet output>": "<unet input>", ...}}}',
    );
  }
  return pairs;
}
