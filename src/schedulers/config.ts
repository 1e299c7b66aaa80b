/**
 * Reading a diffusers scheduler config (scheduler_config.json) the way `from_config` does, with
 * every value validated; what cannot be honoured is refused with UNSUPPORTED_SCHEDULER.
 */
import { DepthcastError } from '../errors.ts';

export function refuse(className: string, message: string): never {
  throw new DepthcastError('UNSUPPORTED_SCHEDULER', `${className}: ${message}`);
}

/** Parses a config number; JSON cannot carry non-finite values, so "Infinity", "-Infinity" and "NaN" arrive as strings. */
export function configNumber(value: unknown): number | undefined {
  if (typeof value === 'number') return value;
  if (typeof value !== 'string') return undefined;
  const text = value.trim();
  if (/^[+]?(inf|infinity)$/i.test(text)) return Infinity;
  if (/^-(inf|infinity)$/i.test(text)) return -Infinity;
  if (/^nan$/i.test(text)) return NaN;
  if (text === '') return undefined;
  const parsed = Number(text);
  return Number.isNaN(parsed) ? undefined : parsed;
}

const show = (value: unknown): string => (typeof value === 'string' ? `"${value}"` : JSON.stringify(value));

/**
 * A scheduler config resolved the way diffusers' `from_config` does it: keys listed in
 * `_use_default_values` are dropped, keys this class does not take are ignored, missing keys take
 * the class defaults. Every accessor validates and refuses with UNSUPPORTED_SCHEDULER.
 */
export class SchedulerSettings {
  private readonly values: Record<string, unknown>;
  /** Every non-private key of the given config, including ones this class does not take (diffusers keeps them as hidden config). */
  private readonly extra: Record<string, unknown>;

  constructor(
    readonly className: string,
    config: Readonly<Record<string, unknown>>,
    defaults: Readonly<Record<string, unknown>>,
  ) {
    const usedDefaults = Array.isArray(config._use_default_values) ? new Set(config._use_default_values) : new Set();
    this.values = { ...defaults };
    this.extra = {};
    for (const [key, value] of Object.entries(config)) {
      if (key.startsWith('_') || usedDefaults.has(key) || value === undefined) continue;
      this.extra[key] = value;
      if (Object.hasOwn(defaults, key)) this.values[key] = value;
    }
  }

  private raw(key: string): unknown {
    if (!Object.hasOwn(this.values, key)) throw new Error(`${this.className}: no default registered for config key ${key}`);
    return this.values[key];
  }

  number(key: string): number {
    const value = configNumber(this.raw(key));
    if (value === undefined) refuse(this.className, `config ${key} must be a number, got ${show(this.raw(key))}`);
    return value;
  }

  finite(key: string, check: (v: number) => boolean = () => true, what = 'a finite number'): number {
    const value = this.number(key);
    if (!Number.isFinite(value) || !check(value)) refuse(this.className, `config ${key} must be ${what}, got ${show(this.raw(key))}`);
    return value;
  }

  integer(key: string, min: number): number {
    return this.finite(key, (v) => Number.isInteger(v) && v >= min, `an integer >= ${min}`);
  }

  optionalNumber(key: string): number | null {
    const raw = this.raw(key);
    return raw === null || raw === undefined ? null : this.number(key);
  }

  /** Python truthiness for the values a JSON config can hold; null means False as in diffusers. */
  flag(key: string): boolean {
    const raw = this.raw(key);
    if (raw === null || raw === undefined || raw === false || raw === 0) return false;
    if (raw === true || raw === 1) return true;
    return refuse(this.className, `config ${key} must be true or false, got ${show(raw)}`);
  }

  choice<T extends string>(key: string, supported: readonly T[]): T {
    const raw = this.raw(key);
    if (typeof raw === 'string' && (supported as readonly string[]).includes(raw)) return raw as T;
    return refuse(this.className, `${key} ${show(raw)} is not supported; supported: ${supported.join(', ')}`);
  }

  optionalString(key: string): string | null {
    const raw = this.raw(key);
    if (raw === null || raw === undefined) return null;
    if (typeof raw !== 'string') refuse(this.className, `config ${key} must be a string or null, got ${show(raw)}`);
    return raw;
  }

  numberList(key: string): number[] | null {
    const raw = this.raw(key);
    if (raw === null || raw === undefined) return null;
    const list = Array.isArray(raw) ? raw.map(configNumber) : undefined;
    if (!list || list.some((v) => v === undefined || !Number.isFinite(v))) {
      refuse(this.className, `config ${key} must be null or a list of finite numbers`);
    }
    return list as number[];
  }

  /** A key this class does not take but diffusers still exposes on `self.config` (e.g. sigma_min for DPM-Solver's Karras sigmas). */
  hiddenNumber(key: string): number | null {
    const raw = this.extra[key];
    if (raw === null || raw === undefined) return null;
    const value = configNumber(raw);
    if (value === undefined) refuse(this.className, `config ${key} must be a number or null, got ${show(raw)}`);
    return value;
  }
}
