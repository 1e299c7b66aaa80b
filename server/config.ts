/**
 * `depthcast serve` settings: flags > config file (JSON or YAML) > environment
 * (DEPTHCAST_HOST, _PORT, _MODELS_DIR, _MODEL, _DEVICE, _TOKEN, _ALLOWED_ORIGINS, _CONFIG) > defaults.
 * Default models folder: $DEPTHCAST_HOME/models, else ~/.cache/depthcast/models.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { DepthcastError } from '../src/errors.ts';
import { depthcastHome, modelsRoot } from '../src/hub/paths.ts';
import { DeviceName, describeZodError, type Limits } from '../src/protocol/schemas.ts';
import type { Device } from '../src/runtime/ort.ts';

export const DEFAULT_HOST = '127.0.0.1';
export const DEFAULT_PORT = 7788;

export interface ServeFlags {
  host?: string;
  port?: number;
  modelsDir?: string;
  model?: string;
  device?: string;
  token?: string;
  allowOrigin?: string[];
  config?: string;
}

export interface ServeConfig {
  host: string;
  port: number;
  modelsDir: string;
  model?: string;
  device: Device;
  token?: string;
  allowedOrigins: string[];
  limits: Partial<Limits>;
}

const Port = z.number().int().min(0).max(65535);
const PositiveInt = z.number().int().positive();

const ConfigFile = z.object({
  host: z.string().min(1).optional(),
  port: Port.optional(),
  modelsDir: z.string().min(1).optional(),
  model: z.string().min(1).optional(),
  device: DeviceName.optional(),
  token: z.string().min(1).optional(),
  allowedOrigins: z.array(z.string()).optional(),
  limits: z.object({
    maxMessageBytes: PositiveInt, maxDepthPixels: PositiveInt, maxOutputPixels: PositiveInt, maxGenerationPixels: PositiveInt, maxPromptChars: PositiveInt,
    maxSteps: PositiveInt, maxQueuedJobs: PositiveInt, maxRegions: PositiveInt,
  }).partial().strict().optional(),
}).strict();
type ConfigFile = z.infer<typeof ConfigFile>;

function readConfigFile(path: string): ConfigFile {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new DepthcastError('BAD_REQUEST', `cannot read config file ${path}: ${(err as Error).message}`);
  }
  let data: unknown;
  try {
    data = /\.json$/i.test(path) ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    throw new DepthcastError('BAD_REQUEST', `config file ${path} is not valid ${/\.json$/i.test(path) ? 'JSON' : 'YAML'}: ${(err as Error).message}`);
  }
  const parsed = ConfigFile.safeParse(data ?? {});
  if (!parsed.success) throw new DepthcastError('BAD_REQUEST', `config file ${path}: ${describeZodError(parsed.error)}`);
  const config = parsed.data;
  // Paths in a config file are relative to the file.
  if (config.modelsDir) config.modelsDir = resolve(dirname(path), config.modelsDir);
  if (config.model && /[/\\]/.test(config.model)) config.model = resolve(dirname(path), config.model);
  return config;
}

function fromEnv(env: NodeJS.ProcessEnv): ConfigFile {
  const out: ConfigFile = {};
  const get = (name: string) => env[`DEPTHCAST_${name}`]?.trim() || undefined;
  const host = get('HOST');
  if (host) out.host = host;
  const port = get('PORT');
  if (port !== undefined) {
    const n = Port.safeParse(Number(port));
    if (!n.success) throw new DepthcastError('BAD_REQUEST', `DEPTHCAST_PORT must be a port number 0-65535, got "${port}"`);
    out.port = n.data;
  }
  const modelsDir = get('MODELS_DIR');
  if (modelsDir) out.modelsDir = resolve(modelsDir);
  const model = get('MODEL');
  if (model) out.model = model;
  const device = get('DEVICE');
  if (device) {
    const d = DeviceName.safeParse(device);
    if (!d.success) throw new DepthcastError('UNSUPPORTED_DEVICE', `DEPTHCAST_DEVICE must be one of ${DeviceName.options.join(', ')}, got "${device}"`);
    out.device = d.data;
  }
  const token = get('TOKEN');
  // Empty DEPTHCAST_ variables count as unset, like the others (scripts clear them that way).
  if (token) out.token = token;
  const origins = get('ALLOWED_ORIGINS');
  if (origins) out.allowedOrigins = origins.split(',').map((o) => o.trim()).filter(Boolean);
  return out;
}

function fromFlags(flags: ServeFlags): ConfigFile {
  const out: ConfigFile = {};
  if (flags.host !== undefined) out.host = flags.host;
  if (flags.port !== undefined) {
    const n = Port.safeParse(flags.port);
    if (!n.success) throw new DepthcastError('BAD_REQUEST', `--port must be 0-65535, got ${flags.port}`);
    out.port = n.data;
  }
  if (flags.modelsDir !== undefined) out.modelsDir = resolve(flags.modelsDir);
  if (flags.model !== undefined) out.model = flags.model;
  if (flags.device !== undefined) {
    const d = DeviceName.safeParse(flags.device);
    if (!d.success) throw new DepthcastError('UNSUPPORTED_DEVICE', `--device must be one of ${DeviceName.options.join(', ')}`);
    out.device = d.data;
  }
  if (flags.token !== undefined) {
    // An empty token must not quietly mean "no authentication".
    if (!flags.token.trim()) throw new DepthcastError('BAD_REQUEST', '--token must not be empty; pass a secret, or leave --token out to run without one on loopback');
    out.token = flags.token;
  }
  if (flags.allowOrigin?.length) out.allowedOrigins = flags.allowOrigin;
  return out;
}

/** Merges flags, the config file (flags.config or DEPTHCAST_CONFIG), environment and defaults. */
export function loadServeConfig(flags: ServeFlags = {}, env: NodeJS.ProcessEnv = process.env): ServeConfig {
  const configPath = flags.config ?? (env.DEPTHCAST_CONFIG?.trim() || undefined);
  const layers = [fromFlags(flags), configPath ? readConfigFile(resolve(configPath)) : {}, fromEnv(env)];
  const pick = <K extends keyof ConfigFile>(key: K): ConfigFile[K] => layers.find((l) => l[key] !== undefined)?.[key];
  const config: ServeConfig = {
    host: pick('host') ?? DEFAULT_HOST,
    port: pick('port') ?? DEFAULT_PORT,
    modelsDir: pick('modelsDir') ?? modelsRoot(depthcastHome(env)),
    device: pick('device') ?? 'auto',
    allowedOrigins: pick('allowedOrigins') ?? [],
    limits: pick('limits') ?? {},
  };
  const model = pick('model');
  if (model) config.model = model;
  const token = pick('token');
  if (token) config.token = token;
  return config;
}
