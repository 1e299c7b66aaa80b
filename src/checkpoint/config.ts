/**
 * Config checking for the builders: every key of a checkpoint's config.json is either read,
 * informational, or refused by name. Unknown keys are refused too, so a model class from a newer
 * library version never builds into a silently different network.
 */
import { DepthcastError } from '../errors.ts';

/** A rule returns null when the value is supported, else why not. 'info' keys do not change the network. */
export type Rule = 'info' | ((value: unknown) => string | null);

/** Keys the libraries write as bookkeeping in every config. */
const BOOKKEEPING = ['_class_name', '_diffusers_version', '_name_or_path', '_commit_hash', '_use_default_values', 'architectures', 'torch_dtype', 'transformers_version'];

export function checkConfig(what: string, config: Record<string, unknown>, rules: Record<string, Rule>): void {
  const problems: string[] = [];
  for (const [key, value] of Object.entries(config)) {
    if (BOOKKEEPING.includes(key)) continue;
    const rule = rules[key];
    if (!rule) {
      problems.push(`${what}: config key "${key}" is not supported by the builder`);
      continue;
    }
    if (rule === 'info') continue;
    const why = rule(value);
    if (why) problems.push(`${what}: config key "${key}" = ${JSON.stringify(value)} is not supported (${why})`);
  }
  if (problems.length) {
    throw new DepthcastError('BAD_MODEL', `cannot build ${what} from this checkpoint:\n  - ${problems.join('\n  - ')}\nUse tools/export_onnx.py for architectures the builder refuses.`, {
      problems,
    });
  }
}

export const is = {
  value:
    (...allowed: unknown[]): Rule =>
    (v) =>
      allowed.some((a) => JSON.stringify(a) === JSON.stringify(v)) ? null : `supported: ${allowed.map((a) => JSON.stringify(a)).join(' or ')}`,
  bool: ((v) => (typeof v === 'boolean' ? null : 'must be true or false')) as Rule,
  number: ((v) => (typeof v === 'number' && Number.isFinite(v) ? null : 'must be a number')) as Rule,
  positiveNumber: ((v) => (typeof v === 'number' && v > 0 && Number.isFinite(v) ? null : 'must be a positive number')) as Rule,
  count: ((v) => (Number.isInteger(v) && (v as number) > 0 ? null : 'must be a positive integer')) as Rule,
  oddCount: ((v) => (Number.isInteger(v) && (v as number) > 0 && (v as number) % 2 === 1 ? null : 'must be an odd positive integer')) as Rule,
  counts: ((v) => (Array.isArray(v) && v.length > 0 && v.every((x) => Number.isInteger(x) && x > 0) ? null : 'must be a list of positive integers')) as Rule,
  countOrCounts: ((v) =>
    (Number.isInteger(v) && (v as number) > 0) || (Array.isArray(v) && v.length > 0 && v.every((x) => Number.isInteger(x) && x > 0))
      ? null
      : 'must be a positive integer or a list of them') as Rule,
  listOf:
    (...allowed: string[]): Rule =>
    (v) =>
      Array.isArray(v) && v.length > 0 && v.every((x) => allowed.includes(x as string)) ? null : `each entry must be one of ${allowed.join(', ')}`,
};

/** An int-or-list config value as one entry per block. */
export function perBlock(value: unknown, blocks: number, key: string, what: string): number[] {
  const list = Array.isArray(value) ? (value as number[]) : new Array(blocks).fill(value as number);
  if (list.length !== blocks) throw new DepthcastError('BAD_MODEL', `${what}: config key "${key}" has ${list.length} entries for ${blocks} blocks`);
  return list;
}

export function num(config: Record<string, unknown>, key: string, fallback: number): number {
  const v = config[key];
  return typeof v === 'number' ? v : fallback;
}
