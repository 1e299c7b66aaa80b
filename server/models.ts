/**
 * The service's view of the model catalog: name resolution cached for a moment (so a stream of
 * frames does not rescan the models folder each time) and ModelInfo listings for hello and
 * GET /v1/models.
 */
import type { CatalogEntry, ModelCatalog } from '../src/engine/catalog.ts';
import type { Engine } from '../src/engine/engine.ts';
import type { ModelInfo } from '../src/protocol/schemas.ts';

export class ServiceModels {
  private readonly cache = new Map<string, { entry: CatalogEntry; at: number }>();

  constructor(readonly catalog: ModelCatalog, private readonly engine: Pick<Engine, 'loaded'>, private readonly cacheMs = 2000) {}

  /** The named (or default) model; throws MODEL_NOT_FOUND with how to get one. Successes are cached briefly. */
  resolve(name?: string): CatalogEntry {
    const key = name ?? '';
    const hit = this.cache.get(key);
    const now = Date.now();
    if (hit && now - hit.at < this.cacheMs) return hit.entry;
    const entry = this.catalog.resolve(name);
    this.cache.set(key, { entry, at: now });
    return entry;
  }

  list(): ModelInfo[] {
    const entries = this.catalog.list();
    let defaultName: string | undefined;
    try {
      defaultName = entries.length ? this.catalog.resolve().name : undefined;
    } catch {
      defaultName = undefined;
    }
    const loaded = this.engine.loaded;
    return entries.map((e) => {
      const { from: _from, ...defaults } = e.defaults;
      const info: ModelInfo = { name: e.name, family: e.family, loaded: loaded?.name === e.name, defaults };
      if (e.tiny) info.tiny = true;
      if (loaded?.name === e.name && (loaded.dtype === 'fp32' || loaded.dtype === 'fp16')) info.dtype = loaded.dtype;
      if (e.name === defaultName) info.default = true;
      return info;
    });
  }
}
